package moe4j.kernels.cpu;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import moe4j.kernels.ExecutionContext;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;

/**
 * GFLOP/s of moe4j's {@link Gemm} and {@link GroupedGemm} next to OpenBLAS ({@link OpenBlas}) on the same
 * data in the same JVM run.
 *
 * <p>Shapes are written M×K·K×N: op(A) is M×K, op(B) is K×N, C is M×N, and a multiply counts 2·M·N·K
 * flops. Each shape runs in the three layouts training uses: A·B (forward), A·Bᵀ (input gradient) and
 * Aᵀ·B (weight gradient); the stored operands are transposed so op(A), op(B) keep the stated shapes.
 *
 * <p>Timing is warm: a few untimed runs first (the JIT compiles the kernels), then the best of several
 * timed runs, moe4j and OpenBLAS alternating so that a busy machine slows both alike. With one thread the
 * clock is the thread's CPU time, so time the OS gives to other processes on a shared machine does not
 * count; with several threads it is wall time.
 */
public final class GemmBenchmark {
    private GemmBenchmark() {}

    /** One plain GEMM: shape, layout and the speed of both implementations (NaN: OpenBLAS absent). */
    public record GemmResult(String layout, int m, int k, int n, double moe4jGflops, double openblasGflops) {
        public String shape() {
            return m + "x" + k + "·" + k + "x" + n;
        }

        public double ratio() {
            return moe4jGflops / openblasGflops;
        }
    }

    /**
     * One ragged grouped GEMM over all experts: {@code op} is forward (X·W_g), inputGrad (dY·W_gᵀ) or
     * weightGrad (X_gᵀ·dY_g); OpenBLAS runs the same groups with one cblas_sgemm call each.
     */
    public record GroupedResult(String op, int[] groupRows, int d, int h, double moe4jGflops, double openblasGflops) {
        public double ratio() {
            return moe4jGflops / openblasGflops;
        }
    }

    public record Report(int threads, String clock, boolean openblasAvailable, String openblasNote,
                         List<GemmResult> gemm, List<GroupedResult> grouped) {
        /** The moe4j speed of the 1024×4096·4096×1024 A·B product, the JIT-health number. */
        public double headlineGflops() {
            return gemm.stream().filter(r -> r.m() == 1024 && r.layout().equals("A·B"))
                    .mapToDouble(GemmResult::moe4jGflops).findFirst().orElse(Double.NaN);
        }
    }

    /** The plain GEMM shapes as {M, K, N}. */
    public static final int[][] SHAPES = {{1024, 4096, 1024}, {512, 1024, 2816}, {512, 2816, 1024}};
    /** Rows per expert of the grouped benchmark: 8 experts, uneven, 10..300 rows, 1024 in all. */
    public static final int[] GROUP_ROWS = {10, 300, 45, 170, 80, 260, 25, 134};
    public static final int D = 1024, H = 2816;
    private static final String[] LAYOUTS = {"A·B", "A·Bᵀ", "Aᵀ·B"};

    /**
     * Runs every benchmark with the given thread count for both libraries; {@code quick} does fewer
     * repetitions (a smoke test, numbers noisier).
     */
    public static Report run(int threads, boolean quick) {
        int warmups = quick ? 2 : 4, reps = quick ? 3 : 8;
        threadCpuClock = threads == 1 && THREADS.isCurrentThreadCpuTimeSupported();
        if (threadCpuClock && !THREADS.isThreadCpuTimeEnabled()) THREADS.setThreadCpuTimeEnabled(true);
        boolean blas = OpenBlas.isAvailable();
        if (blas) OpenBlas.setThreads(threads);
        try (ExecutionContext ctx = ExecutionContext.enter(Device.CPU, threads); Arena arena = Arena.ofShared()) {
            List<GemmResult> gemm = new ArrayList<>();
            for (int[] s : SHAPES) {
                for (int layout = 0; layout < LAYOUTS.length; layout++) {
                    gemm.add(runGemm(arena, LAYOUTS[layout], layout == 2, layout == 1, s[0], s[1], s[2], blas, warmups, reps));
                }
            }
            List<GroupedResult> grouped = runGrouped(arena, blas, warmups, reps);
            return new Report(threads, threadCpuClock ? "thread CPU time" : "wall time", blas, blas ? null : OpenBlas.unavailableReason(), gemm, grouped);
        } finally {
            if (blas) OpenBlas.setThreads(1);
        }
    }

