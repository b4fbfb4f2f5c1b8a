package moe4j.kernels.cpu;

import static moe4j.kernels.cpu.GemmReference.F;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import moe4j.kernels.ExecutionContext;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;
import org.junit.jupiter.api.Test;

class GemmTest {
    /**
     * m, n, k triples: odd sizes, tile and block edges of both tiles (8x3: MR = 8, NR = 48, MC = 512; 12x2:
     * MR = 12, NR = 32, MC = 516; KC = 256; NC from the L2 size, 768 or 960 on the machines measured). A
     * product of at most MC rows packs A once per K slab for all column slabs, a taller one per row block.
     */
    private static final int[][] SHAPES = {
            {1, 1, 1}, {1, 3, 7}, {3, 1, 17}, {7, 17, 1}, {17, 33, 7}, {33, 65, 17}, {65, 129, 33},
            {129, 33, 65}, {8, 48, 256}, {9, 49, 257}, {130, 97, 300}, {5, 800, 3}, {521, 9, 11}, {1, 129, 520},
            {12, 32, 256}, {13, 33, 257}, {505, 31, 20}, {25, 961, 9}, {11, 1000, 40}, {516, 2000, 300},
            {517, 40, 20}, {40, 3100, 270},
    };

    @Test
    void theTileAskedForIsTheOneInUse() {
        // the build runs these tests once per tile (-Dmoe4j.gemm.tile): each run must really use its tile
        String asked = System.getProperty("moe4j.gemm.tile");
        String inUse = Gemm.tuning().tile().label();
        if (asked != null) assertEquals(asked, inUse);
        assertEquals(Gemm.tuning().mr() * Gemm.tuning().nr(), Gemm.tuning().tile().label().equals("8x3")
                ? 8 * 3 * GemmBlocked.L : 12 * 2 * GemmBlocked.L);
    }

    @Test
    void allLayoutsMatchFloat64Reference() {
        Rng rng = new Rng(7);
        for (int layout = 0; layout < 4; layout++) {
            boolean ta = (layout & 1) != 0, tb = (layout & 2) != 0;
            for (int[] s : SHAPES) {
                run(rng, ta, tb, s[0], s[1], s[2], 1f, 0f, 0, 0, 0, 0);
            }
        }
    }

    @Test
    void offsetsLeadingDimensionsAlphaBeta() {
        Rng rng = new Rng(11);
        float[][] alphaBeta = {{0.5f, 1f}, {-1.25f, 0.75f}, {2f, -1f}, {1f, 0f}};
        for (int layout = 0; layout < 4; layout++) {
            boolean ta = (layout & 1) != 0, tb = (layout & 2) != 0;
            for (float[] ab : alphaBeta) {
                run(rng, ta, tb, 17, 65, 33, ab[0], ab[1], 5, 3, 4, 7);
            }
            // two K slabs with padding: the later slab must accumulate onto the beta-scaled first one
            run(rng, ta, tb, 130, 50, 260, -1.25f, 0.75f, 1, 2, 3, 1);
        }
    }

    @Test
    void kZeroScalesByBeta() {
        Rng rng = new Rng(3);
        run(rng, false, false, 5, 7, 0, 1f, 0.5f, 0, 0, 0, 0);
        run(rng, true, true, 5, 7, 0, 1f, 0f, 2, 1, 1, 3);
    }

    @Test
    void betaZeroIgnoresNaNInC() {
        try (Arena arena = Arena.ofConfined()) {
            Rng rng = new Rng(5);
            int m = 19, n = 53, k = 21;
            MemorySegment a = GemmReference.random(arena, rng, (long) m * k);
            MemorySegment b = GemmReference.random(arena, rng, (long) k * n);
            MemorySegment c = arena.allocate((long) m * n * Float.BYTES);
            for (long i = 0; i < (long) m * n; i++) c.setAtIndex(F, i, Float.NaN);
            Gemm.sgemm(false, false, m, n, k, 1f, a, 0, k, b, 0, n, 0f, c, 0, n);
            for (long i = 0; i < (long) m * n; i++) assertTrue(Float.isFinite(c.getAtIndex(F, i)), "C[" + i + "]");
        }
    }

