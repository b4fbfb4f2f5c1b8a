package moe4j.bench;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import moe4j.kernels.cpu.GemmBenchmark;

/**
 * {@code moe4j bench gemm}'s measurement, as the command prints it: the CPU GEMM benchmark lives beside
 * the kernels it measures, and the tools package is the one place outside {@code moe4j.kernels} that
 * may name it, so the command line sees only a table, the headline figure and a JSON-ready map.
 */
public final class GemmBench {
    private GemmBench() {}

    /** One run: the printable table, the 1024x4096·4096x1024 GFLOP/s, and all results for JSON. */
    public record Outcome(String table, double headlineGflops, Map<String, Object> json) {}

    public static Outcome run(int threads, boolean quick) {
        GemmBenchmark.Report report = GemmBenchmark.runAgainstNative(threads, quick);
        return new Outcome(GemmBenchmark.table(report), report.headlineGflops(), toJson(report));
    }

    private static Map<String, Object> toJson(GemmBenchmark.Report r) {
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
        return root;
    }

    /** JSON has no NaN: an absent measurement becomes null. */
    private static Double finite(double v) {
        return Double.isFinite(v) ? Math.round(v * 100) / 100.0 : null;
    }
}
