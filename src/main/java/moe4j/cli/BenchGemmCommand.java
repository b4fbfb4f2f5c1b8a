package moe4j.cli;

import com.google.gson.Gson;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import moe4j.kernels.cpu.GemmBenchmark;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code moe4j bench gemm}: GFLOP/s of moe4j's GEMM and ragged grouped GEMM next to OpenBLAS, in one run
 * (see {@link GemmBenchmark} for shapes and method), against the kernel OpenBLAS picks for this CPU even where
 * the environment holds it back (that figure is then a second column). With {@code --min-gflops} it doubles as a check that
 * the JIT compiled the kernel properly: a Vector API kernel stuck in the C1 compiler runs tens of times
 * slower, and the command then exits with status 3 (2 is picocli's usage error).
 */
@Command(name = "gemm", mixinStandardHelpOptions = true,
        description = "Benchmark moe4j GEMM and grouped GEMM against OpenBLAS (GFLOP/s).")
public final class BenchGemmCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--threads", description = "threads for both libraries (default: ${DEFAULT-VALUE})")
    int threads = 1;

    @Option(names = "--quick", description = "fewer repetitions: a smoke test")
    boolean quick;

    @Option(names = "--json", description = "end with one line holding all results as a JSON object")
    boolean json;

    @Option(names = "--min-gflops", paramLabel = "X",
            description = "exit with status 3 if moe4j's 1024x4096·4096x1024 GEMM runs below X GFLOP/s")
    double minGflops = 0;

    @Override
    public Integer call() {
        if (threads < 1) throw new CommandLine.ParameterException(spec.commandLine(),
                "--threads must be >= 1, got " + threads);
        GemmBenchmark.Report report = GemmBenchmark.runAgainstNative(threads, quick);
        System.out.print(GemmBenchmark.table(report));
        double headline = report.headlineGflops();
        boolean tooSlow = minGflops > 0 && !(headline >= minGflops);
        if (tooSlow) {
            System.err.printf(Locale.ROOT, "moe4j GEMM 1024x4096·4096x1024 ran at %.1f GFLOP/s, below --min-gflops %.1f "
                    + "(is the JIT stuck in C1? run with -XX:-TieredCompilation)%n", headline, minGflops);
        }
        if (json) {
            System.out.println(new Gson().toJson(toJson(report, tooSlow)));
        }
        return tooSlow ? 3 : 0;
    }

    private static Map<String, Object> toJson(GemmBenchmark.Report r, boolean tooSlow) {
        Map<String, Object> root = new LinkedHashMap<>();
        root.put("benchmark", "gemm");
        root.put("threads", r.threads());
        root.put("clock", r.clock());
        root.put("openblas", r.openblasAvailable());
        if (r.openblasNote() != null) root.put("openblasNote", r.openblasNote());
        root.put("openblasCore", r.openblasCore());
        root.put("openblasConfig", r.openblasConfig());
        root.put("heldBackSettings", r.heldBackSettings());
        if (!r.heldBackSettings().isEmpty()) root.put("heldBackCore", r.heldBackCore());
        root.put("gemmTuning", r.gemmTuning());
        root.put("peakGflops", finite(r.peakGflops()));
        root.put("shapeConvention", "MxK·KxN");
        List<Map<String, Object>> gemm = new ArrayList<>();
        for (GemmBenchmark.GemmResult g : r.gemm()) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("shape", g.shape());
            m.put("layout", g.layout());
            m.put("m", g.m());
            m.put("k", g.k());
            m.put("n", g.n());
            m.put("moe4jGflops", finite(g.moe4jGflops()));
            m.put("openblasGflops", finite(g.openblasGflops()));
            m.put("ratio", finite(g.ratio()));
            m.put("openblasHeldBackGflops", finite(g.openblasHeldBackGflops()));
            gemm.add(m);
        }
        root.put("gemm", gemm);
        List<Map<String, Object>> grouped = new ArrayList<>();
        for (GemmBenchmark.GroupedResult g : r.grouped()) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("op", g.op());
            m.put("groupRows", g.groupRows());
            m.put("d", g.d());
            m.put("h", g.h());
            m.put("moe4jGflops", finite(g.moe4jGflops()));
            m.put("openblasGflops", finite(g.openblasGflops()));
            m.put("ratio", finite(g.ratio()));
            m.put("openblasHeldBackGflops", finite(g.openblasHeldBackGflops()));
            grouped.add(m);
        }
        root.put("grouped", grouped);
        root.put("headlineGflops", finite(r.headlineGflops()));
        root.put("belowMinGflops", tooSlow);
        return root;
    }

    /** JSON has no NaN: an absent measurement becomes null. */
    private static Double finite(double v) {
        return Double.isFinite(v) ? Math.round(v * 100) / 100.0 : null;
    }

    public static void main(String[] args) {
        System.exit(new CommandLine(new BenchGemmCommand()).execute(args));
    }
}
