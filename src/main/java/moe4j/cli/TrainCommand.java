package moe4j.cli;

import com.google.gson.GsonBuilder;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import moe4j.distributed.launch.Backend;
import moe4j.kernels.ExecutionContext;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.distributed.Distributed;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.mpi.MpiRuntime;
import moe4j.train.MetricsLog;
import moe4j.train.StepMetrics;
import moe4j.train.TrainConfig;
import moe4j.train.Trainer;
import moe4j.train.TrainingPlot;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code moe4j train}: trains the MoE language model with expert parallelism × data parallelism. With no
 * arguments: the small default model on 4 EP ranks in this JVM, on the built-in synthetic tasks.
 */
@Command(name = "train", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Train an MoE transformer with expert and data parallelism (default: 4 EP ranks in this JVM, synthetic data).")
public final class TrainCommand implements Callable<Integer> {
    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Option(names = "--config", paramLabel = "FILE", description = "TOML config with [model], [train], [data], [parallel], [checkpoint]")
    Path config;
    @Option(names = "--ep", description = "expert-parallel ranks") Integer ep;
    @Option(names = "--dp-shard", description = "data-parallel (sharded) ranks") Integer dpShard;
    @Option(names = "--dp-replicate", description = "data-parallel (replicated) ranks") Integer dpReplicate;
    @Option(names = "--tp", description = "tensor-parallel ranks (attention heads, dense MLPs and the vocabulary split over them)") Integer tp;
    @Option(names = "--backend", description = "local (ranks are threads of this JVM), mpi (one rank per process of an mpirun/srun job), nccl (one rank per GPU) or auto (the default: nccl for several GPU ranks, else mpi when started by an MPI launcher, else local)") String backend;
    @Option(names = "--device", description = "cpu (the default) or cuda: each rank computes on a GPU of its own") String device;
    @Option(names = "--dtype", description = "f32 (the default; exact float32, TF32 off) or bf16 (cuda only: mixed precision, bf16 products with fp32 accumulation, fp32 weights and optimizer state)") String dtype;
    @Option(names = "--steps", description = "optimizer steps") Long steps;
    @Option(names = "--batch-size", description = "sequences per step over all ranks") Integer batchSize;
    @Option(names = "--seq-len", description = "tokens per sequence") Integer seqLen;
    @Option(names = "--grad-accum", description = "micro-batches per optimizer step (gradients add up; batch_size is per step)")
    Integer gradAccum;
    @Option(names = "--lr", description = "peak learning rate (the cosine schedule then ends at lr/10)") Double lr;
    @Option(names = "--seed", description = "seed of the model and the data") Long seed;
    @Option(names = "--data", description = "synthetic | text:PATH | tokens:PATH[:u16|:u32]") String data;
    @Option(names = "--checkpoint-dir", description = "write checkpoints here") Path checkpointDir;
    @Option(names = "--checkpoint-every", description = "steps between checkpoints (0: at the end only)") Long checkpointEvery;
    @Option(names = "--init-from", description = "start from a Hugging Face model folder (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE): its config.json is the model; the result is also saved in its layout, under OUTPUT_DIR/hf and with each checkpoint") Path initFrom;
    @Option(names = "--keep-last", paramLabel = "N", description = "checkpoints to keep: the newest N and always the one 'latest' names (default "
            + TrainConfig.DEFAULT_KEEP_LAST + "; 0 keeps all)") Integer keepLast;
    @Option(names = "--resume", description = "continue from the latest intact checkpoint in --checkpoint-dir") boolean resume;
    @Option(names = "--overwrite", description = "replace what another run left: its checkpoints in --checkpoint-dir (fresh run), "
            + "its metrics in --output-dir (--resume)") boolean overwrite;
    @Option(names = "--output-dir", description = "metrics.jsonl and training.png go here (default runs/latest)") Path outputDir;
    @Option(names = "--log-every", description = "steps between log lines") Long logEvery;
    @Option(names = "--threads", description = "GEMM threads per rank (default: the cores divided among this JVM's ranks, at least 1)") Integer threads;
    @Option(names = "--json", description = "end with one line holding the summary as a JSON object") boolean json;

    @Override
    public Integer call() throws IOException {
        TrainConfig cfg = buildConfig();
        PrintStream out = System.out;
        Backend be = Backend.parse(cfg.backend(), cfg.onGpus() && cfg.worldSize() > 1);
        Duration deadline = Distributed.configuredTimeout(); // the same setting as every other command, on every backend
        // one process holds all ranks (rank threads) or one (a process of an mpirun job); the cores are shared among them
        int ranksHere = be.oneRankPerProcess() ? 1 : cfg.worldSize();
        String refusal = cfg.onGpus() ? null : memoryRefusal(cfg, ranksHere); // a GPU's pool names what did not fit
        if (be == Backend.MPI) {
            ProcessGroup world = MpiRuntime.init(deadline);
            if (refusal == null && world.size() != cfg.worldSize()) refusal = jobSizeRefusal(cfg, world.size());
            if (refusal != null) {
                // every process has the same arguments and ends here alike: leave MPI cleanly, rank 0 says why
                int rank = world.rank();
                MpiRuntime.finish();
                if (rank != 0) return Main.EXIT_USAGE;
            }
        }
        if (refusal != null) throw new CommandLine.ParameterException(spec.commandLine(), refusal);
        int gemmThreads = threads != null ? threads : Math.max(1, Runtime.getRuntime().availableProcessors() / ranksHere);
        if (gemmThreads < 1) throw new CommandLine.ParameterException(spec.commandLine(), "--threads must be >= 1, got " + gemmThreads);
        Reporter reporter = new Reporter(cfg, out);
        long started = System.nanoTime();
        Trainer.Summary summary;
        try {
            // local: all ranks are threads here; mpi: this process is one rank of the mpirun/srun job
            // each rank thread computes in its own context: its GEMM threads belong to it, not to the process
            summary = be.run(cfg.worldSize(), deadline, world -> {
                try (ExecutionContext ignored = ExecutionContext.enter(rankDevice(cfg, world), gemmThreads,
                        cfg.dtype().equals("bf16") ? DType.BF16 : DType.F32)) {
                    return Trainer.run(cfg, world, resume, overwrite, reporter);
                }
            }).get(0);
        } finally {
            reporter.close();
        }
        if (!reporter.isRankZero()) return 0; // under MPI only rank 0 reports
        double wall = (System.nanoTime() - started) / 1e9;
        reporter.finish(summary, wall);
        if (json) {
            Map<String, Object> o = new LinkedHashMap<>();
            o.put("steps", summary.lastStep());
            o.put("first_step", summary.firstStep());
            o.put("final_loss", summary.finalLoss());
            o.put("final_ce", summary.finalCrossEntropy());
            o.put("mean_loss_last_steps", reporter.recentMean(false));
            o.put("mean_ce_last_steps", reporter.recentMean(true));
            o.put("tokens_per_s", summary.tokensPerSecond());
            o.put("parameters", summary.parameters());
            o.put("active_parameters", summary.activeParameters());
            if (cfg.dpShard() > 1) o.put("gathered_parameters_peak_bytes", summary.gatheredPeakBytes());
            o.put("unigram_entropy", reporter.unigramEntropy);
            o.put("world_size", cfg.worldSize());
            o.put("ep", cfg.ep());
            o.put("wall_s", wall);
            o.put("peak_rss_bytes", moe4j.tensor.ProcessMemory.peakResidentBytes());
            o.put("model_flops_per_token", Throughput.flopsPerToken(cfg));
            o.put("device", cfg.device());
            o.put("dtype", cfg.dtype());
            if (cfg.onGpus()) {
                o.put("mfu", reporter.gpuUse.mfu());
                o.put("peak_tflops_per_gpu", reporter.gpuUse.tflopsPerGpu());
                o.put("steady_tokens_per_s", reporter.gpuUse.tokensPerSecond());
                o.put("peak_gpu_memory_bytes", summary.peakDeviceBytes());
            } else {
                o.put("mfu", Throughput.mfu(cfg, summary.tokensPerSecond()));
                o.put("peak_gflops_per_core", Throughput.peak().gflopsPerCore());
                o.put("peak_source", Throughput.peak().source());
            }
            if (summary.breakdown() != null) {
                o.put("profiled_step", summary.breakdown().step());
                o.put("profiled_step_phase_seconds", summary.breakdown().phaseSeconds());
            }
            o.put("metrics", reporter.metricsFile().toString());
            o.put("plot", reporter.plotFile().toString());
            if (summary.lastCheckpoint() != null) o.put("checkpoint", summary.lastCheckpoint().toString());
            out.println(new GsonBuilder().serializeSpecialFloatingPointValues().create().toJson(o));
        }
        return 0;
    }

    /** Where a rank computes: the CPU, or its GPU (the NCCL backend's choice; cuda:0 for a single rank). */
    static Device rankDevice(TrainConfig cfg, ProcessGroup world) {
        if (!cfg.onGpus()) return Device.CPU;
        return world instanceof moe4j.distributed.nccl.NcclProcessGroup nccl ? nccl.device() : Device.cuda(0);
    }

    /**
     * Why one step of {@code cfg} cannot fit this machine, or null: a lower bound of the activations the
     * forward pass keeps for the backward pass on {@code ranksHere} ranks, against the physical memory, so
     * that a huge batch is a sentence before anything is allocated instead of an OutOfMemoryError later.
     */
    static String memoryRefusal(TrainConfig cfg, int ranksHere) {
        double need = stepActivationBytes(cfg) * ranksHere;
        long total = ((com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory.getOperatingSystemMXBean())
                .getTotalMemorySize();
        if (need <= total) return null;
        return String.format(Locale.ROOT, "batch_size %d × seq_len %d needs at least %,.1f GiB of memory for one micro-batch's activations"
                        + " (%d rank%s in this process), more than this machine's %,.1f GiB: lower --batch-size or --seq-len, raise"
                        + " --grad-accum, or spread the batch over more processes", cfg.globalBatch(), cfg.seqLen(), need / (1L << 30), ranksHere,
                ranksHere == 1 ? "" : "s", total / (double) (1L << 30));
    }

    /**
     * Bytes of FP32 activations one rank keeps for the backward pass of one step (a lower bound: gradients,
     * temporaries and the weights come on top): per token and layer, the attention's inputs and outputs and
     * its score and probability rows, the routed copies and expert hidden states; the logits at the end.
     */
    static double stepActivationBytes(TrainConfig cfg) {
        var m = cfg.model();
        double tokens = (double) cfg.microBatch() * cfg.seqLen() / cfg.worldSize(); // one micro-batch's activations live at once
        double kv = (double) m.dim() / m.nHeads() * m.nKvHeads();
        double attention = 4.0 * m.dim() + 2 * kv + 2.0 * m.nHeads() * cfg.seqLen();
        double ffn = m.numExperts() > 0
                ? m.dim() + m.numExperts() + (double) m.moeTopK() * (2.0 * m.dim() + 3.0 * m.expertHidden())
                : m.dim() + 3.0 * m.ffnHidden();
        double perToken = m.nLayers() * (attention + ffn) + m.dim() + 2.0 * m.vocabSize();
        return 4 * tokens * perToken;
    }

    /** What to do when an MPI job's process count is not the config's world size. */
    static String jobSizeRefusal(TrainConfig cfg, int processes) {
        int dp = cfg.dpShard() * cfg.dpReplicate() * cfg.tp();
        String fix = processes % dp == 0 ? " or pass --ep " + processes / dp : "";
        return "the MPI job has " + processes + " processes but dp_replicate × dp_shard × ep" + (cfg.tp() > 1 ? " × tp" : "") + " = "
                + cfg.dpReplicate() + " × " + cfg.dpShard() + " × " + cfg.ep() + (cfg.tp() > 1 ? " × " + cfg.tp() : "") + " = "
                + cfg.worldSize() + " ranks: start mpirun -np " + cfg.worldSize() + fix;
    }

    TrainConfig buildConfig() {
        TrainConfig.Builder b = config != null ? TrainConfig.fromToml(config) : TrainConfig.defaults();
        if (ep != null) b.ep(ep);
        if (dpShard != null) b.dpShard(dpShard);
        if (dpReplicate != null) b.dpReplicate(dpReplicate);
        if (tp != null) b.tp(tp);
        if (backend != null) b.backend(backend);
        if (device != null) b.device(device);
        if (dtype != null) b.dtype(dtype);
        if (steps != null) b.steps(steps);
        if (batchSize != null) b.batchSize(batchSize);
        if (seqLen != null) b.seqLen(seqLen);
        if (gradAccum != null) b.gradAccum(gradAccum);
        if (lr != null) b.lr(lr).minLr(lr / 10);
        if (seed != null) {
            b.seed(seed);
            b.model().seed(seed);
        }
        if (data != null) b.data(data);
        if (checkpointDir != null) b.checkpointDir(checkpointDir);
        if (checkpointEvery != null) b.checkpointEvery(checkpointEvery);
        if (keepLast != null) b.keepLast(keepLast);
        if (outputDir != null) b.outputDir(outputDir);
        if (logEvery != null) b.logEvery(logEvery);
        if (initFrom != null) b.initFrom(initFrom);
        try {
            return b.build();
        } catch (IllegalArgumentException e) {
            throw new CommandLine.ParameterException(spec.commandLine(), e.getMessage());
        }
    }

    /** Rank 0's view of the run: progress bar or log lines, metrics file, final table and picture. */
    static final class Reporter implements Trainer.Listener, AutoCloseable {
        private final TrainConfig cfg;
        private final PrintStream out;
        private final boolean interactive;
        private MetricsLog metrics;
        private final List<StepMetrics> history = new ArrayList<>();
        double unigramEntropy = Double.NaN;
        /** What {@link #finish} measured on a GPU run: the steady tokens/s, the GPU's dense GEMM rate and the MFU they give. */
        record GpuUse(double tokensPerSecond, double tflopsPerGpu, double mfu) {}

        GpuUse gpuUse;
        private long firstStep;
        private boolean barShown;

        Reporter(TrainConfig cfg, PrintStream out) {
            this.cfg = cfg;
            this.out = out;
            this.interactive = System.console() != null && System.console().isTerminal();
        }

        Path metricsFile() {
            return cfg.outputDir().resolve("metrics.jsonl");
        }

        /** Whether rank 0 runs in this process (always with the local backend; one process of an MPI job). */
        boolean isRankZero() {
            return metrics != null;
        }

        Path plotFile() {
            return cfg.outputDir().resolve("training.png");
        }

        @Override
        public void onStart(TrainConfig config, int rank, long first, long parameters, double unigram, Trainer.Start start) {
            if (rank != 0) return;
            unigramEntropy = unigram;
            metrics = new MetricsLog(metricsFile(), first, start.run(), start.overwrite());
            history.addAll(metrics.earlierSteps()); // the plot and the table cover the whole run
            firstStep = first;
            var m = config.model();
            out.printf(Locale.ROOT, "moe4j train: %s model, %,d parameters (dim %d, %d layers, %d experts top-%d, expert hidden %d)%n",
                    m.numExperts() > 0 ? "MoE" : "dense", parameters, m.dim(), m.nLayers(), m.numExperts(), m.moeTopK(), m.expertHidden());
            out.printf(Locale.ROOT, "  ranks: %d (%s backend) = dp_replicate %d × dp_shard %d × ep %d × tp %d%s | batch %d × seq %d = %,d tokens/step%s | %d steps%s%n",
                    config.worldSize(), Backend.parse(config.backend()).name().toLowerCase(Locale.ROOT), config.dpReplicate(), config.dpShard(), config.ep(),
                    config.tp(), config.dpShard() > 1 ? " (parameters, gradients and optimizer state sharded over dp_shard)" : "", config.globalBatch(),
                    config.seqLen(), (long) config.globalBatch() * config.seqLen(),
                    config.gradAccum() > 1 ? " in " + config.gradAccum() + " micro-batches of " + config.microBatch() : "", config.steps(),
                    first > 1 ? " (resuming at step " + first + ")" : "");
            Trainer.Footprint footprint = start.footprint();
            if (config.dpShard() > 1) {
                out.printf(Locale.ROOT, "  per rank: parameters + gradients + AdamW state %.2f MiB (%.3f of unsharded %.2f MiB) | sharding sends %.2f MiB/step%n",
                        footprint.stateBytes() / 1048576.0, (double) footprint.stateBytes() / footprint.unshardedStateBytes(),
                        footprint.unshardedStateBytes() / 1048576.0, footprint.shardingBytesPerStep() / 1048576.0);
                out.printf(Locale.ROOT, "  whole parameters gathered at once: at most %.2f MiB of %.2f MiB (one module and the next, prefetched)%n",
                        footprint.gatheredPeakBytes() / 1048576.0, footprint.wholeParameterBytes() / 1048576.0);
            }
            String compute = config.onGpus()
                    ? String.format(Locale.ROOT, "device: %d × %s, products in %s%s", config.worldSize(), moe4j.bench.CudaInfo.gpuName(ExecutionContext.current().device()),
                            config.dtype(), config.dtype().equals("bf16") ? " (fp32 accumulation; fp32 weights, optimizer state and activations)" : " (TF32 off)")
                    : "GEMM threads per rank: " + ExecutionContext.current().cpuThreads();
            out.printf(Locale.ROOT, "  %s | data: %s%s | output: %s%n", compute, config.data(),
                    Double.isFinite(unigramEntropy) ? String.format(Locale.ROOT, " (unigram entropy %.3f nats)", unigramEntropy) : "",
                    config.outputDir());
            out.println();
            out.printf(Locale.ROOT, "%7s %8s %8s %8s %8s %9s %8s %9s %13s%n", "step", "loss", "ce", "aux", "z", "lr", "gnorm", "tok/s", "load min/max");
        }

        @Override
        public void onStep(int rank, StepMetrics m) {
            if (rank != 0) return;
            history.add(m);
            metrics.write(m);
            boolean log = m.step() % cfg.logEvery() == 0 || m.step() == cfg.steps() || m.step() == firstStep;
            if (interactive) {
                if (log) {
                    clearBar();
                    out.println(line(m));
                }
                drawBar(m);
            } else if (log) {
                out.println(line(m));
            }
        }

        @Override
        public void onWarning(int rank, String message) {
            if (rank != 0) return;
            clearBar();
            System.err.println("moe4j train: warning: " + message);
        }

        @Override
        public void onCheckpoint(int rank, Path checkpoint) {
            if (rank != 0) return;
            clearBar();
            out.println("  checkpoint " + checkpoint);
        }

        private String line(StepMetrics m) {
            double[] b = m.balanceMinMax();
            return String.format(Locale.ROOT, "%7d %8.4f %8.4f %8.4f %8.3f %9.2e %8.3f %9.0f %6.2f/%-6.2f",
                    m.step(), m.loss(), m.crossEntropy(), m.auxLoss(), m.zLoss(), m.lr(), m.gradNorm(), m.tokensPerSecond(), b[0], b[1]);
        }

        private void drawBar(StepMetrics m) {
            int width = 30;
            double frac = (double) m.step() / cfg.steps();
            int filled = (int) Math.round(frac * width);
            double avg = history.stream().mapToDouble(StepMetrics::seconds).average().orElse(0);
            long etaS = Math.round(avg * (cfg.steps() - m.step()));
            out.printf(Locale.ROOT, "\r[%s%s] %d/%d loss %.4f | %.0f tok/s | eta %d:%02d ", "#".repeat(filled),
                    ".".repeat(width - filled), m.step(), cfg.steps(), m.loss(), m.tokensPerSecond(), etaS / 60, etaS % 60);
            out.flush();
            barShown = true;
        }

        private void clearBar() {
            if (barShown) {
                out.print("\r" + " ".repeat(90) + "\r");
                barShown = false;
            }
        }

        void finish(Trainer.Summary s, double wall) throws IOException {
            clearBar();
            out.println();
            if (!history.isEmpty() && history.get(0).expertLoad().length > 0) {
                out.println("Expert load over the run (share of routed tokens × E; 1.00 is perfectly even):");
                int e = history.get(0).expertLoad()[0].length;
                StringBuilder head = new StringBuilder(String.format(Locale.ROOT, "  %-8s", "layer"));
                for (int j = 0; j < e; j++) head.append(String.format(Locale.ROOT, "%6s", "e" + j));
                out.println(head.append(String.format(Locale.ROOT, "%8s %6s", "min", "max")));
                for (int l = 0; l < history.get(0).expertLoad().length; l++) {
                    StringBuilder row = new StringBuilder(String.format(Locale.ROOT, "  %-8s", "moe " + l));
                    double min = Double.MAX_VALUE;
                    double max = 0;
                    for (int j = 0; j < e; j++) {
                        double v = 0;
                        for (StepMetrics m : history) v += m.expertLoad()[l][j] * e / history.size();
                        min = Math.min(min, v);
                        max = Math.max(max, v);
                        row.append(String.format(Locale.ROOT, "%6.2f", v));
                    }
                    out.println(row.append(String.format(Locale.ROOT, "%8.2f %6.2f", min, max)));
                }
                out.println();
            }
            out.printf(Locale.ROOT, "final loss %.4f (cross-entropy %.4f) after step %d; mean of the last %d steps %.4f (cross-entropy %.4f)%s%n",
                    s.finalLoss(), s.finalCrossEntropy(), s.lastStep(), recent(), recentMean(false), recentMean(true),
                    Double.isFinite(unigramEntropy) ? String.format(Locale.ROOT, "; unigram entropy of the data %.3f", unigramEntropy) : "");
            printBreakdown(s.breakdown());
            printKernels(s);
            if (cfg.onGpus()) {
                // the denominator measured now, on the run's first GPU: what its cuBLAS delivers in the run's precision
                boolean bf16 = cfg.dtype().equals("bf16");
                double perGpu = moe4j.bench.CudaInfo.denseGemmTflops(Device.cuda(0), bf16);
                // the first steps compile kernels, time the grouped products' strategies and grow the pools, and
                // the profiled step waits at every phase: utilisation is stated for the steps after it
                long after = s.breakdown() == null ? 0 : s.breakdown().step();
                // the kernel-timed last step records events around every kernel: it is left out when others remain
                long until = s.kernelTiming() != null && s.lastStep() > after + 1 ? s.lastStep() - 1 : s.lastStep();
                double[] steady = history.stream().filter(m -> m.step() > after && m.step() <= until)
                        .mapToDouble(StepMetrics::tokensPerSecond).sorted().toArray();
                double rate = steady.length == 0 ? s.tokensPerSecond() : steady[steady.length / 2];
                String basis = steady.length == 0 ? "mean over the run" : "median of steps " + (after + 1) + "-" + until;
                double mfu = rate * Throughput.flopsPerToken(cfg) / (cfg.worldSize() * perGpu * 1e12);
                out.printf(Locale.ROOT, "%.0f tokens/s over the run, %.0f in the steady state (%s) | MFU %.1f%% of %d × %.0f TFLOP/s (%s dense GEMM measured now, %s)%n",
                        s.tokensPerSecond(), rate, basis, 100 * mfu, cfg.worldSize(), perGpu, bf16 ? "bf16" : "f32",
                        moe4j.bench.CudaInfo.gpuName(Device.cuda(0)));
                out.printf(Locale.ROOT, "peak GPU memory %.2f GiB (rank 0) | %.1f s wall%n", s.peakDeviceBytes() / (double) (1L << 30), wall);
                gpuUse = new GpuUse(rate, perGpu, mfu);
            } else {
                out.printf(Locale.ROOT, "%.0f tokens/s | MFU %.1f%% of %d cores × %.0f GFLOP/s FP32 (measured peak) | peak memory %.0f MiB | %.1f s wall%n",
                        s.tokensPerSecond(), 100 * Throughput.mfu(cfg, s.tokensPerSecond()), Throughput.peak().cores(),
                        Throughput.peak().gflopsPerCore(), moe4j.tensor.ProcessMemory.peakResidentBytes() / 1048576.0, wall);
            }
            if (cfg.dpShard() > 1) {
                out.printf(Locale.ROOT, "whole parameters gathered at once, measured: peak %.2f MiB per rank%n", s.gatheredPeakBytes() / 1048576.0);
            }
            out.printf(Locale.ROOT, "  model FLOPs per token %.3g = 6 × active parameters (%,d) + causal attention 6 × n_layers × dim × seq_len%n",
                    Throughput.flopsPerToken(cfg), s.activeParameters());
            TrainingPlot.write(plotFile(), history, unigramEntropy, "unigram entropy", String.format(Locale.ROOT,
                    "moe4j: %d layers, %d experts top-%d, ep=%d, %d ranks", cfg.model().nLayers(), cfg.model().numExperts(),
                    cfg.model().moeTopK(), cfg.ep(), cfg.worldSize()));
            out.println("metrics: " + metricsFile() + " | plot: " + plotFile()
                    + (TrainingPlot.labelsDrawn() ? "" : " (drawn without labels: this JVM finds no fonts; install fontconfig and a font)"));
        }

        /** Rank 0's per-phase times of the profiled step, largest first. */
        private void printBreakdown(Trainer.StepBreakdown b) {
            if (b == null) return;
            out.printf(Locale.ROOT, "Step %d on rank 0, by phase (the device drained at every phase boundary): %.1f ms%n", b.step(),
                    b.seconds() * 1e3);
            b.phaseSeconds().entrySet().stream().sorted(Map.Entry.<String, Double>comparingByValue().reversed())
                    .forEach(e -> out.printf(Locale.ROOT, "  %-22s %9.1f ms %5.1f%%%n", e.getKey(), e.getValue() * 1e3,
                            100 * e.getValue() / b.seconds()));
            out.println();
        }

        /** Kernels listed by name in a GPU run's summary: enough to see every phase's own kernels. */
        private static final int KERNELS_SHOWN = 30;

        /** Rank 0's kernels of the last step, most device time first (GPU runs). */
        private void printKernels(Trainer.Summary s) {
            moe4j.kernels.KernelTiming t = s.kernelTiming();
            if (t == null || t.kernels().isEmpty()) return;
            int shown = Math.min(KERNELS_SHOWN, t.kernels().size());
            out.printf(Locale.ROOT, "Step %d on rank 0, by kernel: %.1f ms from the first kernel to the last, %.1f ms of it in timed kernels "
                    + "(the rest: the device idle, waiting for the host, or in collectives); the %d largest:%n",
                    s.lastStep(), t.spanSeconds() * 1e3, t.busySeconds() * 1e3, shown);
            for (var e : t.kernels().subList(0, shown)) {
                out.printf(Locale.ROOT, "  %9.2f ms %5.1f%% %6d× %s%n", e.seconds() * 1e3, 100 * e.seconds() / t.spanSeconds(), e.calls(), e.name());
            }
            out.println();
        }

        /** Steps the summary averages over: single steps are noisy when batches mix tasks. */
        int recent() {
            return Math.min(20, history.size());
        }

        double recentMean(boolean crossEntropy) {
            return history.subList(history.size() - recent(), history.size()).stream()
                    .mapToDouble(m -> crossEntropy ? m.crossEntropy() : m.loss()).average().orElse(Double.NaN);
        }

        @Override
        public void close() {
            if (metrics != null) metrics.close();
        }
    }
}
