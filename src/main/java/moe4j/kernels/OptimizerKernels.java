package moe4j.kernels;

import moe4j.tensor.Tensor;

/** Parameter updates, in place on the parameter and its optimizer state. */
public interface OptimizerKernels {
    /**
     * One AdamW step on p with gradient {@code g = gradScale·grad} (the clipping factor, applied here so
     * that clipping costs no pass of its own) and moments m, v: {@code m ← β1·m + (1−β1)·g},
     * {@code v ← β2·v + (1−β2)·g²}, {@code p ← p − lr·((m/c1) / (√(v/c2) + ε) + decay·p)}, with the bias
     * corrections c1 = 1 − β1^t and c2 = 1 − β2^t. {@code grad} itself is left as it is.
     */
    void adamW(Tensor p, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps,
               float decay, float c1, float c2, float gradScale);
}
