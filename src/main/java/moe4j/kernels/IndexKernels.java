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

    /**
     * The combine of an MoE layer, a gather per token: for rows (R, D), weights (T, K) and int32 entryOfRow
     * (R) holding flat entries e = t·K + k in [0, T·K), each at most once, out (T, D) gets
     * out[t] = Σ over the rows i of token t (e / K = t), in ascending i, of weights[e]·rows[i], the sum
     * starting at 0 and each product rounded to float32 before it is added. Every element of out is
     * written (0 for a token of no row); the same bits on every run and on every device. "Each at most once"
     * is the caller's promise (a routing's entries are): the CPU refuses a repeated entry, a GPU need not
     * look for one, and with one its result is undefined.
     */
    void weightedCombine(Tensor rows, Tensor weights, Tensor entryOfRow, Tensor out);

    /**
     * The backward of {@link #weightedCombine} from gradOut (T, D): gradRows[i] = weights[e]·gradOut[t]
     * (R, D) and gradWeights[e] = ⟨rows[i], gradOut[t]⟩ (T, K), 0 at the entries of no row, for
     * e = entryOfRow[i], t = e / K. Either output may be null when its gradient is not wanted; those given
     * are written in full.
     */
    void weightedCombineBackward(Tensor gradOut, Tensor rows, Tensor weights, Tensor entryOfRow, Tensor gradRows, Tensor gradWeights);
}
