package moe4j.kernels;

import moe4j.tensor.Tensor;

/**
 * Reductions, row-wise normalisations and losses on float32 tensors. Sums are taken in a fixed order
 * (double accumulators where stated), so results are the same bits on every run and thread count.
 * "Rows" run along the last dimension; a tensor of shape (..., D) has numel/D rows.
 */
public interface ReductionKernels {
    /** out (one element) = Σ a. */
    void sum(Tensor a, Tensor out);

    /**
     * Σ a², returned on the host: a synchronising copy of one scalar, for norms that decide what the
     * host does next (gradient clipping).
     */
    double sumOfSquares(Tensor a);

    /**
     * The flat index of the first element of {@code a} that is NaN or infinite, or −1: returned on the
     * host (a synchronising copy), for input checks that are switched on.
     */
    long firstNonFinite(Tensor a);

    /** out[i] = Σ_j a[i, j] for a (N, D). */
    void rowSums(Tensor a, Tensor out);

    /** out[j] = Σ_i a[i, j] for a (N, D), double accumulators. */
    void columnSums(Tensor a, Tensor out);

    /** out[j] = Σ_i a[i, j]·b[i, j] for a, b (N, D) (double accumulators). */
    void columnDots(Tensor a, Tensor b, Tensor out);

    /** out[i] = Σ_j a[i, j]·b[i, j] (double accumulator). */
    void rowDots(Tensor a, Tensor b, Tensor out);

    void softmax(Tensor a, Tensor out);

    /** From the forward's output y: gradIn = y ⊙ (g − Σ_j g_j·y_j), row by row. */
    void softmaxBackward(Tensor out, Tensor g, Tensor gradIn);

    void logSoftmax(Tensor a, Tensor out);

    /** From the forward's output: gradIn = g − exp(out)·Σ g, row by row. */
    void logSoftmaxBackward(Tensor out, Tensor g, Tensor gradIn);

    /** out[i] = log Σ_j exp a[i, j]. */
    void logSumExp(Tensor a, Tensor out);

    /** gradIn[i, j] = g[i]·exp(a[i, j] − out[i]). */
    void logSumExpBackward(Tensor a, Tensor out, Tensor g, Tensor gradIn);

    /** RMSNorm of each row: out = x·inv·weight with inv[i] = 1/√(mean x² + eps), kept for the backward. */
    void rmsNorm(Tensor x, Tensor weight, double eps, Tensor out, Tensor inv);

    void rmsNormBackward(Tensor x, Tensor weight, Tensor inv, Tensor g, Tensor gradX, Tensor gradWeight);

    /**
     * Mean cross-entropy of logits (N, V) against int32 targets (N) into {@code loss} (one element);
     * target −1 is ignored.
     *
     * @throws IllegalArgumentException for a target outside [0, V) other than −1 (a device may report it
     *         at its next synchronisation instead)
     */
    void crossEntropy(Tensor logits, Tensor targets, Tensor loss);

    /** Gradient of {@link #crossEntropy} w.r.t. the logits, scaled by the single element of g. */
    void crossEntropyBackward(Tensor logits, Tensor targets, Tensor g, Tensor gradLogits);
}
