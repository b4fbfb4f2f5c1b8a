package moe4j.bench;

import java.time.Duration;
import java.util.ArrayList;
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
 */
public final class NcclAllToAllBenchmark {
    private static final Duration TIMEOUT = Duration.ofSeconds(120);
    private static final int WARMUP = 5;
    private static final int ITERATIONS = 20;
    /** Row width in 4-byte elements: 4 KiB rows. */
    private static final int ROW = 1024;

    private NcclAllToAllBenchmark() {}

    /** One size: milliseconds per exchange and GiB/s sent to peers per rank (rank 0's clock). */
    public record Result(int ranks, long mibPerRank, double millis, double gibPerSecondSentPerRank) {}

    public static List<Result> measure(int ranks, List<Integer> mibs) {
        List<List<Result>> all = Backend.NCCL.run(ranks, TIMEOUT, g -> {
            List<Result> out = new ArrayList<>();
            for (int mib : mibs) out.add(one(g, mib));
            return out;
        });
        return all.get(0);
    }

    private static Result one(ProcessGroup g, int mib) {
        int p = g.size();
        int rows = (int) (((long) mib << 20) / (4L * ROW));
        if (rows % p != 0) throw new IllegalArgumentException("nccl all-to-all: " + mib + " MiB is not " + p + " equal parts of 4 KiB rows");
        int[] splits = new int[p];
        java.util.Arrays.fill(splits, rows / p);
        Device gpu = Device.cuda(g.rank());
        try (MemoryScope _ = MemoryScope.open()) {
            Tensor in = Tensor.zeros(gpu, DType.F32, rows, ROW);
            Tensor out = Tensor.zeros(gpu, DType.F32, rows, ROW);
            for (int i = 0; i < WARMUP; i++) g.allToAllSingle(out, in, splits, splits);
            g.barrier();
            long start = System.nanoTime();
            Work last = null;
            for (int i = 0; i < ITERATIONS; i++) last = g.allToAllSingleAsync(out, in, splits, splits);
            last.await();
            double seconds = (System.nanoTime() - start) / 1e9 / ITERATIONS;
            double sentGib = mib * (p - 1.0) / p / 1024;
            return new Result(p, mib, seconds * 1e3, sentGib / seconds);
        }
    }
}
