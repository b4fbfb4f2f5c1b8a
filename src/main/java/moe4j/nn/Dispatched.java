package moe4j.nn;

import moe4j.tensor.Tensor;

/**
 * What a {@link TokenDispatcher#dispatch} hands the layer's experts: {@code rows_RD}, R rows grouped by
 * local expert ({@code rowsPerLocalExpert[j]} consecutive rows for local expert j), and what its
 * {@link TokenDispatcher#combine} needs to send each result row home.
 *
 * @param rows_RD (R, D) the rows this rank's experts compute, grouped by local expert
 * @param rowsPerLocalExpert rows per local expert, summing to R (every rank's entries for that expert)
 * @param groupEntries the kept entries of all the ranks that share the experts (this rank's alone when
 *     every expert is local): gradient scaling's average load is {@code groupEntries / E}
 * @param combineState the dispatcher's own record of where the rows came from
 */
public record Dispatched<M>(Tensor rows_RD, int[] rowsPerLocalExpert, long groupEntries, M combineState) {
    public Dispatched {
        long rows = 0;
        for (int n : rowsPerLocalExpert) {
            if (n < 0) throw new IllegalArgumentException("Dispatched: negative row count in rowsPerLocalExpert");
            rows += n;
        }
        if (rows_RD.rank() != 2 || rows != rows_RD.dim(0)) {
            throw new IllegalArgumentException("Dispatched: rowsPerLocalExpert sums to " + rows + " rows but rows_RD is "
                    + rows_RD.shapeString());
        }
    }
}
