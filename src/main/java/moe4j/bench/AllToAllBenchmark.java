package moe4j.bench;

import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.Arrays;
import moe4j.distributed.Distributed;
import moe4j.distributed.ProcessGroup;
import moe4j.tensor.DType;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;

/**
 * How fast the in-JVM all-to-all moves data, next to the ceiling measured in the same run: the same
 * number of threads each doing one {@code MemorySegment.copy} of the same volume at once. The two
 * alternate, iteration by iteration, on the same rank threads and buffers, so both see the same
 * machine (on a shared machine the load changes from second to second). Also the latency of the
 * small exchanges every MoE layer makes (the per-expert counts, one row per peer).
 */
public final class AllToAllBenchmark {
    /** Row width of the throughput test, in floats: 4 KiB rows, like a token of a D = 1024 model. */
    private static final int ROW_FLOATS = 1024;
    private static final Duration TIMEOUT = Duration.ofSeconds(120);

    private AllToAllBenchmark() {}

    /**
     * Throughput of one all-to-all round on {@code ranks} ranks, each sending {@code bytesPerRank}
     * bytes split evenly over all ranks (itself included). Times are the best of {@code iterations}.
     */
    public record Throughput(int ranks, long bytesPerRank, int iterations, double allToAllSeconds,
            double allToAllBytesPerSecondPerRank, double allToAllBytesPerSecondSummed, double copySeconds,
            double copyBytesPerSecondSummed, double fractionOfCeiling) {}

    /** Mean time of one small exchange on {@code ranks} ranks over {@code iterations} back-to-back calls. */
    public record Latency(int ranks, int iterations, double countExchangeMicros, double smallRowAllToAllMicros) {}

    public static Throughput throughput(int ranks, long bytesPerRank, int iterations) {
        long rows = bytesPerRank / (ROW_FLOATS * 4L);
        if (rows < ranks) throw new IllegalArgumentException("alltoall: " + bytesPerRank + " bytes per rank is less than one row per peer");
        long bytes = rows * ROW_FLOATS * 4L;
        int[] splits = new int[ranks];
        for (int j = 0; j < ranks; j++) splits[j] = (int) (rows / ranks + (j < rows % ranks ? 1 : 0));
        long[][] starts = new long[ranks][iterations];
        long[][] ends = new long[ranks][iterations];
        long[][] copyStarts = new long[ranks][iterations];
        long[][] copyEnds = new long[ranks][iterations];
        Distributed.run(ranks, TIMEOUT, g -> {
            try (MemoryScope _ = MemoryScope.open()) {
                Tensor in = Tensor.zeros(DType.F32, (int) rows, ROW_FLOATS);
                Tensor out = Tensor.zeros(DType.F32, (int) rows, ROW_FLOATS);
                in.data().fill((byte) 1);
                for (int w = 0; w < 2; w++) {
                    g.allToAllSingle(out, in, splits, splits);
                    MemorySegment.copy(in.data(), 0, out.data(), 0, bytes);
                }
                int r = g.rank();
                for (int it = 0; it < iterations; it++) {
                    g.barrier();
                    starts[r][it] = System.nanoTime();
                    g.allToAllSingle(out, in, splits, splits);
                    ends[r][it] = System.nanoTime();
                    g.barrier();
                    copyStarts[r][it] = System.nanoTime();
                    MemorySegment.copy(in.data(), 0, out.data(), 0, bytes);
                    copyEnds[r][it] = System.nanoTime();
                }
            }
            return null;
        });
        double a2a = bestSpan(starts, ends);
        double copy = bestSpan(copyStarts, copyEnds);
        double perRank = bytes / a2a;
        return new Throughput(ranks, bytes, iterations, a2a, perRank, perRank * ranks, copy, bytes * ranks / copy,
                copy / a2a);
    }

    /** The best, over iterations, of the time from the first thread's start to the last thread's end. */
    private static double bestSpan(long[][] starts, long[][] ends) {
        double best = Double.MAX_VALUE;
        for (int it = 0; it < starts[0].length; it++) {
            long first = Long.MAX_VALUE;
            long last = Long.MIN_VALUE;
            for (int r = 0; r < starts.length; r++) {
                first = Math.min(first, starts[r][it]);
                last = Math.max(last, ends[r][it]);
            }
            best = Math.min(best, (last - first) * 1e-9);
        }
        return best;
    }

    /**
     * Latency of the exchanges each MoE layer makes: the per-expert counts ({@code allToAll} of
     * {@code chunk = 8} ints per peer) and an all-to-all of one row of 8 floats per peer. The best of
     * five rounds of {@code iterations} calls each.
     */
    public static Latency latency(int ranks, int iterations) {
        return Distributed.run(ranks, TIMEOUT, g -> {
            // warm up the same calls, so that the rounds time compiled code
            smallExchanges(g, iterations, 1);
            return smallExchanges(g, iterations, 5);
        }).get(0);
    }

    /**
     * The best of {@code rounds} rounds of {@code iterations} back-to-back count exchanges and one-row
     * all-to-alls, in µs per call, on any backend's group (a collective over {@code g}).
     */
    public static Latency smallExchanges(ProcessGroup g, int iterations, int rounds) {
        int p = g.size();
        int chunk = 8;
        int[] counts = new int[p * chunk];
        Arrays.fill(counts, g.rank());
        int[] ones = new int[p];
        Arrays.fill(ones, 1);
        double bestCounts = Double.MAX_VALUE;
        double bestRows = Double.MAX_VALUE;
        try (MemoryScope _ = MemoryScope.open()) {
            Tensor in = Tensor.zeros(p, 8);
            Tensor out = Tensor.zeros(p, 8);
            for (int round = 0; round < rounds; round++) {
                g.barrier();
                long t0 = System.nanoTime();
                for (int i = 0; i < iterations; i++) g.allToAll(counts, chunk);
                long t1 = System.nanoTime();
                g.barrier();
                long t2 = System.nanoTime();
                for (int i = 0; i < iterations; i++) g.allToAllSingle(out, in, ones, ones);
                long t3 = System.nanoTime();
                bestCounts = Math.min(bestCounts, (t1 - t0) * 1e-3 / iterations);
                bestRows = Math.min(bestRows, (t3 - t2) * 1e-3 / iterations);
            }
        }
        return new Latency(p, iterations, bestCounts, bestRows);
    }
}
