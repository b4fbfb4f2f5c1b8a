package moe4j.kernels;

import moe4j.tensor.Tensor;

/**
 * Rotary position embedding and fused causal grouped-query attention on (B, S, H, hd) float32
 * activations, plus attention against a key/value cache for decoding (see {@code moe4j.ops.AttentionOps}
 * for the maths).
 */
public interface AttentionKernels {
    /**
     * out = x rotated pairwise by sign·((start + s)/scale·θ^(−2i/hd)) at row s (sign −1: the adjoint;
     * scale 1 and start 0: plain RoPE).
     */
    void rope(Tensor x, double theta, double scale, int start, float sign, Tensor out);

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
     * where the device blocks them. Row i attends to keys {@code max(0, i − window + 1) .. i}
     * ({@code window} 0: all of 0..i); keys before the window get probability 0.
     */
    void causalAttention(Tensor q, Tensor k, Tensor v, int rowBlock, int window, Tensor saved, Tensor out);

    /**
     * Gradients of {@link #causalAttention} from its output {@code out} and {@code saved}, same {@code rowBlock}
     * and {@code window}; gq, gk, gv zero on entry. A device whose backward needs the output's row sums
     * (dO·O) reads them from {@code out} rather than computing the forward again.
     */
    void causalAttentionBackward(Tensor gOut, Tensor q, Tensor k, Tensor v, Tensor out, Tensor saved, int rowBlock, int window,
                                 Tensor gq, Tensor gk, Tensor gv);

    /**
     * out (n, Hq, hd) = attention of the queries q (n, Hq, hd) at positions {@code start .. start + n − 1}
     * against rows of the caches kCache, vCache (capacity, Hkv, hd): query j reads rows
     * {@code max(0, start + j − window + 1) .. start + j} ({@code window} 0: from row 0). No gradient.
     */
    void cachedAttention(Tensor q, Tensor kCache, Tensor vCache, int start, int window, Tensor out);
}
