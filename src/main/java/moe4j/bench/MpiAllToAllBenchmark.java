package moe4j.bench;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.distributed.mpi.MpiRuntime;
import moe4j.tensor.DType;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;

/**
 * Throughput of the MPI backend's all-to-all: every rank sends S MiB split evenly over all ranks
 * (itself included) with {@link ProcessGroup#allToAllSingle}, in rows of 1024 floats. Each timed
 * iteration starts after a barrier and lasts until the slowest rank is done; the best and the median
 * are reported. {@code bench/alltoallv.c} makes the same exchange in C, for comparison
 * ({@code scripts/bench-mpi-alltoall.sh} runs both).
 *
 * <pre>mpirun -np P java ... moe4j.distributed.mpi.MpiAllToAllBenchmark ITERS MIB [MIB ...]</pre>
 *
 * Prints, on rank 0, one line per size: {@code java <P> <MiB> <best ms> <median ms> <GB/s per rank at best>}.
 */
public final class MpiAllToAllBenchmark {
    private static final int ROW_FLOATS = 1024;
    private static final int WARMUP_CALLS = 20_000;

    /** One measured size: milliseconds of the best and the median iteration, and the bytes each rank sent. */
    public record Result(int ranks, long mib, double bestMillis, double medianMillis, long bytesPerRank) {
        public double bestGigabytesPerSecondPerRank() {
            return bytesPerRank / (bestMillis * 1e-3) / 1e9;
        }
    }

    /** Mean microseconds of the small exchanges each MoE layer makes: 8 ints per peer, and one row of 8 floats per peer. */
    private MpiAllToAllBenchmark() {}

    public static void main(String[] args) {
        if (args.length < 2) {
            System.err.println("usage: MpiAllToAllBenchmark ITERS MIB [MIB ...]");
            System.exit(2);
        }
        int iterations = Integer.parseInt(args[0]);
        long[] mibs = Arrays.stream(args, 1, args.length).mapToLong(Long::parseLong).toArray();
        MpiRuntime.run(world -> {
            for (Result r : measure(world, iterations, mibs)) {
                if (world.rank() == 0) {
                    System.out.printf("java %d %d %.4f %.4f %.3f%n", r.ranks(), r.mib(), r.bestMillis(), r.medianMillis(),
                            r.bestGigabytesPerSecondPerRank());
                    System.out.flush();
                }
            }
            return null;
        });
    }

    /** Measures each size in {@code mibs} with {@code iterations} timed all-to-alls (a collective over {@code g}). */
    public static List<Result> measure(ProcessGroup g, int iterations, long... mibs) {
        int p = g.size();
        warmUp(g);
        List<Result> results = new ArrayList<>();
        for (long mib : mibs) {
            try (MemoryScope ignored = MemoryScope.open()) {
                int rows = (int) ((mib << 20) / (ROW_FLOATS * 4L));
                if (rows < p) throw new IllegalArgumentException("alltoall: " + mib + " MiB per rank is less than one row per peer");
                int[] splits = new int[p];
                for (int j = 0; j < p; j++) splits[j] = rows / p + (j < rows % p ? 1 : 0);
                Tensor in = Tensor.zeros(DType.F32, rows, ROW_FLOATS);
                Tensor out = Tensor.zeros(DType.F32, rows, ROW_FLOATS);
                in.data().fill((byte) 1);
                Tensor slowest = Tensor.zeros(1);
                for (int w = 0; w < 2; w++) g.allToAllSingle(out, in, splits, splits);
                double[] millis = new double[iterations];
                for (int it = 0; it < iterations; it++) {
                    g.barrier();
                    long t0 = System.nanoTime();
                    g.allToAllSingle(out, in, splits, splits);
                    slowest.set(0, (float) ((System.nanoTime() - t0) * 1e-6));
                    g.allReduce(slowest, ReduceOp.MAX);
                    millis[it] = slowest.get(0);
                }
                Arrays.sort(millis);
                results.add(new Result(p, mib, millis[0], millis[iterations / 2], (long) rows * ROW_FLOATS * 4));
            }
        }
        return results;
    }

    /** The best of five rounds of {@code iterations} back-to-back small exchanges (a collective over {@code g}). */
    public static AllToAllBenchmark.Latency latency(ProcessGroup g, int iterations) {
        warmUp(g);
        return AllToAllBenchmark.smallExchanges(g, iterations, 5);
    }

    /**
     * Runs the measured code path until the JIT has compiled it: the launcher runs without tiered
     * compilation, so the first few thousand calls are interpreted (FFM downcalls included), which
     * would dominate a millisecond-scale measurement.
     */
    private static boolean warm;

    private static void warmUp(ProcessGroup g) {
        if (warm) return;
        warm = true;
        int p = g.size();
        int[] ones = new int[p];
        Arrays.fill(ones, 1);
        try (MemoryScope ignored = MemoryScope.open()) {
            Tensor in = Tensor.zeros(p, 8);
            Tensor out = Tensor.zeros(p, 8);
            Tensor slowest = Tensor.zeros(1);
            for (int i = 0; i < WARMUP_CALLS; i++) {
                g.barrier();
                g.allToAllSingle(out, in, ones, ones);
                g.allReduce(slowest, ReduceOp.MAX);
            }
        }
    }
}
