package moe4j.train;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonPrimitive;
import com.google.gson.JsonSerializer;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Set;
import moe4j.autograd.Autograd;
import moe4j.autograd.Profiler;
import moe4j.data.Batch;
import moe4j.data.DataLoader;
import moe4j.data.Datasets;
import moe4j.data.SyntheticTasks;
import moe4j.data.TokenSource;
import moe4j.distributed.AgreedFailure;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.MeshSizes;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.hf.HfCheckpoint;
import moe4j.hf.HfConfig;
import moe4j.hf.HfWeightFiles;
import moe4j.kernels.ExecutionContext;
import moe4j.nn.MoEMLP;
import moe4j.nn.MoETransformer;
import moe4j.nn.RouterKind;
import moe4j.nn.SigmoidTopKRouter;
import moe4j.parallel.GradientSync;
import moe4j.parallel.Parallelize;
import moe4j.tensor.Device;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;

/**
 * The training loop of one rank. Every rank runs it with the same config: the mesh lays the ranks out,
 * the data is sharded over all data ranks ({@code dp_replicate × dp_shard × ep}; the tp ranks of a data
 * rank share its batch), and after each
 * backward pass the gradients are synchronised so that the run equals one rank on the global batch.
 * Everything reported (loss, norm, expert load) is reduced over the data ranks, so it is the same on
 * every rank; {@code listener} is called on every rank and usually ignores all but rank 0.
 */
public final class Trainer {
    private Trainer() {}

    /**
     * What a finished run reports.
     *
     * @param gatheredPeakBytes sharded runs: the most bytes of whole parameters this rank held at once within a
     *     training step, as counted while they were gathered and freed (0 unsharded)
     * @param kernelTiming on an asynchronous device (a GPU), this rank's kernels of the last step (when it comes after
     *     the profiled one), by name, without draining the device between phases; null where nothing was timed
     */
    public record Summary(long firstStep, long lastStep, double finalLoss, double finalCrossEntropy, double tokensPerSecond,
                          long parameters, long activeParameters, List<StepMetrics> history, Path lastCheckpoint,
                          StepBreakdown breakdown, long peakDeviceBytes, long gatheredPeakBytes,
                          moe4j.kernels.KernelTiming kernelTiming) {}

    /**
     * Where one step's time went on this rank, by phase (attention, norms, MoE router, permutation, expert
     * products, all-to-alls, gradient synchronisation, clipping, optimizer; "other" is the rest: embedding,
     * output layer, loss and what no phase claims). Measured on one step early in the run; on a GPU the
     * stream is drained at every phase boundary, so that step runs a little slower than the others.
     */
    public record StepBreakdown(long step, double seconds, java.util.Map<String, Double> phaseSeconds) {}

    /** Receives progress; called on every rank. */
    public interface Listener {
        /**
         * @param unigramEntropy the data's unigram entropy in nats where the source knows it (synthetic
         *     tasks), else NaN: the loss a model that learned nothing would stay at
         */
        default void onStart(TrainConfig config, int rank, long firstStep, long parameters, double unigramEntropy, Start start) {}

        /** Something the user should know that does not stop the run (e.g. a damaged checkpoint passed over). */
        default void onWarning(int rank, String message) {}

        default void onStep(int rank, StepMetrics metrics) {}

        default void onCheckpoint(int rank, Path checkpoint) {}
    }

    /**
     * How a run begins: its identity (recorded in every checkpoint and metrics line), and whether it may
     * replace what another run left in its folders ({@code --overwrite}).
     */
    public record Start(String run, boolean overwrite, Footprint footprint) {}

    /**
     * What this rank keeps and sends for its parameters: float32 bytes of parameters + gradients + AdamW
     * moments kept between steps, the same without sharding, bytes sent per step by the sharded
     * gradient reduce-scatter and parameter all-gathers (0 without sharding), and the peak of whole
     * parameters a sharded step holds at once (one module and the next, prefetched) against the whole model.
     */
    public record Footprint(long stateBytes, long unshardedStateBytes, long shardingBytesPerStep, long gatheredPeakBytes,
                            long wholeParameterBytes) {}

