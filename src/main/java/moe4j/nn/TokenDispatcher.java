package moe4j.nn;

import moe4j.tensor.Tensor;

/**
 * Moves routed tokens to their experts and the results back. The MoE layer owns one; by default it is
 * {@link LocalDispatcher} (all experts here), and expert parallelism installs one that exchanges
 * tokens between ranks. The layer never needs to know which.
 */
public interface TokenDispatcher {
    /**
     * {@code out_TD[t] = Σ_k weights[t,k] · s_e · Expert_e(x[t])} with {@code e = indices[t,k]} (global ids),
     * for every entry whose index is not −1 (−1 marks an entry dropped by the capacity limit: it is
     * neither sent nor computed). {@code s_e} is the gradient-scaling factor (1 when {@code gradientScale}
     * is off).
     */
    Tensor dispatchAndCompute(Tensor x, Tensor weights, Tensor indices, MoEMLP moe, boolean gradientScale);
}
