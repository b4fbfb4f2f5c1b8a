package moe4j.kernels;

import moe4j.tensor.Tensor;

/**
 * Row and column indexing with int32 index tensors on the device: the permutation steps of an MoE layer
 * (tokens into expert order and back) and embedding lookups. Rows are the first dimension; a row is
 * {@code rowWidth()} floats.
 */
public interface IndexKernels {
    /**
     * Checks that every index lies in [0, bound).
     *
     * @throws IllegalArgumentException naming {@code op}, the index and its position
     */
    void checkIndices(Tensor idx, int bound, String op);

    /** dst[i] = src[idx[i]], rows. */
    void gatherRows(Tensor src, Tensor idx, Tensor dst);

    /** dst[idx[i]] += src[i], rows; duplicates accumulate in index order. */
    void scatterAddRows(Tensor src, Tensor idx, Tensor dst);

    /** out[i, s] = a[i, idx[i, s]] for a (N, D), idx (N, K). */
    void gatherColumns(Tensor a, Tensor idx, Tensor out);

    /** gradIn[i, idx[i, s]] += g[i, s] (gradIn zero on entry). */
    void scatterAddColumns(Tensor g, Tensor idx, Tensor gradIn);
}
