package moe4j.nn;

import moe4j.ops.Ops;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * A bias-free linear map {@code y = x · Wᵀ} with W stored (out, in), as PyTorch does. Tensor parallelism
 * may keep only a block of W's rows (column-parallel) or columns (row-parallel); the sizes follow W.
 */
public final class Linear extends Module {
    public Linear(int in, int out) {
        if (in <= 0 || out <= 0) throw new IllegalArgumentException("Linear: sizes must be > 0, got in=" + in + ", out=" + out);
        registerParameter("weight", persistentZeros(out, in));
    }

    /** Keeps output features {@code [start, end)} only: W's rows (a column-parallel shard). */
    public void keepOutputs(int start, int end) {
        Tensor w = weight();
        replaceParameter("weight", persistentCopy(w.rows(start, end)));
    }

    /** Keeps input features {@code [start, end)} only: W's columns (a row-parallel shard). */
    public void keepInputs(int start, int end) {
        Tensor w = weight();
        if (start < 0 || end > w.dim(1) || start >= end) {
            throw new IllegalArgumentException("Linear.keepInputs: [" + start + ", " + end + ") outside [0, " + w.dim(1) + ")");
        }
        Tensor kept = persistentZeros(w.dim(0), end - start);
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
        return Ops.matmul(x, false, weight(), true);
    }
}