    @Test
    void emptyShapesDoNothing() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment c = arena.allocate(4 * Float.BYTES);
            c.setAtIndex(F, 0, 42f);
            MemorySegment b = arena.allocate(12 * Float.BYTES);
            Gemm.sgemm(false, false, 0, 4, 3, 1f, MemorySegment.NULL, 0, 3, b, 0, 4, 0f, MemorySegment.NULL, 0, 4);
            Gemm.sgemm(false, false, 1, 0, 3, 1f, c, 0, 3, MemorySegment.NULL, 0, 1, 0f, c, 0, 1);
            assertEquals(42f, c.getAtIndex(F, 0));
        }
    }

    @Test
    void threadCountDoesNotChangeBits() {
        try (Arena arena = Arena.ofShared()) {
            Rng rng = new Rng(9);
            for (boolean tb : new boolean[] {false, true}) {
                for (int[] s : new int[][] {{70, 301, 300}, {300, 40, 270}}) {
                    int m = s[0], n = s[1], k = s[2];
                    MemorySegment a = GemmReference.random(arena, rng, (long) m * k);
                    MemorySegment b = GemmReference.random(arena, rng, (long) k * n);
                    MemorySegment c0 = GemmReference.random(arena, rng, (long) m * n);
                    MemorySegment c1 = GemmReference.copy(arena, c0), c2 = GemmReference.copy(arena, c0);
                    int ldb = tb ? k : n;
                    Gemm.sgemm(false, tb, m, n, k, 0.7f, a, 0, k, b, 0, ldb, 0.3f, c1, 0, n);
                    try (ExecutionContext two = ExecutionContext.enter(Device.CPU, 2)) {
                        Gemm.sgemm(false, tb, m, n, k, 0.7f, a, 0, k, b, 0, ldb, 0.3f, c2, 0, n);
                    }
                    assertEquals(-1L, c1.mismatch(c2), "thread count changed the bits for " + m + "x" + n + "x" + k);
                }
            }
        }
    }

    @Test
    void packedBIsTheSamePanelWhereverItStarts() {
        // the panel is placed on a cache line of the packing array; the placement must not change its contents
        try (Arena arena = Arena.ofConfined()) {
            Rng rng = new Rng(29);
            int k = 37, n = 2 * GemmBlocked.NR + 5, kc = 30;
            for (boolean tb : new boolean[] {false, true}) {
                MemorySegment b = GemmReference.random(arena, rng, (long) k * n);
                int ldb = tb ? k : n;
                int panel = kc * 3 * GemmBlocked.NR;
                float[] at0 = new float[panel + 16], shifted = new float[panel + 16];
                java.util.Arrays.fill(at0, Float.NaN);
                java.util.Arrays.fill(shifted, Float.NaN);
                GemmBlocked.packB(tb, b, 0, ldb, 5, kc, 0, n, at0, 0);
                GemmBlocked.packB(tb, b, 0, ldb, 5, kc, 0, n, shifted, 11);
                for (int i = 0; i < panel; i++) {
                    assertEquals(Float.floatToRawIntBits(at0[i]), Float.floatToRawIntBits(shifted[11 + i]), "element " + i);
                }
                for (int i = 0; i < 11; i++) assertTrue(Float.isNaN(shifted[i]), "nothing written before the start");
            }
        }
        int start = GemmBlocked.lineStart(new float[100]);
        assertTrue(start >= 0 && start < 16, "a cache line starts within 16 floats, got " + start);
    }

    @Test
    void directAndPackedBGiveTheSameBits() {
        // 400 rows take the packed-B path, its first 100 rows alone the in-place one
        try (Arena arena = Arena.ofConfined()) {
            Rng rng = new Rng(23);
            int m = 400, n = 130, k = 40;
            MemorySegment a = GemmReference.random(arena, rng, (long) m * k);
            MemorySegment b = GemmReference.random(arena, rng, (long) k * n);
            MemorySegment c0 = GemmReference.random(arena, rng, (long) m * n);
            MemorySegment all = GemmReference.copy(arena, c0), part = GemmReference.copy(arena, c0);
            Gemm.sgemm(false, false, m, n, k, 0.9f, a, 0, k, b, 0, n, 0.4f, all, 0, n);
            Gemm.sgemm(false, false, 100, n, k, 0.9f, a, 0, k, b, 0, n, 0.4f, part, 0, n);
            long rows = 100L * n * Float.BYTES;
            assertEquals(-1L, all.asSlice(0, rows).mismatch(part.asSlice(0, rows)));
        }
    }

    @Test
    void concurrentRanksEachUseTheirOwnThreads() throws Exception {
        // in-JVM ranks call sgemm from their own threads at the same time, each in its own context
        try (Arena arena = Arena.ofShared()) {
            Rng rng = new Rng(19);
            int m = 90, n = 200, k = 120; // just above the size that goes parallel
            MemorySegment a = GemmReference.random(arena, rng, (long) m * k);
            MemorySegment b = GemmReference.random(arena, rng, (long) k * n);
            MemorySegment expected = arena.allocate((long) m * n * Float.BYTES);
            Gemm.sgemm(false, false, m, n, k, 1f, a, 0, k, b, 0, n, 0f, expected, 0, n);
            MemorySegment[] out = new MemorySegment[4];
            Thread[] callers = new Thread[out.length];
            for (int t = 0; t < out.length; t++) {
                MemorySegment c = out[t] = arena.allocate((long) m * n * Float.BYTES);
                int threads = 2 + t % 2;
                callers[t] = new Thread(() -> {
                    try (ExecutionContext ctx = ExecutionContext.enter(Device.CPU, threads)) {
                        for (int rep = 0; rep < 3; rep++) Gemm.sgemm(false, false, m, n, k, 1f, a, 0, k, b, 0, n, 0f, c, 0, n);
                    }
                });
                callers[t].start();
            }
            for (Thread t : callers) t.join();
            for (MemorySegment c : out) assertEquals(-1L, c.mismatch(expected));
        }
    }

    @Test
    void confinedSegmentsWorkWithThreads() {
        try (ExecutionContext two = ExecutionContext.enter(Device.CPU, 2)) {
            run(new Rng(13), false, true, 100, 400, 150, 1f, 0f, 0, 0, 0, 0);
        }
    }

    @Test
    void badArgumentsAreRejected() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = arena.allocate(16 * Float.BYTES);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> Gemm.sgemm(false, false, 4, 4, 4, 1f, s, 0, 3, s, 0, 4, 0f, s, 0, 4));
            assertTrue(e.getMessage().contains("leading dimension of A"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class,
                    () -> Gemm.sgemm(false, false, 4, 4, 4, 1f, s, 1, 4, s, 0, 4, 0f, s, 0, 4));
            assertTrue(e.getMessage().contains("needs 17 floats"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> ExecutionContext.enter(Device.CPU, 0));
        }
    }

    /** Runs one sgemm with the given padding (offset, extra leading-dimension) and checks it. */
    private static void run(Rng rng, boolean ta, boolean tb, int m, int n, int k, float alpha, float beta,
                            int off, int padA, int padB, int padC) {
        try (Arena arena = Arena.ofConfined()) {
            int aRows = ta ? k : m, aCols = ta ? m : k;
            int bRows = tb ? n : k, bCols = tb ? k : n;
            int lda = aCols + padA, ldb = bCols + padB, ldc = n + padC;
            MemorySegment a = GemmReference.random(arena, rng, off + (long) aRows * lda);
            MemorySegment b = GemmReference.random(arena, rng, off + (long) bRows * ldb);
            MemorySegment c0 = GemmReference.random(arena, rng, off + (long) m * ldc);
            MemorySegment c = GemmReference.copy(arena, c0);
            Gemm.sgemm(ta, tb, m, n, k, alpha, a, off, lda, b, off, ldb, beta, c, off, ldc);
            String what = "sgemm(" + (ta ? "T" : "N") + (tb ? "T" : "N") + ", m=" + m + ", n=" + n + ", k=" + k
                    + ", alpha=" + alpha + ", beta=" + beta + ")";
            GemmReference.check(what, ta, tb, m, n, k, alpha, a, off, lda, b, off, ldb, beta, c0, c, off, ldc);
        }
    }
}
