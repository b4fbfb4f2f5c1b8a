package moe4j.kernels.cpu;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
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
 *
 * <p>The reference is OpenBLAS with the kernel it picks for this CPU. When the environment steers it
 * ({@link OpenBlas#KERNEL_VARIABLES}, e.g. {@code OPENBLAS_CORETYPE=Haswell} on an AVX-512 machine, which
 * holds it near half speed), {@link #runAgainstNative} measures moe4j and OpenBLAS in a child JVM started
 * without those variables, then OpenBLAS alone in this process as it was configured: the held-back figure,
 * a second column.
 */
public final class GemmBenchmark {
    private GemmBenchmark() {}

    /**
     * One plain GEMM: shape, layout and the speed of both implementations (NaN: OpenBLAS absent); the
     * held-back figure is OpenBLAS under this environment's kernel overrides (NaN: none were set).
     */
    public record GemmResult(String layout, int m, int k, int n, double moe4jGflops, double openblasGflops,
                             double openblasHeldBackGflops) {
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
    public record GroupedResult(String op, int[] groupRows, int d, int h, double moe4jGflops, double openblasGflops,
                                double openblasHeldBackGflops) {
        public double ratio() {
            return moe4jGflops / openblasGflops;
        }
    }

    /**
     * @param openblasCore     the kernel OpenBLAS used for the reference column (openblas_get_corename)
     * @param openblasConfig   OpenBLAS's build description (version)
     * @param heldBackSettings the environment's kernel overrides the held-back column ran with; empty when
     *                         none were set (the column is then absent)
     * @param heldBackCore     the kernel OpenBLAS used under those overrides
     * @param gemmTuning       moe4j's tile and blocking on this CPU
     * @param peakGflops       the FP32 peak of the cores the benchmark used ({@link Fp32Peak}, × threads)
     */
    public record Report(int threads, String clock, boolean openblasAvailable, String openblasNote,
                         String openblasCore, String openblasConfig, List<String> heldBackSettings,
                         String heldBackCore, String gemmTuning, double peakGflops, List<GemmResult> gemm,
                         List<GroupedResult> grouped) {
        /** The moe4j speed of the 1024×4096·4096×1024 A·B product, the JIT-health number. */
        public double headlineGflops() {
            return gemm.stream().filter(r -> r.m() == 1024 && r.layout().equals("A·B"))
                    .mapToDouble(GemmResult::moe4jGflops).findFirst().orElse(Double.NaN);
        }
    }

    private static final String HEADLINE_SHAPE = "1024x4096·4096x1024";

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
        return measure(threads, quick, true);
    }

    /**
     * {@link #run} against OpenBLAS's own kernel choice: in this process when the environment does not
     * steer OpenBLAS, else in a child JVM without the steering variables, with the held-back figures
     * measured here added as a second reference column.
     */
    public static Report runAgainstNative(int threads, boolean quick) {
        List<String> overrides = OpenBlas.environmentOverrides();
        if (overrides.isEmpty() || !OpenBlas.isAvailable()) return run(threads, quick);
        Report child = inChildWithout(OpenBlas.KERNEL_VARIABLES, threads, quick);
        Report heldBack = measure(threads, quick, false);
        List<GemmResult> gemm = new ArrayList<>();
        for (int i = 0; i < child.gemm().size(); i++) {
            GemmResult g = child.gemm().get(i);
            gemm.add(new GemmResult(g.layout(), g.m(), g.k(), g.n(), g.moe4jGflops(), g.openblasGflops(),
                    heldBack.gemm().get(i).openblasGflops()));
        }
        List<GroupedResult> grouped = new ArrayList<>();
        for (int i = 0; i < child.grouped().size(); i++) {
            GroupedResult g = child.grouped().get(i);
            grouped.add(new GroupedResult(g.op(), g.groupRows(), g.d(), g.h(), g.moe4jGflops(), g.openblasGflops(),
                    heldBack.grouped().get(i).openblasGflops()));
        }
        return new Report(child.threads(), child.clock(), child.openblasAvailable(), child.openblasNote(),
                child.openblasCore(), child.openblasConfig(), overrides, OpenBlas.coreName(), child.gemmTuning(),
                child.peakGflops(), gemm, grouped);
    }

    /** Marks the child's result line among whatever else the JVM prints. */
    private static final String CHILD_REPORT = "moe4j-gemm-report ";

    private static Report inChildWithout(List<String> variables, int threads, boolean quick) {
        String java = ProcessHandle.current().info().command()
                .orElse(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        List<String> command = new ArrayList<>();
        command.add(java);
        command.addAll(ManagementFactory.getRuntimeMXBean().getInputArguments());
        command.addAll(List.of("-cp", System.getProperty("java.class.path"), GemmBenchmark.class.getName(),
                Integer.toString(threads), Boolean.toString(quick)));
        ProcessBuilder pb = new ProcessBuilder(command).redirectError(ProcessBuilder.Redirect.INHERIT);
        variables.forEach(pb.environment()::remove);
        try {
            Process p = pb.start();
            String line;
            Report report = null;
            try (BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
                while ((line = out.readLine()) != null) {
                    if (line.startsWith(CHILD_REPORT)) report = gson().fromJson(line.substring(CHILD_REPORT.length()), Report.class);
                }
            }
            int status = p.waitFor();
            if (status != 0 || report == null) {
                throw new IllegalStateException("the GEMM benchmark without " + String.join(", ", variables)
                        + " (a child JVM) exited with status " + status + (report == null ? " and no report" : ""));
            }
            return report;
        } catch (IOException e) {
            throw new IllegalStateException("could not start a child JVM for the native OpenBLAS reference: " + e.getMessage(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while the native OpenBLAS reference ran", e);
        }
    }

    private static Gson gson() {
        return new GsonBuilder().serializeSpecialFloatingPointValues().create();
    }

    /** The child JVM of {@link #runAgainstNative}: {@code threads quick}; prints its report as one JSON line. */
    public static void main(String[] args) {
        Report r = run(Integer.parseInt(args[0]), Boolean.parseBoolean(args[1]));
        System.out.println(CHILD_REPORT + gson().toJson(r));
    }

    /** Both libraries, or ({@code withMoe4j} false) OpenBLAS alone. */
    private static Report measure(int threads, boolean quick, boolean withMoe4j) {
        int warmups = quick ? 2 : 4, reps = quick ? 3 : 8;
        threadCpuClock = threads == 1 && THREADS.isCurrentThreadCpuTimeSupported();
        if (threadCpuClock && !THREADS.isThreadCpuTimeEnabled()) THREADS.setThreadCpuTimeEnabled(true);
        boolean blas = OpenBlas.isAvailable();
        if (blas) OpenBlas.setThreads(threads);
        try (ExecutionContext ctx = ExecutionContext.enter(Device.CPU, threads); Arena arena = Arena.ofShared()) {
            List<GemmResult> gemm = new ArrayList<>();
            for (int[] s : SHAPES) {
                for (int layout = 0; layout < LAYOUTS.length; layout++) {
                    gemm.add(runGemm(arena, LAYOUTS[layout], layout == 2, layout == 1, s[0], s[1], s[2], withMoe4j, blas,
                            warmups, reps));
                }
            }
            List<GroupedResult> grouped = runGrouped(arena, withMoe4j, blas, warmups, reps);
            return new Report(threads, threadCpuClock ? "thread CPU time" : "wall time", blas,
                    blas ? null : OpenBlas.unavailableReason(), OpenBlas.coreName(), OpenBlas.config(),
                    List.of(), null, Gemm.tuning().describe(), threads * Fp32Peak.thisMachine().gflopsPerCore(), gemm,
                    grouped);
        } finally {
            if (blas) OpenBlas.setThreads(1);
        }
    }

    private static GemmResult runGemm(Arena arena, String name, boolean ta, boolean tb, int m, int k, int n,
                                      boolean withMoe4j, boolean blas, int warmups, int reps) {
        Rng rng = new Rng(m * 31L + k * 7L + n);
        MemorySegment a = random(arena, rng, (long) m * k);
        MemorySegment b = random(arena, rng, (long) k * n);
        MemorySegment c = arena.allocate((long) m * n * Float.BYTES, 64);
        int lda = ta ? m : k, ldb = tb ? k : n;
        double flops = 2.0 * m * n * k;
        Runnable ours = withMoe4j ? () -> Gemm.sgemm(ta, tb, m, n, k, 1f, a, 0, lda, b, 0, ldb, 0f, c, 0, n) : null;
        Runnable theirs = blas ? () -> OpenBlas.sgemm(ta, tb, m, n, k, 1f, a, 0, lda, b, 0, ldb, 0f, c, 0, n) : null;
        double[] best = bestOf(ours, theirs, warmups, reps);
        return new GemmResult(name, m, k, n, flops / best[0] / 1e9, flops / best[1] / 1e9, Double.NaN);
    }

    private static List<GroupedResult> runGrouped(Arena arena, boolean withMoe4j, boolean blas, int warmups, int reps) {
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
            double[] best = bestOf(withMoe4j ? pairs[i][0] : null, blas ? pairs[i][1] : null, warmups, reps);
            out.add(new GroupedResult(names[i], GROUP_ROWS.clone(), D, H, flops / best[0] / 1e9, flops / best[1] / 1e9,
                    Double.NaN));
        }
        return out;
    }

    /**
     * Best time in seconds of {@code ours} and {@code theirs}, runs interleaved; a skipped (null) one gets
     * NaN, so its GFLOP/s read NaN too.
     */
    private static double[] bestOf(Runnable ours, Runnable theirs, int warmups, int reps) {
        for (int i = 0; i < warmups; i++) {
            if (ours != null) ours.run();
            if (theirs != null) theirs.run();
        }
        double bestOurs = Double.MAX_VALUE, bestTheirs = Double.MAX_VALUE;
        for (int i = 0; i < reps; i++) {
            if (ours != null) bestOurs = Math.min(bestOurs, time(ours));
            if (theirs != null) bestTheirs = Math.min(bestTheirs, time(theirs));
        }
        return new double[] {ours != null ? bestOurs : Double.NaN, theirs != null ? bestTheirs : Double.NaN};
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
        boolean heldBack = !r.heldBackSettings().isEmpty();
        sb.append(String.format(Locale.ROOT, "GEMM, %d thread(s), GFLOP/s (shape M×K·K×N, best of runs by %s)%n",
                r.threads(), r.clock()));
        sb.append("moe4j:    ").append(r.gemmTuning()).append(System.lineSeparator());
        sb.append(String.format(Locale.ROOT, "FP32 peak of %d core(s): %.0f GFLOP/s (measured by an FMA probe); "
                + "moe4j's %s A·B runs at %.0f%% of it%n", r.threads(), r.peakGflops(), HEADLINE_SHAPE,
                100 * r.headlineGflops() / r.peakGflops()));
        if (!r.openblasAvailable()) {
            sb.append("OpenBLAS: ").append(r.openblasNote()).append(System.lineSeparator());
        } else {
            sb.append(String.format(Locale.ROOT, "OpenBLAS: kernel %s, its own choice for this CPU (%s)%n",
                    r.openblasCore(), r.openblasConfig()));
            if (heldBack) {
                sb.append(String.format(Locale.ROOT, "held back: OpenBLAS with %s, kernel %s (this environment's setting)%n",
                        String.join(" ", r.heldBackSettings()), r.heldBackCore()));
            }
        }
        String columns = heldBack ? "%-22s %-6s %9s %9s %7s %10s%n" : "%-22s %-6s %9s %9s %7s%n";
        sb.append(String.format(Locale.ROOT, columns, "shape", "layout", "moe4j", "OpenBLAS", "ratio", "held back"));
        for (GemmResult g : r.gemm()) {
            sb.append(String.format(Locale.ROOT, "%-22s %-6s %9.1f %9.1f %6.0f%%", g.shape(), g.layout(),
                    g.moe4jGflops(), g.openblasGflops(), 100 * g.ratio()));
            if (heldBack) sb.append(String.format(Locale.ROOT, " %10.1f", g.openblasHeldBackGflops()));
            sb.append(System.lineSeparator());
        }
        if (!r.grouped().isEmpty()) {
            GroupedResult first = r.grouped().getFirst();
            sb.append(String.format(Locale.ROOT, "%nRagged grouped GEMM, %d experts, rows %s, D=%d, H=%d "
                            + "(OpenBLAS: one call per group)%n", first.groupRows().length,
                    Arrays.toString(first.groupRows()), first.d(), first.h()));
            sb.append(String.format(Locale.ROOT, columns, "op", "", "moe4j", "OpenBLAS", "ratio", "held back"));
            for (GroupedResult g : r.grouped()) {
                sb.append(String.format(Locale.ROOT, "%-29s %9.1f %9.1f %6.0f%%", g.op(),
                        g.moe4jGflops(), g.openblasGflops(), 100 * g.ratio()));
                if (heldBack) sb.append(String.format(Locale.ROOT, " %10.1f", g.openblasHeldBackGflops()));
                sb.append(System.lineSeparator());
            }
        }
        return sb.toString();
    }
}
