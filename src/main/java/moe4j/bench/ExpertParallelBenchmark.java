package moe4j.bench;

import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import moe4j.autograd.Autograd;
import moe4j.autograd.Profiler;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.Distributed;
import moe4j.distributed.MeshSizes;
import moe4j.nn.MoEConfig;
import moe4j.nn.MoEMLP;
import moe4j.parallel.ExpertParallel;
import moe4j.parallel.TrafficCountingGroup;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * Forward + backward of one expert-parallel MoE layer on P in-JVM ranks, each with its own tokens,
 * timed by phase on every rank (routing, permute, count exchange, dispatch, expert compute, combine,
 * un-permute); the step time is the slowest rank's.
 */
public final class ExpertParallelBenchmark {
    private ExpertParallelBenchmark() {}

    public record Result(int ranks, MoEConfig config, int tokensPerRank, int iterations, double secondsPerStep,
                         double tokensPerSecond, Map<String, Double> phaseSeconds, long bytesSentPerRank,
                         double commAndPermuteShare) {}

    public static Result run(MoEConfig config, int ranks, int tokensPerRank, int warmup, int iterations) {
        record RankTiming(double seconds, Map<String, Double> phases, long bytes) {}
        List<RankTiming> timings = Distributed.run(ranks, Duration.ofMinutes(10), world -> {
            MoEMLP moe = MoEMLP.build(config);
            ExpertParallel.apply(moe, DeviceMesh.create(world, MeshSizes.defaults().ep(ranks)));
            TrafficCountingGroup counted = ExpertParallel.countTraffic(moe);
            TrafficCountingGroup traffic = counted != null ? counted : new TrafficCountingGroup(world);
            // the input needs a gradient, as inside a model: backward then computes all nine expert products
            Tensor x = Tensor.randn(Rng.forStream(1, world.rank()), 1.0, tokensPerRank, config.dim()).requiresGrad(true);
            Tensor grad = Tensor.randn(Rng.forStream(2, world.rank()), 1.0, tokensPerRank, config.dim());
            for (int i = 0; i < warmup; i++) step(moe, x, grad);
            world.barrier();
            long bytesBefore = traffic.rowBytes();
            Profiler profiler = Profiler.start();
            long start = System.nanoTime();
            for (int i = 0; i < iterations; i++) step(moe, x, grad);
            world.barrier();
            double seconds = (System.nanoTime() - start) / 1e9 / iterations;
            Profiler.stop();
            Map<String, Double> phases = new LinkedHashMap<>();
            profiler.seconds().forEach((k, v) -> phases.put(k, v / iterations));
            return new RankTiming(seconds, phases, (traffic.rowBytes() - bytesBefore) / iterations);
        });
        double step = timings.stream().mapToDouble(RankTiming::seconds).max().orElseThrow();
        // per-phase: the mean over ranks (ranks share the cores, so a rank's phases add up to its own step)
        Map<String, Double> phases = new LinkedHashMap<>();
        for (RankTiming t : timings) t.phases().forEach((k, v) -> phases.merge(k, v / ranks, Double::sum));
        double accounted = phases.values().stream().mapToDouble(Double::doubleValue).sum();
        phases.put("other", Math.max(0, step - accounted));
        double commAndPermute = 0;
        for (String k : List.of("permute", "count exchange", "dispatch all-to-all", "combine all-to-all", "unpermute")) {
            commAndPermute += phases.getOrDefault(k, 0.0);
        }
        long bytes = (long) timings.stream().mapToLong(RankTiming::bytes).average().orElse(0);
        return new Result(ranks, config, tokensPerRank, iterations, step, (double) ranks * tokensPerRank / step, phases,
                bytes, commAndPermute / step);
    }

    /** One EP layer step on GPUs: median seconds, tokens per second over all ranks, TFLOP/s per GPU as the peer counts them. */
    public record GpuResult(int ranks, MoEConfig config, int tokensPerRank, int iterations, double medianSecondsPerStep,
                            double tokensPerSecond, double tflopsPerGpu, long bytesSentPerRank, long[] dispatchRowsToPeers) {}

    /**
     * Rows rank {@code rank} sends to other ranks in one dispatch, as moe4j sends them (one per kept
     * (token, expert) entry) and as a deduplicating dispatch would (one per token and destination rank),
     * from the routing {@code indices_TK} over {@code numExperts} experts on {@code ranks} ranks.
     */
    static long[] dispatchRowsToPeers(int[] indices, int k, int numExperts, int ranks, int rank) {
        int perRank = numExperts / ranks;
        long plain = 0;
        long dedup = 0;
        boolean[] seen = new boolean[ranks];
        for (int t = 0; t < indices.length / k; t++) {
            java.util.Arrays.fill(seen, false);
            for (int j = 0; j < k; j++) {
                int g = indices[t * k + j];
                if (g < 0) continue;
                int owner = g / perRank;
                if (owner == rank) continue;
                plain++;
                if (!seen[owner]) {
                    seen[owner] = true;
                    dedup++;
                }
            }
        }
        return new long[] {plain, dedup};
    }

