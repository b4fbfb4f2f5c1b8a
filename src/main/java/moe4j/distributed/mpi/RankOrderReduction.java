package moe4j.distributed.mpi;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import moe4j.distributed.ReduceOp;
import moe4j.tensor.DType;

/**
 * Reduces the P equal pieces one rank received from its peers (piece j came from rank j) into one,
 * combining in rank order 0, 1, ..., P-1, the same order and arithmetic as the in-JVM backend. MPI's
 * own reductions pick their combining order by algorithm and message size, so moe4j reduces here
 * and uses MPI only to move the data: results are the same bits on every rank, in every run, with
 * either backend.
 */
final class RankOrderReduction {
    private static final int BLOCK = 4096;
    private final float[] acc = new float[BLOCK];
    private final float[] next = new float[BLOCK];
    private final int[] iacc = new int[BLOCK];
    private final int[] inext = new int[BLOCK];

    /**
     * Piece j is elements {@code [j*len, (j+1)*len)} of {@code pieces}; the result goes to elements
     * {@code [dstStart, dstStart + len)} of {@code dst}.
     */
    void reduce(DType dtype, ReduceOp op, MemorySegment pieces, int p, long len, MemorySegment dst, long dstStart) {
        for (long b = 0; b < len; b += BLOCK) {
            int n = (int) Math.min(BLOCK, len - b);
            if (dtype == DType.F32) {
                reduceFloats(op, pieces, p, len, b, n);
                MemorySegment.copy(acc, 0, dst, ValueLayout.JAVA_FLOAT, (dstStart + b) * 4, n);
            } else {
                reduceInts(op, pieces, p, len, b, n);
                MemorySegment.copy(iacc, 0, dst, ValueLayout.JAVA_INT, (dstStart + b) * 4, n);
            }
        }
    }

    private void reduceFloats(ReduceOp op, MemorySegment pieces, int p, long len, long b, int n) {
        MemorySegment.copy(pieces, ValueLayout.JAVA_FLOAT, b * 4, acc, 0, n);
        for (int j = 1; j < p; j++) {
            MemorySegment.copy(pieces, ValueLayout.JAVA_FLOAT, (j * len + b) * 4, next, 0, n);
            if (op == ReduceOp.MAX) {
                for (int i = 0; i < n; i++) acc[i] = Math.max(acc[i], next[i]);
            } else {
                for (int i = 0; i < n; i++) acc[i] += next[i];
            }
        }
        if (op == ReduceOp.AVG) {
            float size = p;
            for (int i = 0; i < n; i++) acc[i] /= size;
        }
    }

    private void reduceInts(ReduceOp op, MemorySegment pieces, int p, long len, long b, int n) {
        MemorySegment.copy(pieces, ValueLayout.JAVA_INT, b * 4, iacc, 0, n);
        for (int j = 1; j < p; j++) {
            MemorySegment.copy(pieces, ValueLayout.JAVA_INT, (j * len + b) * 4, inext, 0, n);
            if (op == ReduceOp.MAX) {
                for (int i = 0; i < n; i++) iacc[i] = Math.max(iacc[i], inext[i]);
            } else {
                for (int i = 0; i < n; i++) iacc[i] += inext[i];
            }
        }
    }
}
