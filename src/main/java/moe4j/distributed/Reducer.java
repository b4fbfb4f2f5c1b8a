package moe4j.distributed;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import moe4j.tensor.DType;

/**
 * Element-wise reduction of the same range of several ranks' buffers, block by block through small
 * arrays (bulk copies in and out, a plain loop the JIT vectorizes in between). Values are combined in
 * rank order, so the result never depends on which thread computes it.
 */
final class Reducer {
    private static final int BLOCK = 4096;
    private final float[] acc = new float[BLOCK];
    private final float[] next = new float[BLOCK];
    private final int[] iacc = new int[BLOCK];
    private final int[] inext = new int[BLOCK];

    /**
     * Reduces elements {@code [srcStart, srcStart + count)} of every {@code sources[j]} (in order j =
     * 0, 1, ...) and writes the result to elements {@code [dstStart, dstStart + count)} of every
     * target. A target may be a source: each block is read completely before it is written.
     */
    void reduce(DType dtype, ReduceOp op, MemorySegment[] sources, long srcStart, long count,
            MemorySegment[] targets, long dstStart) {
        for (long b = 0; b < count; b += BLOCK) {
            int len = (int) Math.min(BLOCK, count - b);
            if (dtype == DType.F32) {
                reduceFloats(op, sources, srcStart + b, len);
                for (MemorySegment t : targets) MemorySegment.copy(acc, 0, t, ValueLayout.JAVA_FLOAT, (dstStart + b) * 4, len);
            } else {
                reduceInts(op, sources, srcStart + b, len);
                for (MemorySegment t : targets) MemorySegment.copy(iacc, 0, t, ValueLayout.JAVA_INT, (dstStart + b) * 4, len);
            }
        }
    }

    private void reduceFloats(ReduceOp op, MemorySegment[] sources, long start, int len) {
        MemorySegment.copy(sources[0], ValueLayout.JAVA_FLOAT, start * 4, acc, 0, len);
        for (int j = 1; j < sources.length; j++) {
            MemorySegment.copy(sources[j], ValueLayout.JAVA_FLOAT, start * 4, next, 0, len);
            if (op == ReduceOp.MAX) {
                for (int i = 0; i < len; i++) acc[i] = Math.max(acc[i], next[i]);
            } else {
                for (int i = 0; i < len; i++) acc[i] += next[i];
            }
        }
        if (op == ReduceOp.AVG) {
            float p = sources.length;
            for (int i = 0; i < len; i++) acc[i] /= p;
        }
    }

    private void reduceInts(ReduceOp op, MemorySegment[] sources, long start, int len) {
        MemorySegment.copy(sources[0], ValueLayout.JAVA_INT, start * 4, iacc, 0, len);
        for (int j = 1; j < sources.length; j++) {
            MemorySegment.copy(sources[j], ValueLayout.JAVA_INT, start * 4, inext, 0, len);
            if (op == ReduceOp.MAX) {
                for (int i = 0; i < len; i++) iacc[i] = Math.max(iacc[i], inext[i]);
            } else {
                for (int i = 0; i < len; i++) iacc[i] += inext[i];
            }
        }
    }
}
