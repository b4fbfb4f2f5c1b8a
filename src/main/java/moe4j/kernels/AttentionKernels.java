package moe4j.kernels;

import moe4j.tensor.Tensor;

/**
 * Rotary position embedding and fused causal grouped-query attention on (B, S, H, hd) float32
 * activations (see {@code moe4j.ops.AttentionOps} for the maths).
 */
public interface AttentionKernels {
    /** out = x rotated pairwise by sign·(s·θ^(−2i/hd)) at position s (sign −1: the adjoint). */
    void rope(Tensor x, double theta, float sign, Tensor out);

    /**
     * out = softmax(Q·Kᵀ/√hd + causal mask)·V for q (B, S, Hq, hd), k and v (B, S, Hkv, hd); keeps the
     * probabilities in {@code probs} (B, Hq, S, S) for the backward. Query rows go in blocks of
     * {@code rowBlock}.
     */
    void causalAttention(Tensor q, Tensor k, Tensor v, int rowBlock, Tensor probs, Tensor out);

    /** Gradients of {@link #causalAttention}; gq, gk, gv zero on entry. */
    void causalAttentionBackward(Tensor gOut, Tensor q, Tensor k, Tensor v, Tensor probs, int rowBlock,
                                 Tensor gq, Tensor gk, Tensor gv);
}