    /** Writes the run identity a checkpoint stores; the router by its config spelling, as the TOML gives it. */
    private static final Gson GSON = new GsonBuilder()
            .registerTypeAdapter(RouterKind.class, (JsonSerializer<RouterKind>) (kind, type, context) -> new JsonPrimitive(kind.configName()))
            .create();

    /** The prefix of the Hugging Face copy of a checkpoint, {@code hf-step-NNNNNN} beside {@code step-NNNNNNNN}. */
    private static final String HF_COPY = "hf-step-";

    /**
     * Removes the Hugging Face copies whose checkpoint of the same step is gone (pruned by
     * {@code keep_last}, or another run's replaced by {@code --overwrite}): the copies are kept as long as
     * the checkpoints are.
     */
    private static void pruneHfCopies(Path dir) {
        try {
            Set<Long> kept = new HashSet<>();
            for (Path c : Checkpoint.checkpointDirs(dir)) kept.add(Checkpoint.stepOf(c));
            List<Path> copies;
            try (var entries = Files.list(dir)) {
                copies = entries.filter(p -> p.getFileName().toString().matches(HF_COPY + "\\d+")).toList();
            }
            for (Path copy : copies) {
                if (!kept.contains(Long.parseLong(copy.getFileName().toString().substring(HF_COPY.length())))) {
                    Checkpoint.deleteRecursively(copy);
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("pruning the Hugging Face copies in " + dir, e);
        }
    }

    /** {@link #run(TrainConfig, ProcessGroup, boolean, boolean, Listener)} that replaces nothing of another run. */
    public static Summary run(TrainConfig config, ProcessGroup world, boolean resume, Listener listener) {
        return run(config, world, resume, false, listener);
    }

    /**
     * Trains {@code config} on this rank of {@code world}. Before step 1 every rank agrees that the run may
     * go ahead, so that a refusal ends all ranks with the same sentence and nothing written: a resume
     * picks the newest intact checkpoint and must be the same, unfinished run; a fresh run needs an unused
     * (or, with {@code overwrite}, a replaceable) writable checkpoint folder; the listener's
     * {@link Listener#onStart} (the metrics file) may refuse too.
     */
    public static Summary run(TrainConfig config, ProcessGroup world, boolean resume, boolean overwrite, Listener listener) {
        if (world.size() != config.worldSize()) {
            throw new IllegalArgumentException("Parallelism dimensions (" + config.dpReplicate() + " × " + config.dpShard()
                    + " × " + config.tp() + " × 1 × 1 × " + config.ep() + " = " + config.worldSize() + ") do not match world_size (" + world.size() + ")");
        }
        DeviceMesh mesh = world.size() == 1 ? null
                : DeviceMesh.create(world, MeshSizes.defaults().dpReplicate(config.dpReplicate()).dpShard(config.dpShard()).ep(config.ep())
                        .tp(config.tp()));
        HfConfig hf = config.initFrom() == null ? null : HfConfig.read(config.initFrom());
        // a model from a folder is filled from its weights (or from moe4j's checkpoint on resume): no random draws
        MoETransformer model = hf == null ? new MoETransformer(config.model()) : MoETransformer.uninitialized(config.model(), hf.options());
        long parameters = model.parameterCount(); // before expert parallelism keeps this rank's share
        Set<String> norms = normWeights(model); // before sharding leaves only this rank's pieces
        // the rank computes where its context says; the same draws initialise the model on every device
        Device device = ExecutionContext.current().device();
        model.to(device);
        GradientSync sync = Parallelize.apply(model, mesh);
        if (hf != null && !resume) {
            // after expert parallelism: each rank reads only the experts it keeps, so a missing or damaged
            // file may fail on some ranks only; they agree, and every rank ends with the same sentence
            sync.gatherParameters(); // sharded: whole parameters to read into, then this rank's pieces of them
            AgreedFailure.agree(world, () -> {
                try (HfWeightFiles files = new HfWeightFiles(config.initFrom())) {
                    HfCheckpoint.loadWeights(model, hf.family(), files);
                }
            });
            sync.takePiecesFromParameters();
            sync.releaseParameters();
        }
        Set<Tensor> noDecay = java.util.Collections.newSetFromMap(new IdentityHashMap<>());
        norms.forEach(name -> noDecay.add(sync.optimizerParameters().get(name)));
        AdamW optimizer = new AdamW(sync.optimizerParameters(), noDecay, config.beta1(), config.beta2(), config.eps(),
                config.weightDecay());

        TokenSource[] opened = new TokenSource[1];
        // every rank opens the same data: a missing or unfitting file ends them all with one sentence
        AgreedFailure.agree(world, () -> {
            opened[0] = Datasets.open(config.data(), config.seed());
            if (opened[0].vocabSize() > config.model().vocabSize()) {
                throw new IllegalArgumentException("data '" + config.data() + "' has token ids up to " + (opened[0].vocabSize() - 1)
                        + ", which is >= vocab_size (" + config.model().vocabSize() + ")");
            }
        });
        TokenSource source = opened[0];
        ProcessGroup data = sync.dataGroup();
        // one draw per micro-batch; positions are checkpointed in optimizer steps (whatever grad_accum is)
        int microBatches = config.gradAccum();
        DataLoader loader = new DataLoader(source, config.microBatch(), config.seqLen(),
                data == null ? 0 : data.rank(), data == null ? 1 : data.size());

        long[] firstStep = {1};
        // a fresh run's identity: rank 0's start time is the one its checkpoints and metrics record
        String[] run = {RunId.start(config, java.time.Instant.now()).toString()};
        if (resume) {
            Checkpoint.ResumePoint[] from = new Checkpoint.ResumePoint[1];
            // every rank reads the same files, so every rank picks the same checkpoint
            AgreedFailure.agree(world, () -> {
                if (config.checkpointDir() == null) {
                    throw new IllegalArgumentException("--resume needs --checkpoint-dir (or [checkpoint] dir): where to resume from");
                }
                from[0] = Checkpoint.resumeFrom(config.checkpointDir());
                requireSameRun(config, from[0].checkpoint());
                if (from[0].step() >= config.steps()) {
                    throw new IllegalArgumentException("--resume: the run in " + config.checkpointDir() + " already finished: its "
                            + "checkpoint is of step " + from[0].step() + " and steps is " + config.steps() + "; pass --steps N with N > "
                            + from[0].step() + " to train it further");
                }
                Checkpoint.TrainState state = Checkpoint.load(from[0].checkpoint(), model, optimizer, sync);
                loader.seek(state.dataPosition() * microBatches);
                firstStep[0] = state.step() + 1;
            });
            for (String skipped : from[0].skipped()) {
                listener.onWarning(world.rank(), "passed over a damaged checkpoint: " + skipped);
            }
            if (!from[0].skipped().isEmpty()) {
                listener.onWarning(world.rank(), "resuming from the newest intact checkpoint, " + from[0].checkpoint());
            }
            // the identity of the run the checkpoint belongs to (checkpoints written before run identities: a new one)
            if (from[0].run() != null) run[0] = from[0].run();
        }
        double unigram = source instanceof SyntheticTasks synthetic ? synthetic.unigramEntropy(config.seqLen()) : Double.NaN;
        Start launch = new Start(run[0], overwrite,
                new Footprint(sync.trainingStateBytes(), sync.unshardedTrainingStateBytes(), sync.shardingBytesPerStep(),
                        sync.plannedPeakGatheredParameterBytes(), sync.wholeParameterBytes()));
        AgreedFailure.agree(world, () -> {
            // rank 0 writes checkpoints: it checks their folder before anything is written
            if (world.rank() == 0 && config.checkpointDir() != null) {
                if (resume) Checkpoint.requireWritable(config.checkpointDir(), "checkpoint folder");
                else Checkpoint.prepareFreshRun(config.checkpointDir(), overwrite);
            }
            listener.onStart(config, world.rank(), firstStep[0], parameters, unigram, launch);
        });

        List<MoEMLP> moeLayers = model.moeLayers();
        LrSchedule schedule = config.schedule();
        // the third step: the first two pay for kernel compilation, autotuning and the pools' growth
        long profiledStep = Math.min(firstStep[0] + 2, config.steps());
        StepBreakdown breakdown = null;
        moe4j.kernels.KernelTiming kernelTiming = null;
        moe4j.kernels.Kernels kernels = moe4j.kernels.Kernels.of(device);
        List<StepMetrics> history = new ArrayList<>();
        Path lastCheckpoint = null;
        long tokensPerStep = (long) config.globalBatch() * config.seqLen();
        long gatheredPeak = 0;
        for (long step = firstStep[0]; step <= config.steps(); step++) {
            long start = System.nanoTime();
            sync.resetPeakGatheredParameterBytes(); // counted within steps: loading a published model gathers everything
            float[] losses;
            double norm;
            double lr = schedule.at(step);
            double[][] load;
            Profiler profiler = step == profiledStep ? Profiler.start(kernels::synchronize) : null;
            // the last step, once kernels are compiled and loaded and the pools have grown
            boolean timeKernels = step == config.steps() && step > profiledStep;
            RuntimeException timingFailure = null;
            if (timeKernels) kernels.startKernelTiming();
            try (MemoryScope scope = MemoryScope.open()) {
                float[] lossSums = new float[4];
                int[][] routed = new int[moeLayers.size()][];
                // parameters do not change until the optimizer step: their bf16 product copies serve every micro-batch
                try (var parameterCopies = kernels.matmul().reuseCopies(moe4j.kernels.MatmulKernels::isParameter)) {
                    for (int micro = 0; micro < microBatches; micro++) {
                        // each micro-batch's activations are freed before the next one runs
                        try (MemoryScope microScope = MemoryScope.open()) {
                            Batch batch = loader.next();
                            MoETransformer.Loss loss = model.loss(batch.inputs().to(device), batch.targets().to(device));
                            if (micro == 0) model.zeroGrad();
                            if (microBatches == 1) {
                                Autograd.backward(loss.total());
                            } else {
                                // the step's loss is the mean over its micro-batches: each adds 1/A of its gradient
                                Tensor seed = Tensor.zerosLike(loss.total());
                                seed.fill(1f / microBatches);
                                Autograd.backward(loss.total(), seed);
                            }
                            float[] values = {loss.total().item(), loss.crossEntropy().item(), loss.auxLoss().item(), loss.zLoss().item()};
                            for (int i = 0; i < 4; i++) lossSums[i] += values[i];
                            addRoutedCounts(moeLayers, routed);
                        }
                    }
                }
                try (var phase = Profiler.phase("gradient sync")) {
                    sync.synchronize();
                }
                GradClip.Clipping clipping;
                try (var phase = Profiler.phase("gradient clip")) {
                    clipping = GradClip.measure(model, sync, config.gradClip());
                }
                norm = clipping.norm();
                for (int i = 0; i < 4; i++) lossSums[i] /= microBatches;
                losses = reduceMean(data, lossSums);
                // loss and norm are the same on every rank, so every rank stops here together, before a
                // non-finite update reaches the weights (and, through them, the next checkpoint)
                if (!Float.isFinite(losses[0]) || !Double.isFinite(norm)) {
                    String kept = lastCheckpoint != null ? "the last checkpoint, " + lastCheckpoint + ", is intact"
                            : resume ? "the checkpoint this run resumed from is intact"
                            : config.checkpointDir() == null ? "no checkpoints were written (no --checkpoint-dir)"
                            : "no checkpoint was written yet";
                    throw new IllegalStateException("training diverged at step " + step + ": loss " + losses[0]
                            + ", gradient norm " + norm + "; the update was not applied (lower lr = " + config.lr()
                            + " or set grad_clip; " + kept + ")");
                }
                try (var phase = Profiler.phase("optimizer")) {
                    optimizer.step(lr, clipping.scale());
                }
                gatheredPeak = Math.max(gatheredPeak, sync.peakGatheredParameterBytes());
                load = expertLoad(moeLayers, routed, data, step, config.steps());
            } finally {
                if (profiler != null) Profiler.stop(); // also when the step throws: the thread must not keep waiting at every phase
                if (timeKernels) {
                    // a device error here must not hide the step's own failure: it is raised below only after a good step
                    try {
                        kernelTiming = kernels.stopKernelTiming();
                    } catch (RuntimeException e) {
                        timingFailure = e;
                    }
                }
            }
            if (timingFailure != null) throw timingFailure;
            double seconds = (System.nanoTime() - start) / 1e9;
            if (profiler != null) {
                java.util.Map<String, Double> phases = new java.util.LinkedHashMap<>(profiler.seconds());
                double accounted = phases.values().stream().mapToDouble(Double::doubleValue).sum();
                phases.put("other", Math.max(0, seconds - accounted));
                breakdown = new StepBreakdown(step, seconds, phases);
            }
            StepMetrics metrics = new StepMetrics(step, losses[0], losses[1], losses[2], losses[3], lr, norm,
                    tokensPerStep / seconds, seconds, load);
            history.add(metrics);
            listener.onStep(world.rank(), metrics);
            boolean last = step == config.steps();
            if (config.checkpointDir() != null && ((config.checkpointEvery() > 0 && step % config.checkpointEvery() == 0) || last)) {
                var routers = Checkpoint.routerState(model);
                lastCheckpoint = Checkpoint.save(config.checkpointDir(), model, optimizer,
                        new Checkpoint.TrainState(step, loader.position() / microBatches, config.seed(), launch.run(),
                                GSON.toJson(config.resumeIdentity()), routers[0], routers[1]),
                        world, config.keepLast(), sync);
                listener.onCheckpoint(world.rank(), lastCheckpoint);
                if (hf != null) {
                    HfCheckpoint.save(model, hf, config.checkpointDir().resolve(String.format(HF_COPY + "%06d", step)), config.initFrom(), world,
                            sync);
                    if (world.rank() == 0) pruneHfCopies(config.checkpointDir());
                }
            }
            if (last && hf != null) HfCheckpoint.save(model, hf, config.outputDir().resolve("hf"), config.initFrom(), world, sync);
        }
        double tokensPerSecond = history.isEmpty() ? 0
                : tokensPerStep * history.size() / history.stream().mapToDouble(StepMetrics::seconds).sum();
        StepMetrics end = history.isEmpty() ? null : history.get(history.size() - 1);
        return new Summary(firstStep[0], config.steps(), end == null ? Double.NaN : end.loss(),
                end == null ? Double.NaN : end.crossEntropy(), tokensPerSecond, parameters,
                activeParameters(config.model(), parameters), history, lastCheckpoint, breakdown,
                device.isCpu() ? -1 : moe4j.tensor.DeviceAllocator.of(device).peakBytesOfThisThread(), gatheredPeak, kernelTiming);
    }

    /** The names of the norm weights (1-D parameters), which take no weight decay. */
    private static Set<String> normWeights(MoETransformer model) {
        Set<String> out = new java.util.HashSet<>();
        model.namedParameters().forEach((name, p) -> {
            if (p.rank() == 1) out.add(name);
        });
        return out;
    }

    /**
     * A resumed run must be the same run: model, data, batch, optimisation settings. Only the parallel
     * layout, the output places and the number of steps may change (a longer run follows the new total's
     * learning-rate schedule).
     */
    /**
     * Model settings of how the expert-parallel exchange travels, not of what the model computes (like ep
     * itself, they change at most the rounding): a run may resume with other values.
     */
    private static final Set<String> EXCHANGE_SETTINGS = Set.of("moeWire", "moeDedup");

    private static void requireSameRun(TrainConfig config, Path checkpoint) {
        com.google.gson.JsonObject stored;
        try {
            stored = com.google.gson.JsonParser.parseString(Checkpoint.storedConfig(checkpoint)).getAsJsonObject();
        } catch (RuntimeException e) {
            throw new IllegalArgumentException("--resume: checkpoint " + checkpoint + " holds no readable run settings", e);
        }
        com.google.gson.JsonObject current = GSON.toJsonTree(config.resumeIdentity()).getAsJsonObject();
        List<String> differences = new ArrayList<>();
        for (String key : current.keySet()) {
            if (key.equals("model") && stored.get(key) instanceof com.google.gson.JsonObject storedModel) {
                com.google.gson.JsonObject model = current.getAsJsonObject(key);
                com.google.gson.JsonObject defaults = GSON.toJsonTree(moe4j.nn.ModelConfig.builder().build()).getAsJsonObject();
                for (String field : model.keySet()) {
                    if (EXCHANGE_SETTINGS.contains(field)) continue;
                    // a setting newer than the checkpoint: it was trained with the setting's default
                    com.google.gson.JsonElement was = storedModel.has(field) ? storedModel.get(field) : defaults.get(field);
                    if (!model.get(field).equals(was)) differences.add("model." + field + ": checkpoint " + was + ", now " + model.get(field));
                }
            } else if (!current.get(key).equals(stored.get(key))) {
                differences.add(key + ": checkpoint " + stored.get(key) + ", now " + current.get(key));
            }
        }
        if (!differences.isEmpty()) {
            throw new IllegalArgumentException("--resume: checkpoint " + checkpoint + " belongs to another run: " + differences);
        }
    }

    /** The mean over the data ranks of each value (every rank had the same number of tokens). */
    private static float[] reduceMean(ProcessGroup data, float... values) {
        if (data == null || data.size() == 1) return values;
        Tensor t = Tensor.of(values, values.length);
        data.allReduce(t, ReduceOp.AVG);
        return t.toFloatArray();
    }

    /**
     * Per MoE layer, the share of this step's routed pairs each expert received over all data ranks; also
     * moves the sigmoid routers' bias with those global counts, once per optimizer step.
     */
    private static double[][] expertLoad(List<MoEMLP> layers, int[][] routed, ProcessGroup data, long step, long maxSteps) {
        if (layers.isEmpty()) return new double[0][];
        int e = layers.get(0).numExperts();
        float[] counts = new float[layers.size() * e];
        for (int l = 0; l < layers.size(); l++) {
            for (int j = 0; j < e; j++) counts[l * e + j] = routed[l][j];
        }
        if (data != null && data.size() > 1) {
            Tensor t = Tensor.of(counts, counts.length);
            data.allReduce(t, ReduceOp.SUM);
            counts = t.toFloatArray();
        }
        double[][] share = new double[layers.size()][e];
        for (int l = 0; l < layers.size(); l++) {
            long[] global = new long[e];
            double total = 0;
            for (int j = 0; j < e; j++) {
                global[j] = Math.round(counts[l * e + j]);
                total += global[j];
            }
            for (int j = 0; j < e; j++) share[l][j] = total == 0 ? 0 : global[j] / total;
            if (layers.get(l).router() instanceof SigmoidTopKRouter sigmoid && layers.get(l).isTraining()) {
                sigmoid.updateBias(global, step, maxSteps);
            }
        }
        return share;
    }

    /** Adds each MoE layer's routed counts of the forward just run to {@code routed} (a step's sums over its micro-batches). */
    private static void addRoutedCounts(List<MoEMLP> layers, int[][] routed) {
        for (int l = 0; l < layers.size(); l++) {
            int[] c = layers.get(l).router().lastOutput().expertCounts();
            if (routed[l] == null) routed[l] = new int[c.length];
            for (int j = 0; j < c.length; j++) routed[l][j] += c[j];
        }
    }

    /** Parameters one token uses: everything but the experts it is not routed to. */
    static long activeParameters(moe4j.nn.ModelConfig m, long total) {
        if (m.numExperts() == 0) return total;
        long perExpert = 3L * m.dim() * m.expertHidden(); // SwiGLU experts: gate, up, down
        return total - (long) m.numMoeLayers() * (m.numExperts() - m.moeTopK()) * perExpert;
    }
}
