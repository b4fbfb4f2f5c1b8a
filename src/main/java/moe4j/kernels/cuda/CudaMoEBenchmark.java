package moe4j.kernels.cuda;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Forward + backward of one MoE layer on one GPU, timed as the peer times its layer (host clock
 * around forward + backward with the stream synchronised, median over iterations), with the device
 * time per phase from CUDA events and the forward expert products alone (the grouped-GEMM figure
 * that {@code torch._grouped_mm} is compared with).
 *
 * <p>TFLOP/s counts the expert products only, forward and backward: {@code 18·D·H·K} per token for
 * SwiGLU experts (three D×H products, each done three times), as the peer counts.
 */
public final class CudaMoEBenchmark {
    private CudaMoEBenchmark() {}

    public record Result(CudaMoELayer.Config config, CudaMoELayer.Precision precision, int tokens, int iterations,
                         double medianStepSeconds, double tflops, Map<String, Double> phaseSeconds, double expertGemmForwardTflops,
                         Map<String, String> gemmStrategies, String gpu, String layout) {}

    public static Result run(CudaMoELayer.Config config, CudaMoELayer.Precision precision, int tokens, int warmup, int iterations,
                             int gpuOrdinal, CudaMoELayer.RowLayout layout) {
        CudaGpu gpu = CudaGpu.of(gpuOrdinal);
        CudaStream stream = CudaStream.of(gpu);
        int d = config.dim();
        try (CudaMoELayer layer = new CudaMoELayer(stream, config, precision)) {
            layer.randomizeWeights(11, 0.02);
            layer.lossWeights(0.01, 0.001);
            layer.rowLayout(layout);
            String rowLayout = "";
            long x = layer.allocate((long) tokens * d, "benchmark input");
            long g = layer.allocate((long) tokens * d, "benchmark output gradient");
            layer.fillRandom(x, (long) tokens * d, 1, 1.0);
            layer.fillRandom(g, (long) tokens * d, 2, 1.0);
            stream.synchronize();
            List<Double> times = new ArrayList<>();
            for (int i = 0; i < warmup + iterations; i++) {
                try (DevicePool.Scope step = stream.pool().openScope()) {
                    long t0 = System.nanoTime();
                    CudaMoELayer.Step f = layer.forward(x, tokens);
                    layer.backward(f, g);
                    stream.synchronize();
                    if (i >= warmup) times.add((System.nanoTime() - t0) / 1e9);
                }
            }
            Collections.sort(times);
            double median = times.get(times.size() / 2);
            // the breakdown: a few more steps with events between the phases
            PhaseTimer timer = new PhaseTimer(stream);
            layer.timePhases(timer);
            int timed = Math.max(1, Math.min(iterations, 5));
            double expertSeconds = Double.NaN;
            for (int i = 0; i < timed; i++) {
                try (DevicePool.Scope step = stream.pool().openScope()) {
                    CudaMoELayer.Step f = layer.forward(x, tokens);
                    layer.backward(f, g);
                    timer.collect();
                    if (i == timed - 1) {
                        expertSeconds = expertForwardSeconds(layer, stream, f);
                        rowLayout = f.layout();
                    }
                }
            }
            layer.timePhases(null);
            Map<String, Double> phases = new LinkedHashMap<>();
            timer.totals().forEach((k, v) -> phases.put(k, v / timed));
            double flopsPerToken = (config.activation() == CudaMoELayer.ExpertActivation.SWIGLU ? 18.0 : 12.0)
                    * config.dim() * config.hidden() * config.topK();
            double fwdFlops = (flopsPerToken / 3) * tokens;
            Map<String, String> strategies = new LinkedHashMap<>();
            RaggedGemm rg = layer.raggedGemm();
            rg.chosen().forEach((k, v) -> {
                Map<RaggedGemm.Strategy, Double> t = rg.trials().get(k);
                strategies.put(k, v + (t == null ? "" : " " + formatTrials(t)));
            });
            return new Result(config, precision, tokens, iterations, median, flopsPerToken * tokens / median / 1e12, phases,
                    fwdFlops / expertSeconds / 1e12, strategies, gpu.describe(), rowLayout);
        }
    }

    /** The forward expert products alone on given groups: TFLOP/s (actual rows only) and how they ran. */
    public record GroupedResult(CudaMoELayer.Config config, int[] rowsPerExpert, double tflops, double millis, String layout,
                                Map<String, String> strategies) {}

