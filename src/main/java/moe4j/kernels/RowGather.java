package moe4j.kernels;

import moe4j.tensor.DType;
import moe4j.tensor.Tensor;

/**
 * Rows taken from a source tensor: row i is the source's row {@code rowIndex[i]}. Each row also names its
 * entry {@code entryOfRow[i] = rowIndex[i]·slots + s} with a slot {@code s < slots} that no other row of the
 * same source row has, so the rows taken from one source row are found from its {@code slots} entries:
 * the gather's adjoint (the gradient of a source row sums its rows') is then a sum per source row over at
 * most {@code slots} rows, with no two threads adding into one row. A dispatch's routing is such a gather:
 * the tokens' rows in expert order, entry t·K + k for token t's slot k.
 *
 * @param rowIndex (R) int32 source rows
 * @param entryOfRow (R) int32 distinct entries in [0, sourceRows·slots)
 * @param slots entries per source row (K; 1 when each source row is taken at most once)
 */
public record RowGather(Tensor rowIndex, Tensor entryOfRow, int slots) {
    public RowGather {
        rowIndex.requireDType(DType.I32, "RowGather");
        entryOfRow.requireDType(DType.I32, "RowGather");
        if (rowIndex.rank() != 1 || entryOfRow.rank() != 1 || rowIndex.dim(0) != entryOfRow.dim(0)) {
            throw new IllegalArgumentException("RowGather: rowIndex " + rowIndex.shapeString() + " and entryOfRow " + entryOfRow.shapeString()
                    + " must be (R) and (R)");
        }
        if (slots < 1) throw new IllegalArgumentException("RowGather: slots must be >= 1, got " + slots);
    }

    /** A gather that takes each source row at most once (a permutation, or a subset): entry = row index. */
    public static RowGather once(Tensor rowIndex) {
        return new RowGather(rowIndex, rowIndex, 1);
    }

    /** The number of rows taken, R. */
    public int rows() {
        return rowIndex.dim(0);
    }
}
