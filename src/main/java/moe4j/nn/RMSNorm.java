package moe4j.nn;

import moe4j.ops.Ops;
import moe4j.tensor.Tensor;

/** RMSNorm over the last dimension, {@code x / sqrt(mean(x²) + eps) · weight}; the weight starts at ones. */
public final class RMSNorm extends Module {
    private final int dim;
    private final double eps;

    public RMSNorm(int dim, double eps) {
        if (dim <= 0) throw new IllegalArgumentException("RMSNorm: dim must be > 0, got " + dim);
        if (!(eps > 0)) throw new IllegalArgumentException("RMSNorm: eps must be > 0, got " + eps);
        this.dim = dim;
        this.eps = eps;
        registerParameter("weight", persistentZeros(dim)).fill(1f);
    }

    public Tensor weight() {
        return parameter("weight");
    }

    public int dim() {
        return dim;
    }

    /** {@code x} (..., dim) → the same shape. */
    public Tensor forward(Tensor x) {
        return Ops.rmsNorm(x, weight(), eps);
    }
}