    /**
     * Times the two forward expert products ({@code x·W_in}, {@code h·W_out}) over {@code rowsPerExpert}
     * (the groups of the peer's {@code torch._grouped_mm} ceiling, say), in the given layout.
     */
    public static GroupedResult groupedOnly(CudaMoELayer.Config config, CudaMoELayer.Precision precision, int[] rowsPerExpert,
                                            CudaMoELayer.RowLayout layout, int gpuOrdinal) {
        CudaStream stream = CudaStream.of(CudaGpu.of(gpuOrdinal));
        try (CudaMoELayer layer = new CudaMoELayer(stream, config, precision);
             DevicePool.Scope scope = stream.pool().openScope()) {
            layer.randomizeWeights(11, 0.02);
            layer.rowLayout(layout);
            CudaMoELayer.Step f = layer.syntheticStep(rowsPerExpert, 5);
            double seconds = expertForwardSeconds(layer, stream, f);
            long rows = 0;
            for (int r : rowsPerExpert) rows += r;
            int width = config.activation() == CudaMoELayer.ExpertActivation.SWIGLU ? 3 : 2;
            double flops = 2.0 * rows * config.dim() * config.hidden() * width;
            Map<String, String> strategies = new LinkedHashMap<>();
            RaggedGemm rg = layer.raggedGemm();
            rg.chosen().forEach((k, v) -> {
                Map<RaggedGemm.Strategy, Double> t = rg.trials().get(k);
                strategies.put(k, v + (t == null ? "" : " " + formatTrials(t)));
            });
            return new GroupedResult(config, rowsPerExpert, flops / seconds / 1e12, seconds * 1e3, f.layout(), strategies);
        }
    }

    public static String report(GroupedResult r) {
        CudaMoELayer.Config c = r.config();
        int min = Integer.MAX_VALUE, max = 0;
        long rows = 0;
        for (int x : r.rowsPerExpert()) {
            min = Math.min(min, x);
            max = Math.max(max, x);
            rows += x;
        }
        StringBuilder sb = new StringBuilder(String.format(Locale.ROOT,
                "MOE4J_CUDA grouped-gemm D=%d H=%d E=%d rows=%d (per expert %d..%d) fwd_TFLOPs=%.1f ms=%.3f: %s%n",
                c.dim(), c.hidden(), c.experts(), rows, min, max, r.tflops(), r.millis(), r.layout()));
        r.strategies().forEach((k, v) -> sb.append("  ragged GEMM ").append(k).append(": ").append(v).append('\n'));
        return sb.toString();
    }

    /** Median over repeats of the forward expert products alone, device time from events. */
    private static double expertForwardSeconds(CudaMoELayer layer, CudaStream stream, CudaMoELayer.Step f) {
        MemorySegment start = stream.newEvent();
        MemorySegment end = stream.newEvent();
        List<Double> t = new ArrayList<>();
        for (int i = 0; i < 23; i++) {
            stream.record(start);
            layer.expertProductsOnly(f);
            stream.record(end);
            stream.driver.synchronizeEvent(end);
            if (i >= 3) t.add(stream.driver.elapsedMillis(start, end) / 1e3);
        }
        stream.driver.destroyEvent(start);
        stream.driver.destroyEvent(end);
        Collections.sort(t);
        return t.get(t.size() / 2);
    }

    private static String formatTrials(Map<RaggedGemm.Strategy, Double> t) {
        StringBuilder sb = new StringBuilder("(");
        t.forEach((k, v) -> sb.append(sb.length() > 1 ? ", " : "").append(k.name().toLowerCase(Locale.ROOT))
                .append(String.format(Locale.ROOT, " %.3f ms", v)));
        return sb.append(")").toString();
    }

    /** One line per shape in the peer's style, then the phases and the strategies. */
    public static String report(Result r) {
        CudaMoELayer.Config c = r.config();
        StringBuilder sb = new StringBuilder();
        sb.append(String.format(Locale.ROOT,
                "MOE4J_CUDA moe-layer D=%d H=%d E=%d K=%d tokens=%d dtype=%s median_step_ms=%.2f TFLOPs_per_gpu=%.1f"
                        + " expert_gemm_fwd_TFLOPs=%.1f gpu=%s%n",
                c.dim(), c.hidden(), c.experts(), c.topK(), r.tokens(), r.precision().name().toLowerCase(Locale.ROOT),
                r.medianStepSeconds() * 1e3, r.tflops(), r.expertGemmForwardTflops(), r.gpu()));
        double sum = r.phaseSeconds().values().stream().mapToDouble(Double::doubleValue).sum();
        sb.append("  ").append(r.layout()).append('\n');
        sb.append("  device time per phase (forward + backward):");
        r.phaseSeconds().forEach((k, v) -> sb.append(String.format(Locale.ROOT, " %s %.3f ms (%.0f%%);", k, v * 1e3, 100 * v / sum)));
        sb.append(String.format(Locale.ROOT, " total %.3f ms%n", sum * 1e3));
        r.gemmStrategies().forEach((k, v) -> sb.append("  ragged GEMM ").append(k).append(": ").append(v).append('\n'));
        return sb.toString();
    }
}