    private static GemmResult runGemm(Arena arena, String name, boolean ta, boolean tb, int m, int k, int n,
                                      boolean blas, int warmups, int reps) {
        Rng rng = new Rng(m * 31L + k * 7L + n);
        MemorySegment a = random(arena, rng, (long) m * k);
        MemorySegment b = random(arena, rng, (long) k * n);
        MemorySegment c = arena.allocate((long) m * n * Float.BYTES, 64);
        int lda = ta ? m : k, ldb = tb ? k : n;
        double flops = 2.0 * m * n * k;
        Runnable ours = () -> Gemm.sgemm(ta, tb, m, n, k, 1f, a, 0, lda, b, 0, ldb, 0f, c, 0, n);
        Runnable theirs = blas ? () -> OpenBlas.sgemm(ta, tb, m, n, k, 1f, a, 0, lda, b, 0, ldb, 0f, c, 0, n) : null;
        double[] best = bestOf(ours, theirs, warmups, reps);
        return new GemmResult(name, m, k, n, flops / best[0] / 1e9, blas ? flops / best[1] / 1e9 : Double.NaN);
    }

    private static List<GroupedResult> runGrouped(Arena arena, boolean blas, int warmups, int reps) {
        int e = GROUP_ROWS.length;
        int[] off = new int[e + 1];
        for (int g = 0; g < e; g++) off[g + 1] = off[g] + GROUP_ROWS[g];
        int rows = off[e];
        Rng rng = new Rng(2024);
        MemorySegment x = random(arena, rng, (long) rows * D);
        MemorySegment y = random(arena, rng, (long) rows * H);
        MemorySegment dx = arena.allocate((long) rows * D * Float.BYTES, 64);
        MemorySegment w = random(arena, rng, (long) e * D * H); // packed (E, D, H)
        MemorySegment dw = arena.allocate((long) e * D * H * Float.BYTES, 64);
        MemorySegment[] ws = new MemorySegment[e], dws = new MemorySegment[e];
        long[] wOff = new long[e];
        for (int g = 0; g < e; g++) {
            ws[g] = w;
            dws[g] = dw;
            wOff[g] = (long) g * D * H;
        }
        double flops = 2.0 * rows * D * H;
        List<GroupedResult> out = new ArrayList<>();

        Runnable fwd = () -> GroupedGemm.forward(e, off, D, H, x, 0, ws, wOff, false, y, 0, 0f);
        Runnable fwdBlas = () -> {
            for (int g = 0; g < e; g++) {
                int m = off[g + 1] - off[g];
                OpenBlas.sgemm(false, false, m, H, D, 1f, x, (long) off[g] * D, D, w, wOff[g], H, 0f, y, (long) off[g] * H, H);
            }
        };
        Runnable inGrad = () -> GroupedGemm.forward(e, off, H, D, y, 0, ws, wOff, true, dx, 0, 0f);
        Runnable inGradBlas = () -> {
            for (int g = 0; g < e; g++) {
                int m = off[g + 1] - off[g];
                OpenBlas.sgemm(false, true, m, D, H, 1f, y, (long) off[g] * H, H, w, wOff[g], H, 0f, dx, (long) off[g] * D, D);
            }
        };
        Runnable wGrad = () -> GroupedGemm.weightGrad(e, off, D, H, x, 0, y, 0, dws, wOff, 0f);
        Runnable wGradBlas = () -> {
            for (int g = 0; g < e; g++) {
                int m = off[g + 1] - off[g];
                OpenBlas.sgemm(true, false, D, H, m, 1f, x, (long) off[g] * D, D, y, (long) off[g] * H, H, 0f, dw, wOff[g], H);
            }
        };
        String[] names = {"forward X·W_g", "inputGrad dY·W_gᵀ", "weightGrad X_gᵀ·dY_g"};
        Runnable[][] pairs = {{fwd, fwdBlas}, {inGrad, inGradBlas}, {wGrad, wGradBlas}};
        for (int i = 0; i < names.length; i++) {
            double[] best = bestOf(pairs[i][0], blas ? pairs[i][1] : null, warmups, reps);
            out.add(new GroupedResult(names[i], GROUP_ROWS.clone(), D, H, flops / best[0] / 1e9,
                    blas ? flops / best[1] / 1e9 : Double.NaN));
        }
        return out;
    }

