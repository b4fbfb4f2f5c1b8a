package moe4j.bench;

import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import moe4j.autograd.Autograd;
import moe4j.autograd.Profiler;
import moe4j.kernels.Kernels;
import moe4j.nn.MoEConfig;
import moe4j.nn.MoEMLP;
import moe4j.tensor.Device;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * Forward + backward of one MoE layer on one rank, timed by phase (router, permute, grouped GEMM,
 * activation, un-permute), next to a dense GEMM of the same total work measured in the same run: the
 * yardstick for the grouped GEMM's efficiency.
 */
public final class MoELayerBenchmark {
    private MoELayerBenchmark() {}

    public record Result(MoEConfig config, int tokens, int iterations, double secondsPerStep, double tokensPerSecond,
                         Map<String, Double> phaseSeconds, double groupedGemmGflops, double denseGemmGflops,
                         double nonGemmShare) {}

    public static Result run(MoEConfig config, int tokens, int warmup, int iterations) {
        MoEMLP moe = MoEMLP.build(config);
        // the input needs a gradient, as inside a model: backward then computes all nine expert products
        Tensor x = Tensor.randn(new Rng(1), 1.0, tokens, config.dim()).requiresGrad(true);
        Tensor grad = Tensor.randn(new Rng(2), 1.0, tokens, config.dim());
        for (int i = 0; i < warmup; i++) step(moe, x, grad);
        Profiler profiler = Profiler.start();
        long start = System.nanoTime();
        for (int i = 0; i < iterations; i++) step(moe, x, grad);
        double seconds = (System.nanoTime() - start) / 1e9 / iterations;
        Profiler.stop();
        Map<String, Double> phases = new LinkedHashMap<>();
        profiler.seconds().forEach((k, v) -> phases.put(k, v / iterations));
        double accounted = phases.values().stream().mapToDouble(Double::doubleValue).sum();
        phases.put("other", Math.max(0, seconds - accounted));
        // rows through the experts: T·K (no capacity limit); 3 products (2 for gelu/relu), ×3 for forward + backward
        int products = config.activation().gated() ? 3 : 2;
        double flops = 3.0 * products * 2.0 * tokens * config.topK() * config.dim() * config.hidden();
        double gemmSeconds = phases.getOrDefault(MoEMLP.GROUPED_GEMM_PHASE, Double.NaN);
        double dense = denseGemmGflops(tokens * config.topK() / config.numExperts() * config.numExperts(), config.dim(), config.hidden());
        return new Result(config, tokens, iterations, seconds, tokens / seconds, phases, flops / gemmSeconds / 1e9,
                dense, 1 - gemmSeconds / seconds);
    }

    private static void step(MoEMLP moe, Tensor x, Tensor grad) {
        try (MemoryScope scope = MemoryScope.open()) {
            Tensor out = moe.forward(x);
            Autograd.backward(out, grad);
        }
        moe.zeroGrad();
    }

    /** Best of a few runs of one dense (rows × dim) · (dim × hidden) product, GFLOP/s. */
    static double denseGemmGflops(int rows, int dim, int hidden) {
        try (MemoryScope scope = MemoryScope.open()) {
            Tensor a = Tensor.randn(new Rng(3), 1, rows, dim);
            Tensor b = Tensor.randn(new Rng(4), 1, dim, hidden);
            Tensor c = Tensor.zeros(rows, hidden);
            double best = 0;
            for (int i = 0; i < 4; i++) {
                long t0 = System.nanoTime();
                Kernels.of(Device.CPU).matmul().gemm(false, false, rows, hidden, dim, 1f, a, 0, dim, b, 0, hidden, 0f, c, 0, hidden);
                double s = (System.nanoTime() - t0) / 1e9;
                best = Math.max(best, 2.0 * rows * dim * hidden / s / 1e9);
            }
            return best;
        }
    }

    public static String table(Result r) {
        StringBuilder sb = new StringBuilder();
        MoEConfig c = r.config();
        sb.append(String.format(Locale.ROOT, "MoE layer forward+backward: D=%d H=%d E=%d K=%d T=%d %s %s, %d iterations%n",
                c.dim(), c.hidden(), c.numExperts(), c.topK(), r.tokens(), c.activation().configName(),
                c.packed() ? "packed" : "list", r.iterations()));
        sb.append(String.format(Locale.ROOT, "  %-16s %10s %7s%n", "phase", "ms/step", "share"));
        r.phaseSeconds().forEach((k, v) -> sb.append(String.format(Locale.ROOT, "  %-16s %10.1f %6.1f%%%n", k, v * 1e3, 100 * v / r.secondsPerStep())));
        sb.append(String.format(Locale.ROOT, "  %-16s %10.1f%n", "step", r.secondsPerStep() * 1e3));
        sb.append(String.format(Locale.ROOT, "tokens/s %.0f | grouped GEMM %.1f GFLOP/s = %.0f%% of dense GEMM %.1f GFLOP/s | non-GEMM share %.1f%%%n",
                r.tokensPerSecond(), r.groupedGemmGflops(), 100 * r.groupedGemmGflops() / r.denseGemmGflops(),
                r.denseGemmGflops(), 100 * r.nonGemmShare()));
        return sb.toString();
    }
}
