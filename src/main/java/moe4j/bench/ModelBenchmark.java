package moe4j.bench;

import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import moe4j.autograd.Autograd;
import moe4j.autograd.Profiler;
import moe4j.kernels.ExecutionContext;
import moe4j.nn.MoETransformer;
import moe4j.nn.ModelConfig;
import moe4j.tensor.Device;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * Forward + backward of the whole language model on one thread (loss, backward, zeroGrad; no optimizer),
 * timed by phase. {@code main} runs the default model: {@code java ... moe4j.nn.ModelBenchmark [batch seq iterations threads]}.
 */
public final class ModelBenchmark {
    private ModelBenchmark() {}

    public record Result(ModelConfig config, int batch, int seq, double secondsPerStep, double tokensPerSecond,
                         Map<String, Double> phaseSeconds) {}

    public static Result run(ModelConfig config, int batch, int seq, int warmup, int iterations) {
        MoETransformer model = new MoETransformer(config);
        Rng rng = new Rng(1);
        int[] ids = new int[batch * (seq + 1)];
        for (int i = 0; i < ids.length; i++) ids[i] = rng.nextInt(config.vocabSize());
        int[] in = new int[batch * seq];
        int[] out = new int[batch * seq];
        for (int b = 0; b < batch; b++) {
            System.arraycopy(ids, b * (seq + 1), in, b * seq, seq);
            System.arraycopy(ids, b * (seq + 1) + 1, out, b * seq, seq);
        }
        Tensor tokens = Tensor.ofInts(in, batch, seq);
        Tensor targets = Tensor.ofInts(out, batch, seq);
        for (int i = 0; i < warmup; i++) step(model, tokens, targets);
        Profiler profiler = Profiler.start();
        double best = Double.POSITIVE_INFINITY;
        long total = 0;
        for (int i = 0; i < iterations; i++) {
            long t0 = System.nanoTime();
            step(model, tokens, targets);
            long t = System.nanoTime() - t0;
            total += t;
            best = Math.min(best, t / 1e9);
        }
        Profiler.stop();
        Map<String, Double> phases = new LinkedHashMap<>();
        profiler.seconds().forEach((k, v) -> phases.put(k, v / iterations));
        double mean = total / 1e9 / iterations;
        double accounted = phases.values().stream().mapToDouble(Double::doubleValue).sum();
        phases.put("other", Math.max(0, mean - accounted));
        return new Result(config, batch, seq, best, batch * seq / best, phases);
    }

    private static void step(MoETransformer model, Tensor tokens, Tensor targets) {
        try (MemoryScope scope = MemoryScope.open()) {
            Autograd.backward(model.loss(tokens, targets).total());
        }
        model.zeroGrad();
    }

    public static String table(Result r) {
        ModelConfig c = r.config();
        StringBuilder sb = new StringBuilder();
        sb.append(String.format(Locale.ROOT, "model forward+backward: dim=%d layers=%d heads=%d/%d ffn=%d experts=%d top-%d vocab=%d, batch %d x seq %d%n",
                c.dim(), c.nLayers(), c.nHeads(), c.nKvHeads(), c.ffnHidden(), c.numExperts(), c.moeTopK(), c.vocabSize(), r.batch(), r.seq()));
        double mean = r.phaseSeconds().values().stream().mapToDouble(Double::doubleValue).sum();
        r.phaseSeconds().forEach((k, v) -> sb.append(String.format(Locale.ROOT, "  %-16s %8.1f ms %6.1f%%%n", k, v * 1e3, 100 * v / mean)));
        sb.append(String.format(Locale.ROOT, "best step %.1f ms (mean %.1f ms), %.0f tokens/s%n", r.secondsPerStep() * 1e3, mean * 1e3, r.tokensPerSecond()));
        return sb.toString();
    }

    public static void main(String[] args) {
        int batch = args.length > 0 ? Integer.parseInt(args[0]) : 8;
        int seq = args.length > 1 ? Integer.parseInt(args[1]) : 128;
        int iterations = args.length > 2 ? Integer.parseInt(args[2]) : 5;
        int threads = args.length > 3 ? Integer.parseInt(args[3]) : 1;
        try (ExecutionContext ctx = ExecutionContext.enter(Device.CPU, threads)) {
            System.out.println("threads: " + ctx.cpuThreads());
            System.out.print(table(run(ModelConfig.defaults(), batch, seq, 2, iterations)));
        }
    }
}
