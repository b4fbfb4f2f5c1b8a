package moe4j.bench;

import java.time.Duration;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.IntFunction;
import moe4j.autograd.Autograd;
import moe4j.autograd.Profiler;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.Distributed;
import moe4j.distributed.MeshSizes;
import moe4j.distributed.launch.Backend;
import moe4j.kernels.ExecutionContext;
import moe4j.kernels.Kernels;
import moe4j.nn.MoEConfig;
import moe4j.nn.MoEMLP;
import moe4j.parallel.ExpertParallel;
import moe4j.parallel.TrafficCountingGroup;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
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

    /**
     * A CPU run: besides the timing, the bytes each rank sent to others per step (all exchanges, mean over
     * ranks), and one dispatch as measured and counted ({@link DispatchTraffic}).
     */
    public record Result(int ranks, MoEConfig config, int tokensPerRank, int iterations, double secondsPerStep,
                         double tokensPerSecond, Map<String, Double> phaseSeconds, long bytesSentPerRank,
                         double commAndPermuteShare, DispatchTraffic dispatch) {}

    /**
     * What one dispatch of a rank sends to the other ranks (mean over ranks): the rows counted from its
     * routing, one per kept (token, expert) entry and one per (token, destination rank) pair, and the bytes
     * measured on the wire as the layer dispatched (rows of the wire type; the expert ids that a
     * deduplicating dispatch sends with its rows).
     */
    public record DispatchTraffic(long rowsPerEntry, long rowsDeduplicated, long rowBytes, long idBytes) {}

    public static Result run(MoEConfig config, int ranks, int tokensPerRank, int warmup, int iterations) {
        record RankTiming(double seconds, Map<String, Double> phases, long bytes, DispatchTraffic dispatch) {}
        List<RankTiming> timings = Distributed.run(ranks, Duration.ofMinutes(10), world -> {
            int perRank = config.numExperts() / ranks;
            MoEMLP moe = MoEMLP.buildExperts(config, world.rank() * perRank, perRank);
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
            long bytes = (traffic.rowBytes() - bytesBefore) / iterations;
            return new RankTiming(seconds, phases, bytes, counted == null ? null : measureDispatch(moe, x, counted, ranks, world.rank()));
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
                bytes, commAndPermute / step, mean(timings.stream().map(RankTiming::dispatch).toList()));
    }

    /**
     * One more dispatch of {@code x} by the layer, outside the timed steps and without gradients: the rows
     * its routing sends to peers, counted on the host, and the bytes the dispatch put on the wire, measured
     * by {@code traffic} (the layer's counting view of its group). Every rank of the group calls it.
     */
    static DispatchTraffic measureDispatch(MoEMLP moe, Tensor x, TrafficCountingGroup traffic, int ranks, int rank) {
        MoEConfig config = moe.config();
        try (MemoryScope scope = MemoryScope.open()) {
            return Autograd.noGrad(() -> {
                Tensor routed = moe.router().route(x).indices();
                Tensor indices = config.capacityFactor() > 0 ? moe.dropOverflow(routed) : routed;
                long[] rows = dispatchRowsToPeers(indices.to(Device.CPU).toIntArray(), config.topK(), config.numExperts(), ranks, rank);
                long rowBytes = traffic.rowBytes();
                long idBytes = traffic.indexBytes();
                moe.dispatcher().dispatch(x, indices);
                return new DispatchTraffic(rows[0], rows[1], traffic.rowBytes() - rowBytes, traffic.indexBytes() - idBytes);
            });
        }
    }

    /** The mean over ranks of each figure (null when nothing was dispatched across ranks). */
    static DispatchTraffic mean(List<DispatchTraffic> perRank) {
        if (perRank.isEmpty() || perRank.contains(null)) return null;
        long[] sum = new long[4];
        for (DispatchTraffic d : perRank) {
            sum[0] += d.rowsPerEntry();
            sum[1] += d.rowsDeduplicated();
            sum[2] += d.rowBytes();
            sum[3] += d.idBytes();
        }
        int n = perRank.size();
        return new DispatchTraffic(sum[0] / n, sum[1] / n, sum[2] / n, sum[3] / n);
    }

    /**
     * One EP layer step on GPUs: median seconds, tokens per second over all ranks, TFLOP/s per GPU as the peer
     * counts them; the rows' traffic (bytes this rank sends to other ranks per step in the dispatch and
     * combine all-to-alls, forward and backward, mean over ranks), the device time of those four exchanges
     * per step and the bandwidth that makes; device seconds per phase of a profiled step (mean over ranks);
     * one dispatch's traffic to peers, counted per entry and per (token, rank) and measured as the layer sent
     * it ({@code config.dedup()} says which); and the seconds it took to build, initialise and place the layer.
     */
    public record GpuResult(int ranks, MoEConfig config, int tokensPerRank, DType products, DType wire, int iterations,
                            double medianSecondsPerStep, double tokensPerSecond, double tflopsPerGpu, long rowBytesSentPerRank,
                            double allToAllSecondsPerStep, Map<String, Double> phaseSeconds, DispatchTraffic dispatch,
                            double buildSeconds) {
        /** Bytes sent to other ranks per second of the exchanges, in GiB/s (the peer's nccl_a2a.py "GBps"). */
        public double allToAllGiBPerSecond() {
            return allToAllSecondsPerStep > 0 ? rowBytesSentPerRank / allToAllSecondsPerStep / (1L << 30) : 0;
        }

        /**
         * The size of one exchange's buffer on a rank, every row included (its own as well), in MiB: T·K rows of D
         * in the wire type; set it beside nccl_a2a.py's MiB_per_rank.
         */
        public double mibPerExchange() {
            return (double) tokensPerRank * config.topK() * config.dim() * wire.byteSize / (1 << 20);
        }
    }

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
            Arrays.fill(seen, false);
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

    /** The profiler phases of the four row exchanges (their backward is charged to them too). */
    static final List<String> EXCHANGE_PHASES = List.of("dispatch all-to-all", "combine all-to-all");

    /**
     * The EP layer forward and backward on {@code ranks} GPUs of this machine, one rank thread each with
     * its execution context on its GPU ({@code products}: F32 or BF16 matrix products), rows moving by
     * NCCL in the layer's wire type ({@code config.wire()}). Each rank builds only its block of experts
     * ({@link MoEMLP#buildExperts}) and routes with the layer's own router on its GPU: a step is the whole
     * layer, router included, as in the peer's {@code bench_ep_gpu.py}, and is timed as that script times
     * it: every step between two barriers that wait for the GPUs, the median of the measured steps,
     * {@code 18·D·H·K·T} FLOPs per rank per step, the upstream gradient all ones (the gradient of
     * {@code out.sum()}). After the timed steps, {@code profiledSteps} more run with the device waited for
     * at every phase boundary, which gives each phase's device time and the exchanges' bandwidth.
     */
    public static GpuResult runOnGpus(MoEConfig config, int ranks, int tokensPerRank, DType products, int warmup, int iterations,
                                      int profiledSteps) {
        return runOn(Backend.NCCL, Device::cuda, config, ranks, tokensPerRank, products, warmup, iterations, profiledSteps);
    }

    /**
     * {@link #runOnGpus} on any backend, rank r computing on {@code deviceOfRank.apply(r)}: the CPU with the
     * in-JVM backend runs the same steps, timing and accounting where a test can check them.
     */
    static GpuResult runOn(Backend backend, IntFunction<Device> deviceOfRank, MoEConfig config, int ranks, int tokensPerRank,
                           DType products, int warmup, int iterations, int profiledSteps) {
        if (config.numExperts() % ranks != 0) {
            throw new IllegalArgumentException("num_experts (" + config.numExperts() + ") must be divisible by ep (" + ranks + ")");
        }
        record RankTiming(double[] seconds, long bytes, double exchangeSeconds, Map<String, Double> phases, DispatchTraffic dispatch,
                          double buildSeconds, DType wire) {}
        List<RankTiming> timings = backend.run(ranks, Duration.ofMinutes(10), world -> {
            Device gpu = deviceOfRank.apply(world.rank());
            try (ExecutionContext ignored = ExecutionContext.enter(gpu, 1, products)) {
                long buildStart = System.nanoTime();
                int perRank = config.numExperts() / ranks;
                MoEMLP moe = MoEMLP.buildExperts(config, world.rank() * perRank, perRank);
                ExpertParallel.apply(moe, DeviceMesh.create(world, MeshSizes.defaults().ep(ranks)));
                moe.to(gpu);
                TrafficCountingGroup traffic = ExpertParallel.countTraffic(moe);
                Tensor x = Tensor.randn(Rng.forStream(1, world.rank()), 1.0, tokensPerRank, config.dim()).to(gpu).requiresGrad(true);
                Tensor ones = Tensor.zeros(tokensPerRank, config.dim());
                ones.fill(1f);
                Tensor grad = ones.to(gpu);
                Kernels.of(gpu).synchronize();
                double buildSeconds = (System.nanoTime() - buildStart) / 1e9;

                for (int i = 0; i < warmup; i++) gpuStep(moe, x, grad);
                long bytesBefore = traffic.rowBytes();
                double[] seconds = new double[iterations];
                for (int i = 0; i < iterations; i++) {
                    world.barrier(); // waits for this rank's stream, then for every rank
                    long start = System.nanoTime();
                    gpuStep(moe, x, grad);
                    world.barrier();
                    seconds[i] = (System.nanoTime() - start) / 1e9;
                }
                long bytes = (traffic.rowBytes() - bytesBefore) / Math.max(1, iterations);

                Map<String, Double> phases = new LinkedHashMap<>();
                double exchange = 0;
                if (profiledSteps > 0) {
                    world.barrier();
                    Profiler profiler = Profiler.start(Kernels.of(gpu)::synchronize);
                    for (int i = 0; i < profiledSteps; i++) gpuStep(moe, x, grad);
                    Profiler.stop();
                    profiler.seconds().forEach((k, v) -> phases.put(k, v / profiledSteps));
                    for (String phase : EXCHANGE_PHASES) exchange += phases.getOrDefault(phase, 0.0);
                }

                // one more dispatch outside the timed steps: its rows counted from the routing, its bytes measured
                DispatchTraffic dispatch = measureDispatch(moe, x, traffic, ranks, world.rank());
                DType wire = config.wire().resolve(products);
                return new RankTiming(seconds, bytes, exchange, phases, dispatch, buildSeconds, wire);
            }
        });
        double[] steps = timings.get(0).seconds().clone();
        Arrays.sort(steps);
        double median = steps[steps.length / 2];
        double flops = 18.0 * config.dim() * config.hidden() * config.topK() * tokensPerRank;
        long bytes = (long) timings.stream().mapToLong(RankTiming::bytes).average().orElse(0);
        double exchange = timings.stream().mapToDouble(RankTiming::exchangeSeconds).average().orElse(0);
        Map<String, Double> phases = new LinkedHashMap<>();
        for (RankTiming t : timings) t.phases().forEach((k, v) -> phases.merge(k, v / ranks, Double::sum));
        DispatchTraffic dispatch = mean(timings.stream().map(RankTiming::dispatch).toList());
        double build = timings.stream().mapToDouble(RankTiming::buildSeconds).max().orElse(0);
        return new GpuResult(ranks, config, tokensPerRank, products, timings.get(0).wire(), iterations, median,
                (double) ranks * tokensPerRank / median, flops / median / 1e12, bytes, exchange, phases, dispatch, build);
    }

    /** The machine-readable line of a GPU run, one {@code key=value} per field, like the peer's {@code KF_EP_GPU} line. */
    public static String gpuLine(GpuResult r) {
        MoEConfig c = r.config();
        return String.format(Locale.ROOT, "MOE4J_EP_GPU ranks=%d D=%d H=%d E=%d K=%d tokens_per_rank=%d dtype=%s wire=%s "
                        + "median_step_ms=%.2f total_tokens_per_s=%.0f TFLOPs_per_gpu=%.1f a2a_MiB_per_exchange=%.1f "
                        + "sent_MiB_per_rank_step=%.1f a2a_ms_per_step=%.3f a2a_GiBps_per_rank=%.1f dispatch_rows_to_peers=%d "
                        + "deduplicated=%d dedup=%s dispatch_bytes_to_peers=%d dispatch_id_bytes_to_peers=%d build_s=%.1f",
                r.ranks(), c.dim(), c.hidden(), c.numExperts(), c.topK(), r.tokensPerRank(), name(r.products()), name(r.wire()),
                r.medianSecondsPerStep() * 1e3, r.tokensPerSecond(), r.tflopsPerGpu(), r.mibPerExchange(),
                r.rowBytesSentPerRank() / 1048576.0, r.allToAllSecondsPerStep() * 1e3, r.allToAllGiBPerSecond(),
                r.dispatch().rowsPerEntry(), r.dispatch().rowsDeduplicated(), c.dedup() ? "on" : "off", r.dispatch().rowBytes(),
                r.dispatch().idBytes(), r.buildSeconds());
    }

    private static String name(DType t) {
        return t.name().toLowerCase(Locale.ROOT);
    }

    private static void gpuStep(MoEMLP moe, Tensor x, Tensor grad) {
        // as in a training step: the weights' bf16 copies serve the forward and the backward products
        try (MemoryScope scope = MemoryScope.open(); var copies = moe4j.kernels.Kernels.of(x.device()).matmul().reuseCopies(moe4j.kernels.MatmulKernels::isParameter)) {
            Autograd.backward(moe.forward(x), grad);
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
        DispatchTraffic d = r.dispatch();
        if (d != null) {
            sb.append(String.format(Locale.ROOT, "one dispatch to peers, per rank: %d rows one per entry, %d one per (token, rank); "
                            + "measured with dedup %s: %d bytes of rows + %d of expert ids%n",
                    d.rowsPerEntry(), d.rowsDeduplicated(), c.dedup() ? "on" : "off", d.rowBytes(), d.idBytes()));
        }
        return sb.toString();
    }
}
