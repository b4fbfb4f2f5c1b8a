package moe4j.nn;

import moe4j.ops.Ops;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * A linear map {@code y = x · Wᵀ (+ b)} with W stored (out, in), as PyTorch does; bias-free unless asked
 * for (some attention projections, e.g. Qwen2's q, k, v, carry one). Tensor parallelism may keep only a
 * block of W's rows (column-parallel, with the bias's matching block) or columns (row-parallel); the
 * sizes follow W.
 */
public final class Linear extends Module {
    public Linear(int in, int out) {
        this(in, out, false);
    }

    /** A linear map with a bias {@code bias (out)}, starting at zero, when {@code withBias}. */
    public Linear(int in, int out, boolean withBias) {
        if (in <= 0 || out <= 0) throw new IllegalArgumentException("Linear: sizes must be > 0, got in=" + in + ", out=" + out);
        registerParameter("weight", persistentZeros(out, in));
        if (withBias) registerParameter("bias", persistentZeros(out));
    }

    /** The bias (out), or null for a bias-free map. */
    public Tensor bias() {
        return parameter("bias");
    }

    /** Keeps output features {@code [start, end)} only: W's rows (a column-parallel shard). */
    public void keepOutputs(int start, int end) {
        Tensor w = weight();
        replaceParameter("weight", persistentCopy(w.rows(start, end)));
        if (bias() != null) replaceParameter("bias", persistentCopy(bias().rows(start, end)));
    }

    /** Keeps input features {@code [start, end)} only: W's columns (a row-parallel shard). */
    public void keepInputs(int start, int end) {
        if (bias() != null) {
            throw new IllegalArgumentException("Linear.keepInputs: a row-parallel shard of a map with a bias would add the bias once per shard");
        }
        Tensor w = weight();
        if (start < 0 || end > w.dim(1) || start >= end) {
            throw new IllegalArgumentException("Linear.keepInputs: [" + start + ", " + end + ") outside [0, " + w.dim(1) + ")");
        }
        Tensor kept = persistentZerosOn(w.device(), w.dim(0), end - start); // where the whole weight is
        for (int r = 0; r < w.dim(0); r++) {
            kept.rows(r, r + 1).copyFrom(w.view(-1).rows(r * w.dim(1) + start, r * w.dim(1) + end));
        }
        replaceParameter("weight", kept);
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
        return weight().dim(1);
    }

    public int outFeatures() {
        return weight().dim(0);
    }

    public Tensor forward(Tensor x) {
        return wrapped(x, this::project);
    }

    private Tensor project(Tensor x) {
        int in = inFeatures();
        int out = outFeatures();
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
