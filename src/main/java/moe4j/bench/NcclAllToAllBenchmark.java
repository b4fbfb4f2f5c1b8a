package moe4j.bench;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.Work;
import moe4j.distributed.launch.Backend;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;

/**
 * NCCL all-to-all bandwidth on the GPUs of this machine, one rank thread per GPU, measured the way the
 * peer's {@code nccl_a2a.py} measures {@code all_to_all_single}: equal splits, 5 warm-up exchanges, then 20
 * back to back on the stream and one wait, bandwidth counted as the bytes a rank sends to the other ranks
 * (its own share excluded) per second, in GiB/s.
 *
 * <p>Before the first size, each rank makes {@code hostWarmup} exchanges of one 4 KiB row per peer. The
 * peer's host path is compiled C++ from its first call; a JVM runs a method's first few hundred calls in
 * its interpreter (and compiles it only after thousands), where every foreign call costs microseconds
 * and queuing one exchange can take tens of them, close to the ~70 µs of a 16 MiB exchange on NVLink. The
 * 5 warm-ups and 20 timed calls of each size alone would time that interpreter rather than the
 * all-to-all a long job makes; with {@code hostWarmup} 0 they do. The time rank 0 spent queuing the timed
 * calls is reported beside the result: when it approaches the time per exchange, the host, not the link,
 * set the pace.
 */
public final class NcclAllToAllBenchmark {
    private static final Duration TIMEOUT = Duration.ofSeconds(120);
    private static final int WARMUP = 5;
    private static final int ITERATIONS = 20;
    /** Row width in 4-byte elements: 4 KiB rows. */
    private static final int ROW = 1024;

    private NcclAllToAllBenchmark() {}

    /**
     * One size: milliseconds per exchange, GiB/s sent to peers per rank, and microseconds rank 0's thread
     * spent queuing each timed exchange (rank 0's clock).
     */
    public record Result(int ranks, long mibPerRank, double millis, double gibPerSecondSentPerRank, double hostMicrosPerCall) {}

    public static List<Result> measure(int ranks, List<Integer> mibs, int hostWarmup) {
        if (hostWarmup < 0) throw new IllegalArgumentException("nccl all-to-all: host warm-up " + hostWarmup + " must be 0 or more exchanges");
        List<List<Result>> all = Backend.NCCL.run(ranks, TIMEOUT, g -> {
            warmHostPath(g, hostWarmup);
            List<Result> out = new ArrayList<>();
            for (int mib : mibs) out.add(one(g, mib));
            return out;
        });
        return all.get(0);
    }

    /** {@code calls} exchanges of one row per peer through the same calls as the timed ones. */
    private static void warmHostPath(ProcessGroup g, int calls) {
        if (calls == 0) return;
        int p = g.size();
        int[] splits = new int[p];
        Arrays.fill(splits, 1);
        Device gpu = Device.cuda(g.rank());
        try (MemoryScope _ = MemoryScope.open()) {
            Tensor in = Tensor.zeros(gpu, DType.F32, p, ROW);
            Tensor out = Tensor.zeros(gpu, DType.F32, p, ROW);
            for (int i = 0; i < calls; i++) g.allToAllSingleAsync(out, in, splits, splits).await();
        }
    }

    private static Result one(ProcessGroup g, int mib) {
        int p = g.size();
        int rows = (int) (((long) mib << 20) / (4L * ROW));
        if (rows % p != 0) throw new IllegalArgumentException("nccl all-to-all: " + mib + " MiB is not " + p + " equal parts of 4 KiB rows");
        int[] splits = new int[p];
        Arrays.fill(splits, rows / p);
        Device gpu = Device.cuda(g.rank());
        try (MemoryScope _ = MemoryScope.open()) {
            Tensor in = Tensor.zeros(gpu, DType.F32, rows, ROW);
            Tensor out = Tensor.zeros(gpu, DType.F32, rows, ROW);
            for (int i = 0; i < WARMUP; i++) g.allToAllSingle(out, in, splits, splits);
            g.barrier();
            long start = System.nanoTime();
            Work last = null;
            for (int i = 0; i < ITERATIONS; i++) last = g.allToAllSingleAsync(out, in, splits, splits);
            long queued = System.nanoTime();
            last.await();
            double seconds = (System.nanoTime() - start) / 1e9 / ITERATIONS;
            double sentGib = mib * (p - 1.0) / p / 1024;
            return new Result(p, mib, seconds * 1e3, sentGib / seconds, (queued - start) / 1e3 / ITERATIONS);
        }
    }
}
