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
     * The shape of the float32 tensor {@link #causalAttention} fills for its backward ({@code saved}):
     * here the attention probabilities (B, Hq, S, S); a device that recomputes them keeps less (the
     * cuda device: each query row's log-sum-exp, (B, Hq, S)).
     */
    default int[] savedShape(int b, int hq, int s) {
        return new int[] {b, hq, s, s};
    }

    /**
     * out = softmax(Q·Kᵀ/√hd + causal mask)·V for q (B, S, Hq, hd), k and v (B, S, Hkv, hd); keeps what the
     * backward needs in {@code saved} (of {@link #savedShape}). Query rows go in blocks of {@code rowBlock}
     * where the device blocks them.
     */
    void causalAttention(Tensor q, Tensor k, Tensor v, int rowBlock, Tensor saved, Tensor out);

    /** Gradients of {@link #causalAttention} from its {@code saved}; gq, gk, gv zero on entry. */
    void causalAttentionBackward(Tensor gOut, Tensor q, Tensor k, Tensor v, Tensor saved, int rowBlock,
                                 Tensor gq, Tensor gk, Tensor gv);
}
