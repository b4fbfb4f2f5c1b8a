package moe4j.kernels.cpu;

import static moe4j.kernels.cpu.GemmReference.F;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import moe4j.tensor.Rng;
import org.junit.jupiter.api.Test;

class GroupedGemmTest {
    /** Group sizes with empty groups at the start, middle and end, and sizes around the 8-row tile. */
    private static final int[] SIZES = {0, 3, 17, 0, 1, 9, 40, 0};
    private static final int K = 37, N = 53;

    private static int[] offsets(int start) {
        int[] off = new int[SIZES.length + 1];
        off[0] = start;
        for (int g = 0; g < SIZES.length; g++) off[g + 1] = off[g] + SIZES[g];
        return off;
    }

    @Test
    void forwardMatchesPerGroupReferenceWithPackedAndSeparateWeights() {
        for (boolean transW : new boolean[] {false, true}) {
            for (boolean packed : new boolean[] {false, true}) {
                for (float beta : new float[] {0f, 1f}) {
                    checkForward(transW, packed, beta);
                }
            }
        }
    }

    private static void checkForward(boolean transW, boolean packed, float beta) {
        try (Arena arena = Arena.ofConfined()) {
            Rng rng = new Rng(21);
            int e = SIZES.length, start = 2; // rows start at 2: offsets[0] != 0 is allowed
            int[] off = offsets(start);
            int rows = off[e];
            long xOff = 5, yOff = 3;
            MemorySegment x = GemmReference.random(arena, rng, xOff + (long) rows * K);
            MemorySegment y0 = GemmReference.random(arena, rng, yOff + (long) rows * N);
            MemorySegment y = GemmReference.copy(arena, y0);
            MemorySegment[] w = new MemorySegment[e];
            long[] wOff = new long[e];
            MemorySegment all = GemmReference.random(arena, rng, 7 + (long) e * K * N);
            for (int g = 0; g < e; g++) {
                w[g] = packed ? all : GemmReference.random(arena, rng, (long) K * N);
                wOff[g] = packed ? 7 + (long) g * K * N : 0;
            }
            GroupedGemm.resetRowsProcessed();
            GroupedGemm.forward(e, off, K, N, x, xOff, w, wOff, transW, y, yOff, beta);
            assertEquals(rows - start, GroupedGemm.rowsProcessed(), "rows counted");
            for (int g = 0; g < e; g++) {
                int m = off[g + 1] - off[g];
                String what = "forward group " + g + " transW=" + transW + " packed=" + packed + " beta=" + beta;
                // compare only this group's rows: C's block is rows [off[g], off[g+1]) of Y
                MemorySegment yg0 = rowsOf(y0, yOff, off[g], off[g + 1], N);
                MemorySegment yg = rowsOf(y, yOff, off[g], off[g + 1], N);
                GemmReference.check(what, false, transW, m, N, K, 1f, x, xOff + (long) off[g] * K, K,
                        w[g], wOff[g], transW ? K : N, beta, yg0, yg, 0, N);
            }
            // rows before offsets[0] are not any group's: untouched
            assertEquals(-1L, rowsOf(y, yOff, 0, start, N).mismatch(rowsOf(y0, yOff, 0, start, N)));
        }
    }

    @Test
    void weightGradMatchesPerGroupReference() {
        for (boolean packed : new boolean[] {false, true}) {
            for (float beta : new float[] {0f, 1f, 0.5f}) {
                try (Arena arena = Arena.ofConfined()) {
                    Rng rng = new Rng(31);
                    int e = SIZES.length;
                    int[] off = offsets(0);
                    int rows = off[e];
                    MemorySegment x = GemmReference.random(arena, rng, (long) rows * K);
                    MemorySegment dy = GemmReference.random(arena, rng, 1 + (long) rows * N);
                    MemorySegment[] dw0 = new MemorySegment[e], dw = new MemorySegment[e];
                    long[] dwOff = new long[e];
                    MemorySegment all0 = GemmReference.random(arena, rng, (long) e * K * N);
                    if (beta == 0f) all0.setAtIndex(F, 0, Float.NaN); // beta 0 must not read old gradients
                    MemorySegment all = GemmReference.copy(arena, all0);
                    for (int g = 0; g < e; g++) {
                        if (packed) {
                            dw0[g] = all0;
                            dw[g] = all;
                            dwOff[g] = (long) g * K * N;
                        } else {
                            dw0[g] = GemmReference.random(arena, rng, (long) K * N);
                            dw[g] = GemmReference.copy(arena, dw0[g]);
                        }
                    }
                    GroupedGemm.resetRowsProcessed();
                    GroupedGemm.weightGrad(e, off, K, N, x, 0, dy, 1, dw, dwOff, beta);
                    assertEquals(rows, GroupedGemm.rowsProcessed());
                    for (int g = 0; g < e; g++) {
                        int m = off[g + 1] - off[g];
                        MemorySegment before = dw0[g].asSlice(dwOff[g] * Float.BYTES, (long) K * N * Float.BYTES);
                        MemorySegment after = dw[g].asSlice(dwOff[g] * Float.BYTES, (long) K * N * Float.BYTES);
                        GemmReference.check("weightGrad group " + g + " packed=" + packed + " beta=" + beta,
                                true, false, K, N, m, 1f, x, (long) off[g] * K, K, dy, 1 + (long) off[g] * N, N,
                                beta, before, after, 0, N);
                    }
                }
            }
        }
    }

    @Test
    void allGroupsEmptyComputesNothing() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment w = GemmReference.random(arena, new Rng(1), (long) K * N);
            GroupedGemm.resetRowsProcessed();
            GroupedGemm.forward(3, new int[] {4, 4, 4, 4}, K, N, MemorySegment.NULL, 0,
                    new MemorySegment[] {w, w, w}, new long[3], false, MemorySegment.NULL, 0, 0f);
            assertEquals(0, GroupedGemm.rowsProcessed());
        }
    }

    @Test
    void badOffsetsAreRejected() {
        MemorySegment[] w = {MemorySegment.NULL, MemorySegment.NULL};
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class, () -> GroupedGemm.forward(
                2, new int[] {0, 5, 3}, 4, 4, MemorySegment.NULL, 0, w, new long[2], false, MemorySegment.NULL, 0, 0f));
        assertTrue(ex.getMessage().contains("must not decrease"), ex.getMessage());
        ex = assertThrows(IllegalArgumentException.class, () -> GroupedGemm.forward(
                2, new int[] {0, 5}, 4, 4, MemorySegment.NULL, 0, w, new long[2], false, MemorySegment.NULL, 0, 0f));
        assertTrue(ex.getMessage().contains("expected groups + 1 = 3"), ex.getMessage());
    }

    @Test
    void aTooSmallWeightIsNamedByItsGroup() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment x = arena.allocate(4L * 3 * Float.BYTES), y = arena.allocate(4L * 5 * Float.BYTES);
            MemorySegment good = arena.allocate(3L * 5 * Float.BYTES), small = arena.allocate(14L * Float.BYTES);
            IllegalArgumentException ex = assertThrows(IllegalArgumentException.class, () -> GroupedGemm.forward(
                    2, new int[] {0, 2, 4}, 3, 5, x, 0, new MemorySegment[] {good, small}, new long[2], false, y, 0, 0f));
            assertTrue(ex.getMessage().contains("GroupedGemm.forward: W[1]"), ex.getMessage());
        }
    }

    private static MemorySegment rowsOf(MemorySegment s, long off, int r0, int r1, int width) {
        return s.asSlice((off + (long) r0 * width) * Float.BYTES, (long) (r1 - r0) * width * Float.BYTES);
    }
}
