package moe4j.nn;

import moe4j.ops.Ops;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/** A bias-free linear map {@code y = x · Wᵀ} with W stored (out, in), as PyTorch does. */
public final class Linear extends Module {
    private final int in;
    private final int out;

    public Linear(int in, int out) {
        if (in <= 0 || out <= 0) throw new IllegalArgumentException("Linear: sizes must be > 0, got in=" + in + ", out=" + out);
        this.in = in;
        this.out = out;
        registerParameter("weight", persistentZeros(out, in));
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
        return Ops.matmul(x, false, weight(), true);
    }
}
