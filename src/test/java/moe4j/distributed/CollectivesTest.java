package moe4j.distributed;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import moe4j.tensor.DType;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Every collective of the in-JVM backend against references computed here, for several world sizes. */
class CollectivesTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(20);

    /** The value every test puts at element (row, col) of rank {@code rank}'s input: exact in float32 and int32. */
    private static int value(int rank, int row, int col) {
        return rank * 100_000 + row * 100 + col % 100;
    }

    private static Tensor filled(DType dtype, int rank, int rows, int width) {
        Tensor t = Tensor.zeros(dtype, rows, width);
        for (int i = 0; i < rows; i++) {
            for (int c = 0; c < width; c++) {
                if (dtype == DType.F32) t.set(i, c, value(rank, i, c));
                else t.setInt((long) i * width + c, value(rank, i, c));
            }
        }
        return t;
    }

    /** Rows rank s sends to rank r: uneven, with zeros, different for each seed. */
    private static int[][] splitMatrix(int p, int seed) {
        int[][] s = new int[p][p];
        for (int a = 0; a < p; a++) {
            for (int b = 0; b < p; b++) s[a][b] = (a * 7 + b * 3 + seed) % 4;
        }
        return s;
    }

    private static int sum(int[] a) {
        int s = 0;
        for (int x : a) s += x;
        return s;
    }

    // ---------------------------------------------------------------- all-to-all

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 3, 4, 8})
    void allToAllSingleDeliversEveryPeersRowsInRankOrder(int p) {
        for (DType dtype : new DType[] {DType.F32, DType.I32}) {
            for (int k = 0; k < 3; k++) {
                int seed = k;
                int[][] splits = splitMatrix(p, seed);
                int width = 3 + seed;
                Distributed.run(p, TIMEOUT, g -> {
                    int r = g.rank();
                    try (MemoryScope _ = MemoryScope.open()) {
                        int[] inSplits = splits[r];
                        int[] outSplits = new int[p];
                        for (int s = 0; s < p; s++) outSplits[s] = splits[s][r];
                        Tensor in = filled(dtype, r, sum(inSplits), width);
                        Tensor out = Tensor.zeros(dtype, sum(outSplits), width);
                        g.allToAllSingle(out, in, outSplits, inSplits);
                        Tensor expected = expectedAllToAll(dtype, splits, r, width);
                        assertEquals(-1, expected.data().mismatch(out.data()), "rank " + r + " " + dtype + " seed " + seed);
                    }
                    return null;
                });
            }
        }
    }

    /** What rank r must receive: from each sender s in order, the rows s addressed to r. */
    private static Tensor expectedAllToAll(DType dtype, int[][] splits, int r, int width) {
        int p = splits.length;
        int total = 0;
        for (int s = 0; s < p; s++) total += splits[s][r];
        Tensor expected = Tensor.zeros(dtype, total, width);
        int row = 0;
        for (int s = 0; s < p; s++) {
            int first = 0;
            for (int q = 0; q < r; q++) first += splits[s][q];
            for (int i = 0; i < splits[s][r]; i++, row++) {
                for (int c = 0; c < width; c++) {
                    int v = value(s, first + i, c);
                    if (dtype == DType.F32) expected.set(row, c, v);
                    else expected.setInt((long) row * width + c, v);
                }
            }
        }
        return expected;
    }

    @Test
    void allToAllSingleMovesLargeRows() {
        int width = 1 << 20; // 4 MiB rows
        for (int p : new int[] {2, 3}) {
            int[][] splits = {{1, 2, 0}, {0, 1, 1}, {2, 0, 1}};
            Distributed.run(p, TIMEOUT, g -> {
                int r = g.rank();
                try (MemoryScope _ = MemoryScope.open()) {
                    int[] inSplits = new int[p];
                    int[] outSplits = new int[p];
                    for (int s = 0; s < p; s++) {
                        inSplits[s] = splits[r][s];
                        outSplits[s] = splits[s][r];
                    }
                    Tensor in = filled(DType.F32, r, sum(inSplits), width);
                    Tensor out = Tensor.zeros(sum(outSplits), width);
                    g.allToAllSingle(out, in, outSplits, inSplits);
                    int[][] sub = new int[p][p];
                    for (int a = 0; a < p; a++) for (int b = 0; b < p; b++) sub[a][b] = splits[a][b];
                    assertEquals(-1, expectedAllToAll(DType.F32, sub, r, width).data().mismatch(out.data()));
                }
                return null;
            });
        }
    }

    @Test
    void allToAllSingleMixingSmallAndLargeSenders() {
        // rank 0 sends little (a private copy), rank 1 lends its large buffer: both must wait for the readers
        int width = 8192;
        int[][] splits = {{1, 0}, {3, 1}};
        for (int round = 0; round < 3; round++) {
            Distributed.run(2, TIMEOUT, g -> {
                int r = g.rank();
                int[] inSplits = splits[r];
                int[] outSplits = {splits[0][r], splits[1][r]};
                try (MemoryScope _ = MemoryScope.open()) {
                    Tensor in = filled(DType.I32, r, sum(inSplits), width);
                    Tensor out = Tensor.zeros(DType.I32, sum(outSplits), width);
                    g.allToAllSingle(out, in, outSplits, inSplits);
                    assertEquals(-1, expectedAllToAll(DType.I32, splits, r, width).data().mismatch(out.data()));
                }
                return null;
            });
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 3, 4, 8})
    void allToAllSingleOfEmptyTensors(int p) {
        Distributed.run(p, TIMEOUT, g -> {
            try (MemoryScope _ = MemoryScope.open()) {
                Tensor in = Tensor.zeros(0, 7);
                Tensor out = Tensor.zeros(0, 7);
                g.allToAllSingle(out, in, new int[p], new int[p]);
                assertEquals(0, out.rowCount());
            }
            return null;
        });
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 3, 4, 8})
    void allToAllOfCountsTransposesChunks(int p) {
        for (int chunk : new int[] {0, 1, 3}) {
            List<int[]> got = Distributed.run(p, TIMEOUT, g -> {
                int[] send = new int[p * chunk];
                for (int j = 0; j < p; j++) for (int c = 0; c < chunk; c++) send[j * chunk + c] = g.rank() * 1000 + j * 10 + c;
                return g.allToAll(send, chunk);
            });
            for (int r = 0; r < p; r++) {
                int[] expected = new int[p * chunk];
                for (int j = 0; j < p; j++) for (int c = 0; c < chunk; c++) expected[j * chunk + c] = j * 1000 + r * 10 + c;
                assertArrayEquals(expected, got.get(r), "rank " + r + " chunk " + chunk);
            }
        }
    }

    // ---------------------------------------------------------------- reductions

    private static float[] randomFloats(int rank, int n) {
        Rng rng = new Rng(1234 + rank);
        float[] f = new float[n];
        for (int i = 0; i < n; i++) f[i] = (float) rng.nextGaussian();
        return f;
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 3, 4, 8})
    void allReduceFloatsInRankOrderBitIdenticalEverywhere(int p) {
        for (int[] shape : new int[][] {{37, 5}, {0, 3}, {1}, {4097}, {3 * 4096 + 17}}) {
            for (ReduceOp op : ReduceOp.values()) {
                int n = shape.length == 1 ? shape[0] : shape[0] * shape[1];
                List<float[]> got = Distributed.run(p, TIMEOUT, g -> {
                    try (MemoryScope _ = MemoryScope.open()) {
                        Tensor t = Tensor.of(randomFloats(g.rank(), n), shape);
                        g.allReduce(t, op);
                        return t.toFloatArray();
                    }
                });
                // reference: the rank-order float32 reduction, and a float64 sum to bound its rounding
                float[] expected = randomFloats(0, n);
                double[] exact = new double[n];
                for (int i = 0; i < n; i++) exact[i] = expected[i];
                for (int r = 1; r < p; r++) {
                    float[] x = randomFloats(r, n);
                    for (int i = 0; i < n; i++) {
                        expected[i] = op == ReduceOp.MAX ? Math.max(expected[i], x[i]) : expected[i] + x[i];
                        exact[i] = op == ReduceOp.MAX ? Math.max(exact[i], x[i]) : exact[i] + x[i];
                    }
                }
                if (op == ReduceOp.AVG) {
                    for (int i = 0; i < n; i++) {
                        expected[i] /= p;
                        exact[i] /= p;
                    }
                }
                for (int r = 0; r < p; r++) {
                    assertArrayEquals(expected, got.get(r), 0f, "rank " + r + " " + op + " n=" + n);
                    for (int i = 0; i < n; i++) assertEquals(exact[i], got.get(r)[i], 1e-5 * p);
                }
            }
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 3, 4, 8})
    void allReduceInts(int p) {
        for (ReduceOp op : new ReduceOp[] {ReduceOp.SUM, ReduceOp.MAX}) {
            int n = 2 * 4096 + 5;
            List<int[]> got = Distributed.run(p, TIMEOUT, g -> {
                try (MemoryScope _ = MemoryScope.open()) {
                    int[] v = new int[n];
                    for (int i = 0; i < n; i++) v[i] = (i * 31 + g.rank() * 17) % 1000 - 500;
                    Tensor t = Tensor.ofInts(v, n);
                    g.allReduce(t, op);
                    return t.toIntArray();
                }
            });
            for (int i = 0; i < n; i++) {
                long s = 0;
                int m = Integer.MIN_VALUE;
                for (int r = 0; r < p; r++) {
                    int v = (i * 31 + r * 17) % 1000 - 500;
                    s += v;
                    m = Math.max(m, v);
                }
                for (int r = 0; r < p; r++) assertEquals(op == ReduceOp.SUM ? s : m, got.get(r)[i], "element " + i);
            }
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 3, 4, 8})
    void reduceScatterGivesEachRankItsReducedChunk(int p) {
        int width = 3;
        for (int m : new int[] {0, 5, 2000}) {
            for (ReduceOp op : ReduceOp.values()) {
                List<float[]> got = Distributed.run(p, TIMEOUT, g -> {
                    try (MemoryScope _ = MemoryScope.open()) {
                        Tensor in = Tensor.of(randomFloats(g.rank(), p * m * width), p * m, width);
                        Tensor out = Tensor.zeros(m, width);
                        g.reduceScatter(out, in, op);
                        return out.toFloatArray();
                    }
                });
                for (int r = 0; r < p; r++) {
                    float[] expected = new float[m * width];
                    for (int s = 0; s < p; s++) {
                        float[] x = randomFloats(s, p * m * width);
                        for (int i = 0; i < m * width; i++) {
                            float v = x[r * m * width + i];
                            expected[i] = s == 0 ? v : op == ReduceOp.MAX ? Math.max(expected[i], v) : expected[i] + v;
                        }
                    }
                    if (op == ReduceOp.AVG) for (int i = 0; i < m * width; i++) expected[i] /= p;
                    assertArrayEquals(expected, got.get(r), 0f, "rank " + r + " " + op + " m=" + m);
                }
            }
        }
    }

    @Test
    void reduceScatterOfInts() {
        int p = 3;
        List<int[]> got = Distributed.run(p, TIMEOUT, g -> {
            int[] v = new int[p * 4];
            for (int i = 0; i < v.length; i++) v[i] = i * (g.rank() + 1) - 5 * g.rank();
            Tensor out = Tensor.zeros(DType.I32, 4);
            g.reduceScatter(out, Tensor.ofInts(v, p * 4), ReduceOp.MAX);
            return out.toIntArray();
        });
        for (int r = 0; r < p; r++) {
            int[] expected = new int[4];
            for (int i = 0; i < 4; i++) {
                int e = Integer.MIN_VALUE;
                for (int s = 0; s < p; s++) e = Math.max(e, (r * 4 + i) * (s + 1) - 5 * s);
                expected[i] = e;
            }
            assertArrayEquals(expected, got.get(r), "rank " + r);
        }
    }

    // ---------------------------------------------------------------- gathers, broadcast, barrier

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 3, 4, 8})
    void allGatherConcatenatesUnevenRowsInRankOrder(int p) {
        for (DType dtype : new DType[] {DType.F32, DType.I32}) {
            int width = 4;
            int total = 0;
            for (int r = 0; r < p; r++) total += r % 3;
            int rows = total;
            List<Tensor> got = Distributed.run(p, TIMEOUT, g -> {
                Tensor in = filled(dtype, g.rank(), g.rank() % 3, width);
                Tensor out = Tensor.zeros(dtype, rows, width);
                g.allGather(out, in);
                return out;
            });
            Tensor expected = Tensor.zeros(dtype, rows, width);
            long offset = 0;
            for (int r = 0; r < p; r++) {
                MemorySegment part = filled(dtype, r, r % 3, width).data();
                MemorySegment.copy(part, 0, expected.data(), offset, part.byteSize());
                offset += part.byteSize();
            }
            for (int r = 0; r < p; r++) assertEquals(-1, expected.data().mismatch(got.get(r).data()), "rank " + r);
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 3, 4, 8})
    void broadcastCopiesTheRootsTensor(int p) {
        for (DType dtype : new DType[] {DType.F32, DType.I32}) {
            int root = p - 1;
            List<Tensor> got = Distributed.run(p, TIMEOUT, g -> {
                Tensor t = filled(dtype, g.rank(), 6, 5);
                g.broadcast(t, root);
                return t;
            });
            Tensor expected = filled(dtype, root, 6, 5);
            for (int r = 0; r < p; r++) assertEquals(-1, expected.data().mismatch(got.get(r).data()), "rank " + r);
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 3, 4, 8})
    void barrierWaitsForEveryRank(int p) {
        AtomicInteger arrivedBefore = new AtomicInteger();
        List<Integer> seen = Distributed.run(p, TIMEOUT, g -> {
            if (g.rank() == p - 1) Thread.sleep(50); // the last rank is late
            arrivedBefore.incrementAndGet();
            g.barrier();
            return arrivedBefore.get();
        });
        for (int s : seen) assertEquals(p, s);
    }

    @Test
    void asynchronousCollectivesCompleteInOrderAndBeforeLaterBlockingOnes() {
        int p = 4;
        Distributed.run(p, TIMEOUT, g -> {
            int r = g.rank();
            int[][] splits = splitMatrix(p, 1);
            int[] inSplits = splits[r];
            int[] outSplits = new int[p];
            for (int s = 0; s < p; s++) outSplits[s] = splits[s][r];
            List<Work> works = new ArrayList<>();
            List<Tensor> outs = new ArrayList<>();
            List<Tensor> sums = new ArrayList<>();
            for (int k = 0; k < 3; k++) {
                Tensor in = filled(DType.F32, r, sum(inSplits), 4);
                Tensor out = Tensor.zeros(sum(outSplits), 4);
                outs.add(out);
                works.add(g.allToAllSingleAsync(out, in, outSplits, inSplits));
                Tensor s = Tensor.full(r + k, 3);
                sums.add(s);
                works.add(g.allReduceAsync(s, ReduceOp.SUM));
            }
            g.barrier(); // runs after the queued ones
            for (Work w : works) assertTrue(w.isDone());
            for (Work w : works) w.await();
            Tensor expected = expectedAllToAll(DType.F32, splits, r, 4);
            for (Tensor out : outs) assertEquals(-1, expected.data().mismatch(out.data()));
            for (int k = 0; k < 3; k++) assertEquals(p * (p - 1) / 2f + p * k, sums.get(k).get(0));
            return null;
        });
    }

    @Test
    void anAsynchronousAllGatherFillsItsOutputByAwaitAndLaterCollectivesWaitForIt() {
        int p = 4;
        Distributed.run(p, TIMEOUT, g -> {
            int r = g.rank();
            int[] rows = {2, 0, 3, 1}; // uneven, with a rank that sends nothing
            Tensor in = filled(DType.F32, r, rows[r], 5);
            Tensor out = Tensor.zeros(sum(rows), 5);
            Tensor second = Tensor.zeros(sum(rows), 5);
            Work first = g.allGatherAsync(out, in);
            Work next = g.allGatherAsync(second, in);
            Tensor s = Tensor.full(r, 1);
            g.allReduce(s, ReduceOp.SUM); // a blocking collective starts after the queued ones
            assertTrue(first.isDone() && next.isDone());
            first.await();
            next.await();
            assertEquals(p * (p - 1) / 2f, s.get(0));
            int row = 0;
            for (int q = 0; q < p; q++) {
                for (int i = 0; i < rows[q]; i++, row++) {
                    for (int c = 0; c < 5; c++) {
                        assertEquals(value(q, i, c), out.get(row, c), "row " + row + " col " + c);
                        assertEquals(value(q, i, c), second.get(row, c), "row " + row + " col " + c);
                    }
                }
            }
            return null;
        });
    }

    @Test
    void aSingleRankGroupWorksOnTheCallersThread() {
        ProcessGroup g = Distributed.singleRank();
        assertEquals(0, g.rank());
        assertEquals(1, g.size());
        assertArrayEquals(new int[] {0}, g.globalRanks());
        Tensor t = Tensor.of(new float[] {1, 2, 3}, 3);
        g.allReduce(t, ReduceOp.AVG);
        assertArrayEquals(new float[] {1, 2, 3}, t.toFloatArray());
        Tensor out = Tensor.zeros(3);
        g.allToAllSingle(out, t, new int[] {3}, new int[] {3});
        assertArrayEquals(new float[] {1, 2, 3}, out.toFloatArray());
        assertArrayEquals(new int[] {7, 8}, g.allToAll(new int[] {7, 8}, 2));
        g.barrier();
    }

    @Test
    void resultsComeBackInRankOrderOnNamedThreads() {
        List<String> names = Distributed.run(3, g -> g.rank() + ":" + Thread.currentThread().getName());
        assertEquals(List.of("0:moe4j-rank-0", "1:moe4j-rank-1", "2:moe4j-rank-2"), names);
    }
}