    /** Best wall time in seconds of {@code ours} and {@code theirs} (null: skipped), runs interleaved. */
    private static double[] bestOf(Runnable ours, Runnable theirs, int warmups, int reps) {
        for (int i = 0; i < warmups; i++) {
            ours.run();
            if (theirs != null) theirs.run();
        }
        double bestOurs = Double.MAX_VALUE, bestTheirs = Double.MAX_VALUE;
        for (int i = 0; i < reps; i++) {
            bestOurs = Math.min(bestOurs, time(ours));
            if (theirs != null) bestTheirs = Math.min(bestTheirs, time(theirs));
        }
        return new double[] {bestOurs, bestTheirs};
    }

    private static final ThreadMXBean THREADS = ManagementFactory.getThreadMXBean();
    private static boolean threadCpuClock;

    private static double time(Runnable r) {
        if (threadCpuClock) {
            long t0 = THREADS.getCurrentThreadCpuTime();
            r.run();
            return (THREADS.getCurrentThreadCpuTime() - t0) / 1e9;
        }
        long t0 = System.nanoTime();
        r.run();
        return (System.nanoTime() - t0) / 1e9;
    }

    private static MemorySegment random(Arena arena, Rng rng, long count) {
        MemorySegment s = arena.allocate(count * Float.BYTES, 64);
        for (long i = 0; i < count; i++) s.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) (rng.nextDouble() - 0.5));
        return s;
    }

    /** The report as a plain-text table. */
    public static String table(Report r) {
        StringBuilder sb = new StringBuilder();
        sb.append(String.format(Locale.ROOT, "GEMM, %d thread(s), GFLOP/s (shape M×K·K×N, best of runs by %s)%n",
                r.threads(), r.clock()));
        if (!r.openblasAvailable()) sb.append("OpenBLAS: ").append(r.openblasNote()).append(System.lineSeparator());
        sb.append(String.format(Locale.ROOT, "%-22s %-6s %9s %9s %7s%n", "shape", "layout", "moe4j", "OpenBLAS", "ratio"));
        for (GemmResult g : r.gemm()) {
            sb.append(String.format(Locale.ROOT, "%-22s %-6s %9.1f %9.1f %6.0f%%%n", g.shape(), g.layout(),
                    g.moe4jGflops(), g.openblasGflops(), 100 * g.ratio()));
        }
        if (!r.grouped().isEmpty()) {
            GroupedResult first = r.grouped().getFirst();
            sb.append(String.format(Locale.ROOT, "%nRagged grouped GEMM, %d experts, rows %s, D=%d, H=%d "
                            + "(OpenBLAS: one call per group)%n", first.groupRows().length,
                    Arrays.toString(first.groupRows()), first.d(), first.h()));
            sb.append(String.format(Locale.ROOT, "%-22s %-6s %9s %9s %7s%n", "op", "", "moe4j", "OpenBLAS", "ratio"));
            for (GroupedResult g : r.grouped()) {
                sb.append(String.format(Locale.ROOT, "%-29s %9.1f %9.1f %6.0f%%%n", g.op(),
                        g.moe4jGflops(), g.openblasGflops(), 100 * g.ratio()));
            }
        }
        return sb.toString();
    }
}