    /**
     * The EP layer forward and backward on {@code ranks} GPUs of this machine, one rank thread each, rows
     * moving by NCCL. The routing is drawn once by the CPU router on each rank's tokens and fixed (the
     * router's softmax has no CUDA kernel yet), so a step is the dispatch, the expert products, the combine
     * and their backward. Timed as the peer's {@code bench_ep_gpu.py} times its layer: every step between
     * two barriers that wait for the GPUs, the median of the measured steps, and
     * {@code 18·D·H·K·T} FLOPs per rank per step.
     */
    public static GpuResult runOnGpus(MoEConfig config, int ranks, int tokensPerRank, int warmup, int iterations) {
        record RankTiming(double[] seconds, long bytes, long[] rows) {}
        List<RankTiming> timings = moe4j.distributed.launch.Backend.NCCL.run(ranks, Duration.ofMinutes(10), world -> {
            moe4j.tensor.Device gpu = moe4j.tensor.Device.cuda(world.rank());
            MoEMLP moe = MoEMLP.build(config);
            ExpertParallel.apply(moe, DeviceMesh.create(world, MeshSizes.defaults().ep(ranks)));
            TrafficCountingGroup counted = ExpertParallel.countTraffic(moe);
            TrafficCountingGroup traffic = counted != null ? counted : new TrafficCountingGroup(world);
            Tensor xHost = Tensor.randn(Rng.forStream(1, world.rank()), 1.0, tokensPerRank, config.dim());
            moe4j.nn.RouterOutput routing = moe.router().route(xHost);
            long[] rows = dispatchRowsToPeers(routing.indices().toIntArray(), config.topK(), config.numExperts(), ranks, world.rank());
            moe.to(gpu);
            Tensor x = xHost.to(gpu).requiresGrad(true);
            Tensor weights = routing.weights().detach().to(gpu);
            Tensor indices = routing.indices().to(gpu);
            Tensor grad = Tensor.randn(Rng.forStream(2, world.rank()), 1.0, tokensPerRank, config.dim()).to(gpu);
            for (int i = 0; i < warmup; i++) gpuStep(moe, x, weights, indices, grad);
            long bytesBefore = traffic.rowBytes();
            double[] seconds = new double[iterations];
            for (int i = 0; i < iterations; i++) {
                world.barrier(); // waits for this rank's stream, then for every rank
                long start = System.nanoTime();
                gpuStep(moe, x, weights, indices, grad);
                world.barrier();
                seconds[i] = (System.nanoTime() - start) / 1e9;
            }
            return new RankTiming(seconds, (traffic.rowBytes() - bytesBefore) / Math.max(1, iterations), rows);
        });
        double[] steps = timings.get(0).seconds().clone();
        java.util.Arrays.sort(steps);
        double median = steps[steps.length / 2];
        double flops = 18.0 * config.dim() * config.hidden() * config.topK() * tokensPerRank;
        long bytes = (long) timings.stream().mapToLong(RankTiming::bytes).average().orElse(0);
        long[] rows = new long[2];
        for (RankTiming t : timings) {
            rows[0] += t.rows()[0] / ranks;
            rows[1] += t.rows()[1] / ranks;
        }
        return new GpuResult(ranks, config, tokensPerRank, iterations, median, (double) ranks * tokensPerRank / median,
                flops / median / 1e12, bytes, rows);
    }

    private static void gpuStep(MoEMLP moe, Tensor x, Tensor weights, Tensor indices, Tensor grad) {
        try (MemoryScope scope = MemoryScope.open()) {
            Autograd.backward(moe.forwardWithRouting(x, weights, indices), grad);
        }
        moe.zeroGrad();
        if (x.grad() != null) x.grad().fill(0f);
    }

    private static void step(MoEMLP moe, Tensor x, Tensor grad) {
        try (MemoryScope scope = MemoryScope.open()) {
            Autograd.backward(moe.forward(x), grad);
        }
        moe.zeroGrad();
    }

    public static String table(Result r) {
        StringBuilder sb = new StringBuilder();
        MoEConfig c = r.config();
        sb.append(String.format(Locale.ROOT, "EP MoE layer forward+backward: P=%d D=%d H=%d E=%d K=%d, %d tokens/rank, %s %s, %d iterations%n",
                r.ranks(), c.dim(), c.hidden(), c.numExperts(), c.topK(), r.tokensPerRank(), c.activation().configName(),
                c.packed() ? "packed" : "list", r.iterations()));
        sb.append(String.format(Locale.ROOT, "  %-20s %10s %7s%n", "phase (mean/rank)", "ms/step", "share"));
        r.phaseSeconds().forEach((k, v) -> sb.append(String.format(Locale.ROOT, "  %-20s %10.1f %6.1f%%%n", k, v * 1e3, 100 * v / r.secondsPerStep())));
        sb.append(String.format(Locale.ROOT, "  %-20s %10.1f%n", "step (slowest rank)", r.secondsPerStep() * 1e3));
        sb.append(String.format(Locale.ROOT, "tokens/s %.0f (all ranks) | sent to peers %.1f MiB/rank/step | communication + permutation %.1f%% of the step%n",
                r.tokensPerSecond(), r.bytesSentPerRank() / 1048576.0, 100 * r.commAndPermuteShare()));
        return sb.toString();
    }
}
