package moe4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import moe4j.tensor.DType;
import moe4j.tensor.MemoryScope;
import org.junit.jupiter.api.Test;

/** Batches are a fixed function of (seed, step, global batch, seqLen), tile over ranks, and resume exactly. */
class DataLoaderTest {
    static final int B = 8;
    static final int S = 24;

    /** The rows of a batch as int arrays. */
    static int[][] rows(moe4j.tensor.Tensor t) {
        int[] flat = t.toIntArray();
        int[][] r = new int[t.dim(0)][];
        for (int i = 0; i < r.length; i++) r[i] = Arrays.copyOfRange(flat, i * t.dim(1), (i + 1) * t.dim(1));
        return r;
    }

    @Test
    void sameSeedSameBatchesDifferentSeedDifferentBatches() {
        DataLoader a = new DataLoader(new SyntheticTasks(7), B, S);
        DataLoader b = new DataLoader(new SyntheticTasks(7), B, S);
        DataLoader c = new DataLoader(new SyntheticTasks(8), B, S);
        for (int step = 0; step < 5; step++) {
            Batch x = a.next();
            Batch y = b.next();
            Batch z = c.next();
            assertEquals(step, x.step());
            assertArrayEquals(x.inputs().toIntArray(), y.inputs().toIntArray());
            assertArrayEquals(x.targets().toIntArray(), y.targets().toIntArray());
            assertFalse(Arrays.equals(x.inputs().toIntArray(), z.inputs().toIntArray()));
        }
        assertEquals(5, a.position());
    }

    @Test
    void batchesHaveTheDeclaredShapesAndTypes() {
        Batch b = new DataLoader(new SyntheticTasks(1), B, S, 1, 4).next();
        assertArrayEquals(new int[] {2, S}, b.inputs().shape());
        assertArrayEquals(new int[] {2, S}, b.targets().shape());
        assertEquals(DType.I32, b.inputs().dtype());
        assertEquals(DType.I32, b.targets().dtype());
        assertEquals(2 * S, b.tokens());
    }

    @Test
    void targetsAreInputsShiftedByOneAndContinueTheWindow() {
        SyntheticTasks source = new SyntheticTasks(3);
        DataLoader loader = new DataLoader(source, B, S);
        loader.seek(11);
        Batch b = loader.next();
        int[][] in = rows(b.inputs());
        int[][] out = rows(b.targets());
        int[] window = new int[S + 1];
        for (int r = 0; r < B; r++) {
            source.window(11L * B + r, window);
            assertArrayEquals(Arrays.copyOfRange(window, 0, S), in[r]);
            assertArrayEquals(Arrays.copyOfRange(window, 1, S + 1), out[r]);
            for (int t = 0; t + 1 < S; t++) assertEquals(in[r][t + 1], out[r][t]);
        }
    }

    @Test
    void shardsOfAnyRankCountTileTheGlobalBatch() {
        SyntheticTasks source = new SyntheticTasks(5);
        for (long step : new long[] {0, 1, 17}) {
            Batch global = new DataLoader(source, B, S).batch(step);
            int[][] gIn = rows(global.inputs());
            int[][] gOut = rows(global.targets());
            for (int ranks : new int[] {1, 2, 4}) {
                int local = B / ranks;
                for (int r = 0; r < ranks; r++) {
                    Batch shard = new DataLoader(source, B, S, r, ranks).batch(step);
                    int[][] in = rows(shard.inputs());
                    int[][] out = rows(shard.targets());
                    assertEquals(local, in.length);
                    for (int i = 0; i < local; i++) {
                        assertArrayEquals(gIn[r * local + i], in[i], "ranks=" + ranks + " rank=" + r + " row=" + i);
                        assertArrayEquals(gOut[r * local + i], out[i]);
                    }
                }
            }
        }
    }

    @Test
    void consecutiveStepsAndRowsAreDifferentWindows() {
        DataLoader loader = new DataLoader(new SyntheticTasks(9), B, S);
        int[][] first = rows(loader.next().inputs());
        int[][] second = rows(loader.next().inputs());
        long distinct = java.util.stream.Stream.concat(Arrays.stream(first), Arrays.stream(second))
                .map(Arrays::toString).distinct().count();
        assertEquals(2 * B, distinct);
    }

    @Test
    void seekResumesWithIdenticalBatches() {
        DataLoader run = new DataLoader(new SyntheticTasks(2), B, S, 1, 2);
        for (int i = 0; i < 3; i++) run.next();
        long checkpoint = run.position();
        int[][] expected = new int[4][];
        for (int i = 0; i < 4; i++) expected[i] = run.next().inputs().toIntArray();

        DataLoader resumed = new DataLoader(new SyntheticTasks(2), B, S, 1, 2);
        resumed.seek(checkpoint);
        for (int i = 0; i < 4; i++) {
            Batch b = resumed.next();
            assertEquals(checkpoint + i, b.step());
            assertArrayEquals(expected[i], b.inputs().toIntArray());
        }
        assertEquals(checkpoint + 4, resumed.position());
    }

    @Test
    void batchTensorsLiveInTheCurrentScope() {
        DataLoader loader = new DataLoader(new SyntheticTasks(1), B, S);
        Batch b;
        try (MemoryScope scope = MemoryScope.open()) {
            b = loader.next();
            assertTrue(b.inputs().getInt(0) < 5, "a window starts with its task marker");
        }
        Batch closed = b;
        assertThrows(IllegalStateException.class, () -> closed.inputs().getInt(0));
    }

    @Test
    void globalBatchNotDivisibleByRanksIsRefused() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new DataLoader(new SyntheticTasks(1), 6, S, 0, 4));
        assertTrue(e.getMessage().contains("global batch 6") && e.getMessage().contains("4 data-parallel ranks"),
                e.getMessage());
    }

    @Test
    void badRankBatchSeqLenAndStepAreRefused() {
        SyntheticTasks s = new SyntheticTasks(1);
        assertThrows(IllegalArgumentException.class, () -> new DataLoader(s, 8, S, 4, 4));
        assertThrows(IllegalArgumentException.class, () -> new DataLoader(s, 8, S, -1, 4));
        assertThrows(IllegalArgumentException.class, () -> new DataLoader(s, 0, S));
        assertThrows(IllegalArgumentException.class, () -> new DataLoader(s, 8, 0));
        assertThrows(IllegalArgumentException.class, () -> new DataLoader(s, 8, S).seek(-1));
    }
}
