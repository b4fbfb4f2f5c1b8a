package moe4j.kernels.cpu;

import java.lang.foreign.MemorySegment;

/**
 * Row gather and scatter-add over row-major float32 matrices: the permutation steps of an MoE layer
 * (tokens to expert order and back). Rows are copied whole with {@link MemorySegment#copy}.
 */
public final class RowCopy {
    private RowCopy() {}

    /** dst[i] = src[idx[i]] for rows of {@code width} floats. Indices must already be in range. */
    public static void gather(MemorySegment src, int width, int[] idx, MemorySegment dst) {
        long rowBytes = (long) width * 4;
        for (int i = 0; i < idx.length; i++) {
            MemorySegment.copy(src, idx[i] * rowBytes, dst, i * rowBytes, rowBytes);
        }
    }

    /** dst[idx[i]] += src[i] for rows of {@code width} floats (duplicates accumulate in index order). */
    public static void scatterAdd(MemorySegment src, int width, int[] idx, MemorySegment dst) {
        for (int i = 0; i < idx.length; i++) {
            Elementwise.axpy(width, 1f, src, (long) i * width, dst, (long) idx[i] * width);
        }
    }
}
