package moe4j.nn;

import moe4j.ops.Ops;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * A linear map {@code y = x · Wᵀ (+ b)} with W stored (out, in), as PyTorch does; bias-free unless asked
 * for (some attention projections, e.g. Qwen2's q, k, v, carry one).
 */
public final class Linear extends Module {
    private final int in;
    private final int out;

    public Linear(int in, int out) {
        this(in, out, false);
    }

    /** A linear map with a bias {@code bias (out)}, starting at zero, when {@code withBias}. */
    public Linear(int in, int out, boolean withBias) {
        if (in <= 0 || out <= 0) throw new IllegalArgumentException("Linear: sizes must be > 0, got in=" + in + ", out=" + out);
        this.in = in;
        this.out = out;
        registerParameter("weight", persistentZeros(out, in));
        if (withBias) registerParameter("bias", persistentZeros(out));
    }

    /** The bias (out), or null for a bias-free map. */
    public Tensor bias() {
        return parameter("bias");
    }

    /** Normal(0, std²) initialisation from {@code rng}, row by row of the (out, in) weight. */
    public Linear init(Rng rng, double std) {
        Tensor w = weight();
        for (long i = 0; i < w.numel(); i++) w.set(i, (float) (rng.nextGaussian() * std));
        return this;
    }

    public Tensor weight() {
        return parameter("weight");
    }

    public int inFeatures() {
        return in;
    }

    public int outFeatures() {
        return out;
    }

    public Tensor forward(Tensor x) {
        if (x.rank() != 2 || x.dim(1) != in) {
            throw new IllegalArgumentException("Linear(" + in + " -> " + out + "): input must be (T, " + in + "), got " + x.shapeString());
        }
        Tensor y = Ops.matmul(x, false, weight(), true);
        Tensor b = bias();
        if (b == null) return y;
        // y + 1·bᵀ as a rank-1 product: the bias gradient comes out as the column sums of dy
        Tensor ones = Tensor.full(1f, x.dim(0), 1);
        return Ops.add(y, Ops.matmul(ones, false, Ops.reshape(b, 1, out), false));
    }
}
