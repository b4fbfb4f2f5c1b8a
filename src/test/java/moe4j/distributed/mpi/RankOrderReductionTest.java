package moe4j.distributed.mpi;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import moe4j.distributed.ReduceOp;
import moe4j.tensor.DType;
import org.junit.jupiter.api.Test;

/** The rank-order reduction against a plain element loop in the same float32 order (so: bit-exact). */
class RankOrderReductionTest {
    private static float input(int piece, long i) {
        return (float) Math.cos(piece * 0.7 + i * 0.013) * (piece + 1) / 7f;
    }

    @Test
    void floatsCombineInRankOrderAcrossBlockBoundaries() {
        int p = 3;
        long len = 4096 * 2 + 17; // crosses the 4096-element blocks
        for (ReduceOp op : ReduceOp.values()) {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment pieces = arena.allocate(p * len * 4);
                for (int j = 0; j < p; j++) for (long i = 0; i < len; i++) pieces.setAtIndex(ValueLayout.JAVA_FLOAT, j * len + i, input(j, i));
                MemorySegment dst = arena.allocate((len + 5) * 4);
                new RankOrderReduction().reduce(DType.F32, op, pieces, p, len, dst, 5);
                for (long i = 0; i < len; i++) {
                    float acc = input(0, i);
                    for (int j = 1; j < p; j++) acc = op == ReduceOp.MAX ? Math.max(acc, input(j, i)) : acc + input(j, i);
                    if (op == ReduceOp.AVG) acc /= p;
                    assertEquals(Float.floatToRawIntBits(acc), Float.floatToRawIntBits(dst.getAtIndex(ValueLayout.JAVA_FLOAT, 5 + i)),
                            op + " element " + i);
                }
                assertEquals(0f, dst.getAtIndex(ValueLayout.JAVA_FLOAT, 4), "nothing written before dstStart");
            }
        }
    }

    @Test
    void intsSumAndMax() {
        int p = 4;
        long len = 10;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment pieces = arena.allocate(p * len * 4);
            for (int j = 0; j < p; j++) for (long i = 0; i < len; i++) pieces.setAtIndex(ValueLayout.JAVA_INT, j * len + i, (int) (j * 10 - i * 3));
            MemorySegment sum = arena.allocate(len * 4);
            MemorySegment max = arena.allocate(len * 4);
            new RankOrderReduction().reduce(DType.I32, ReduceOp.SUM, pieces, p, len, sum, 0);
            new RankOrderReduction().reduce(DType.I32, ReduceOp.MAX, pieces, p, len, max, 0);
            for (int i = 0; i < len; i++) {
                assertEquals(60 - 12 * i, sum.getAtIndex(ValueLayout.JAVA_INT, i));
                assertEquals(30 - 3 * i, max.getAtIndex(ValueLayout.JAVA_INT, i));
            }
        }
    }
}
