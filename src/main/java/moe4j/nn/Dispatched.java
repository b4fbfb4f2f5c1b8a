package moe4j.nn;

import moe4j.autograd.Profiler;
import moe4j.kernels.RowGather;
import moe4j.ops.Ops;
import moe4j.tensor.Tensor;

/**
 * What a {@link TokenDispatcher#dispatch} hands the layer's experts: R rows grouped by local expert
 * ({@code rowsPerLocalExpert[j]} consecutive rows for local expert j), and what its
 * {@link TokenDispatcher#combine} needs to send each result row home.
 *
 * <p>The rows are given as {@code source} and a {@link RowGather}: row i is {@code source[rowIndex[i]]}, or,
 * without a gather, row i of {@code source}. A dispatcher's last step is usually such a gather (tokens
 * into expert order, received rows regrouped by expert); handing it over undone lets experts that can
 * read rows through an index (a device's fused experts) skip writing the gathered rows out.
 *
 * @param source (N, D) the rows the dispatched rows are taken from
 * @param gather which rows of {@code source}, and each one's entry (for the gather's adjoint), or null:
 *     the rows are {@code source} itself
 * @param rowsPerLocalExpert rows per local expert, summing to R (every rank's entries for that expert)
 * @param groupEntries the kept entries of all the ranks that share the experts (this rank's alone when
 *     every expert is local): gradient scaling's average load is {@code groupEntries / E}
 * @param combineState the dispatcher's own record of where the rows came from
 */
public record Dispatched<M>(Tensor source, RowGather gather, int[] rowsPerLocalExpert, long groupEntries, M combineState) {
    public Dispatched {
        long rows = 0;
        for (int n : rowsPerLocalExpert) {
            if (n < 0) throw new IllegalArgumentException("Dispatched: negative row count in rowsPerLocalExpert");
            rows += n;
        }
        if (source.rank() != 2) throw new IllegalArgumentException("Dispatched: source must be (N, D), got " + source.shapeString());
        long given = gather != null ? gather.rows() : source.dim(0);
        if (rows != given) {
            throw new IllegalArgumentException("Dispatched: rowsPerLocalExpert sums to " + rows + " rows but "
                    + (gather != null ? "the gather takes " + given : "rows_RD is " + source.shapeString()));
        }
    }

    /** Rows given in full ({@code rows_RD} (R, D), no gather). */
    public Dispatched(Tensor rows_RD, int[] rowsPerLocalExpert, long groupEntries, M combineState) {
        this(rows_RD, null, rowsPerLocalExpert, groupEntries, combineState);
    }

    /** The number of dispatched rows R. */
    public int rowCount() {
        return gather != null ? gather.rows() : source.dim(0);
    }

    /** (R, D) the rows this rank's experts compute, grouped by local expert: gathered from {@code source} on each call when indexed. */
    public Tensor rows_RD() {
        if (gather == null) return source;
        try (var p = Profiler.phase("permute")) {
            return Ops.indexSelect(source, gather.rowIndex());
        }
    }
}
