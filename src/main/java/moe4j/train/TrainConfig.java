package moe4j.train;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.toml.TomlMapper;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import moe4j.nn.ModelConfig;

/**
 * A training run: the model, the optimisation, the data, the parallel layout and where results go.
 * Read from a TOML file with sections {@code [model]} (the {@link ModelConfig} keys), {@code [train]},
 * {@code [data]}, {@code [parallel]} and {@code [checkpoint]}; command-line options override it.
 *
 * @param globalBatch sequences per optimizer step over all data ranks
 * @param gradAccum micro-batches per optimizer step: each rank runs forward and backward on
 *     {@code globalBatch / (data ranks × gradAccum)} sequences at a time and the gradients add up, each
 *     micro-batch's loss weighted 1/gradAccum (the same update as one pass over the whole batch where no loss
 *     term depends on the whole batch's expert counts: the load-balancing loss, capacity drops and gradient
 *     scaling see one micro-batch at a time, as in any framework), in less memory, with the optimizer's fixed
 *     cost shared
 * @param data dataset spec: {@code synthetic}, {@code text:PATH}, {@code tokens:PATH[:u16|:u32]}
 * @param backend {@code local} (ranks as threads of this JVM), {@code mpi} (one rank per process of an
 *     mpirun/srun job), {@code nccl} (one rank per GPU, tensors moved by NCCL) or {@code auto} (nccl when
 *     several ranks compute on GPUs, else mpi when launched by an MPI launcher, else local)
 * @param device {@code cpu} or {@code cuda} (each rank on a GPU of its own)
 * @param dtype what matrix products compute in: {@code f32} (exact float32, TF32 off) or {@code bf16}
 *     (mixed precision on GPUs: bfloat16 operands, float32 accumulation; parameters, optimizer state,
 *     activations and gradients stay float32)
 * @param checkpointDir null for no checkpoints
 * @param initFrom a Hugging Face model folder the run starts from (its config.json is the model; checkpoints are
 *        also written in its layout), or null
 * @param checkpointEvery steps between checkpoints (0: only at the end)
 * @param keepLast checkpoints kept in {@code checkpointDir} (the newest ones and always the one
 *     {@code latest} names); 0 keeps all
 */
public record TrainConfig(ModelConfig model, long steps, int globalBatch, int gradAccum, int seqLen, double lr, double minLr,
                          long warmupSteps, double weightDecay, double beta1, double beta2, double eps, double gradClip,
                          long seed, String data, int ep, int dpShard, int dpReplicate, int tp, String backend,
                          String device, String dtype, Path checkpointDir, long checkpointEvery, int keepLast, Path outputDir, long logEvery, Path initFrom) {

    public static final List<String> TRAIN_KEYS = List.of("steps", "batch_size", "grad_accum", "seq_len", "lr", "min_lr", "warmup_steps",
            "weight_decay", "beta1", "beta2", "eps", "grad_clip", "seed", "log_every", "output_dir", "device", "dtype");
    public static final List<String> PARALLEL_KEYS = List.of("ep", "dp_shard", "dp_replicate", "tp", "backend");
    public static final List<String> DATA_KEYS = List.of("source");
    public static final List<String> CHECKPOINT_KEYS = List.of("dir", "every", "keep_last");
    /** Checkpoints kept by default: enough to fall back from a damaged latest one, few enough not to fill a disk. */
    public static final int DEFAULT_KEEP_LAST = 3;

    public TrainConfig {
        if (steps < 1) throw new IllegalArgumentException("steps must be >= 1, got " + steps);
        if (globalBatch < 1) throw new IllegalArgumentException("batch_size must be >= 1, got " + globalBatch);
        if (gradAccum < 1) throw new IllegalArgumentException("grad_accum must be >= 1, got " + gradAccum);
        if (seqLen < 1) throw new IllegalArgumentException("seq_len must be >= 1, got " + seqLen);
        if (seqLen > model.maxSeqLen()) {
            throw new IllegalArgumentException("seq_len (" + seqLen + ") must be <= max_seq_len (" + model.maxSeqLen() + ")");
        }
        if (ep < 1) throw new IllegalArgumentException("ep must be >= 1, got " + ep);
        if (dpReplicate < 1) throw new IllegalArgumentException("dp_replicate must be >= 1, got " + dpReplicate);
        if (dpShard < 1) throw new IllegalArgumentException("dp_shard must be >= 1, got " + dpShard);
        if (tp < 1) throw new IllegalArgumentException("tp must be >= 1, got " + tp);
        requireFinite("lr", lr);
        requireFinite("min_lr", minLr);
        requireFinite("weight_decay", weightDecay);
        requireFinite("beta1", beta1);
        requireFinite("beta2", beta2);
        requireFinite("eps", eps);
        requireFinite("grad_clip", gradClip);
        if (ep > 1 && model.numExperts() == 0) throw new IllegalArgumentException("ep > 1 requires an MoE model (num_experts > 0)");
        if (ep > 1 && model.numExperts() % ep != 0) {
            throw new IllegalArgumentException("num_experts (" + model.numExperts() + ") must be divisible by ep (" + ep + ")");
        }
        moe4j.parallel.TensorParallel.requireSplittable(model, tp);
        if (tp > 1 && initFrom != null) {
            throw new IllegalArgumentException("--init-from with tp > 1 is not supported yet (its weights and its saved copy are"
                    + " whole tensors): use tp = 1");
        }
        int dataRanks = ep * dpShard * dpReplicate;
        if (globalBatch % dataRanks != 0) {
            throw new IllegalArgumentException("batch_size (" + globalBatch + ") must be divisible by the number of data ranks"
                    + " dp_replicate*dp_shard*ep (" + dataRanks + ")");
        }
        if (globalBatch % (dataRanks * gradAccum) != 0) {
            throw new IllegalArgumentException("batch_size (" + globalBatch + ") must be divisible by grad_accum × data ranks ("
                    + gradAccum + " × " + dataRanks + " = " + gradAccum * dataRanks + "): every micro-batch takes the same"
                    + " number of sequences on every rank");
        }
        if (gradAccum > 1 && dpShard > 1) {
            throw new IllegalArgumentException("grad_accum > 1 with dp_shard > 1 is not supported yet (sharded gradients are"
                    + " reduce-scattered after each backward): use grad_accum = 1, or dp_replicate instead of dp_shard");
        }
        if (!List.of("local", "mpi", "nccl", "auto").contains(backend)) {
            throw new IllegalArgumentException("unknown backend '" + backend + "': valid backends are [local, mpi, nccl, auto]");
        }
        if (!device.equals("cpu") && !device.equals("cuda")) {
            throw new IllegalArgumentException("unknown device '" + device + "': valid devices are [cpu, cuda]");
        }
        if (!dtype.equals("f32") && !dtype.equals("bf16")) {
            throw new IllegalArgumentException("unknown dtype '" + dtype + "': valid dtypes are [f32, bf16]");
        }
        if (dtype.equals("bf16") && device.equals("cpu")) {
            throw new IllegalArgumentException("dtype bf16 needs device cuda: the cpu device computes in f32");
        }
        if (backend.equals("nccl") && device.equals("cpu")) {
            throw new IllegalArgumentException("backend nccl moves GPU tensors: it needs device cuda");
        }
        int ranks = dataRanks * tp; // the fields are not assigned yet: worldSize() would read zeros
        if (device.equals("cuda") && (backend.equals("local") || backend.equals("mpi")) && ranks > 1) {
            throw new IllegalArgumentException("device cuda with " + ranks + " ranks needs backend nccl (or auto), not " + backend);
        }
        if (gradClip < 0) throw new IllegalArgumentException("grad_clip must be >= 0 (0 = off), got " + gradClip);
        if (logEvery < 1) throw new IllegalArgumentException("log_every must be >= 1, got " + logEvery);
        if (checkpointEvery < 0) throw new IllegalArgumentException("checkpoint every must be >= 0, got " + checkpointEvery);
        if (keepLast < 0) throw new IllegalArgumentException("keep_last must be >= 0 (0 keeps every checkpoint), got " + keepLast);
        new LrSchedule(lr, minLr, warmupSteps, steps); // validates the schedule
    }

    private static void requireFinite(String key, double v) {
        if (!Double.isFinite(v)) throw new IllegalArgumentException(key + " must be a finite number, got " + v);
    }

    /** Whether the ranks compute on GPUs. */
    public boolean onGpus() {
        return device.equals("cuda");
    }

    /** Ranks the run needs: dp_replicate × dp_shard × ep × tp (pipeline parallelism is 1). */
    public int worldSize() {
        return ep * dpShard * dpReplicate * tp;
    }

    /** Sequences one micro-batch takes over all data ranks: {@code batch_size / grad_accum}. */
    public int microBatch() {
        return globalBatch / gradAccum;
    }

    /** What makes a run the same run when it resumes: everything but the layout, the outputs and the step count. */
    public record RunIdentity(ModelConfig model, int globalBatch, int seqLen, double lr, double minLr, long warmupSteps,
                              double weightDecay, double beta1, double beta2, double eps, double gradClip, long seed,
                              String data) {}

    public RunIdentity resumeIdentity() {
        return new RunIdentity(model, globalBatch, seqLen, lr, minLr, warmupSteps, weightDecay, beta1, beta2, eps, gradClip,
                seed, data);
    }

    public LrSchedule schedule() {
        return new LrSchedule(lr, minLr, warmupSteps, steps);
    }

    /** The default run: the small default model, 4 EP ranks in one JVM, synthetic data, about two minutes on 2 cores. */
    public static Builder defaults() {
        return new Builder();
    }

    /** A builder initialised from a TOML file (unknown sections or keys are errors that list the valid ones). */
    public static Builder fromToml(Path file) {
        Map<String, Object> root;
        try {
            ObjectMapper mapper = new TomlMapper();
            @SuppressWarnings("unchecked")
            Map<String, Object> read = mapper.readValue(file.toFile(), Map.class);
            root = read;
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read config " + file + ": " + e.getMessage(), e);
        }
        Builder b = new Builder();
        for (var section : root.entrySet()) {
            if (!(section.getValue() instanceof Map<?, ?> values)) {
                throw new IllegalArgumentException(file + ": top-level key '" + section.getKey()
                        + "' must be a section: expected [model], [train], [data], [parallel] or [checkpoint]");
            }
            for (var entry : values.entrySet()) {
                String key = entry.getKey().toString();
                Object value = entry.getValue();
                try {
                    switch (section.getKey()) {
                        case "model" -> b.model.set(key, value);
                        case "train", "parallel", "data", "checkpoint" -> b.set(section.getKey(), key, value);
                        default -> throw new IllegalArgumentException("unknown section [" + section.getKey()
                                + "]: expected [model], [train], [data], [parallel] or [checkpoint]");
                    }
                } catch (IllegalArgumentException e) {
                    throw new IllegalArgumentException(file + ": " + e.getMessage(), e);
                }
            }
        }
        return b;
    }

    /** Fluent construction with the defaults of {@link #defaults()}. */
    public static final class Builder {
        final ModelConfig.Builder model = ModelConfig.builder().moeExpertFfnMultiplier(0.5).maxSeqLen(128);
        long steps = 300;
        int globalBatch = 32;
        int gradAccum = 1;
        int seqLen = 64;
        double lr = 3e-3;
        double minLr = 3e-4;
        long warmupSteps = 30;
        double weightDecay = 0.1;
        double beta1 = 0.9;
        double beta2 = 0.95;
        double eps = 1e-8;
        double gradClip = 1.0;
        long seed = 0;
        String data = "synthetic";
        int ep = 4;
        int dpShard = 1;
        int dpReplicate = 1;
        int tp = 1;
        String backend = "auto";
        String device = "cpu";
        String dtype = "f32";
        Path checkpointDir;
        long checkpointEvery = 0;
        int keepLast = DEFAULT_KEEP_LAST;
        Path outputDir = Path.of("runs", "latest");
        Path initFrom;
        long logEvery = 10;

        private Builder() {}

        public ModelConfig.Builder model() {
            return model;
        }

        public Builder steps(long v) { steps = v; return this; }
        public Builder batchSize(int v) { globalBatch = v; return this; }
        public Builder gradAccum(int v) { gradAccum = v; return this; }
        public Builder seqLen(int v) { seqLen = v; return this; }
        public Builder lr(double v) { lr = v; return this; }
        public Builder minLr(double v) { minLr = v; return this; }
        public Builder warmupSteps(long v) { warmupSteps = v; return this; }
        public Builder weightDecay(double v) { weightDecay = v; return this; }
        public Builder gradClip(double v) { gradClip = v; return this; }
        public Builder seed(long v) { seed = v; return this; }
        public Builder data(String v) { data = v; return this; }
        public Builder ep(int v) { ep = v; return this; }
        public Builder dpShard(int v) { dpShard = v; return this; }
        public Builder dpReplicate(int v) { dpReplicate = v; return this; }
        public Builder tp(int v) { tp = v; return this; }
        public Builder backend(String v) { backend = v; return this; }
        public Builder device(String v) { device = v; return this; }
        public Builder dtype(String v) { dtype = v; return this; }
        public Builder checkpointDir(Path v) { checkpointDir = v; return this; }
        public Builder checkpointEvery(long v) { checkpointEvery = v; return this; }
        public Builder keepLast(int v) { keepLast = v; return this; }
        public Builder outputDir(Path v) { outputDir = v; return this; }
        /** Start from a Hugging Face model folder: its config.json replaces the model settings. */
        public Builder initFrom(Path v) { initFrom = v; return this; }
        public Builder logEvery(long v) { logEvery = v; return this; }

        void set(String section, String key, Object v) {
            switch (section + "." + key) {
                case "train.steps" -> steps = toLong(key, v);
                case "train.batch_size" -> globalBatch = toInt(key, v);
                case "train.grad_accum" -> gradAccum = toInt(key, v);
                case "train.seq_len" -> seqLen = toInt(key, v);
                case "train.lr" -> lr = toDouble(key, v);
                case "train.min_lr" -> minLr = toDouble(key, v);
                case "train.warmup_steps" -> warmupSteps = toLong(key, v);
                case "train.weight_decay" -> weightDecay = toDouble(key, v);
                case "train.beta1" -> beta1 = toDouble(key, v);
                case "train.beta2" -> beta2 = toDouble(key, v);
                case "train.eps" -> eps = toDouble(key, v);
                case "train.grad_clip" -> gradClip = toDouble(key, v);
                case "train.seed" -> seed = toLong(key, v);
                case "train.log_every" -> logEvery = toLong(key, v);
                case "train.output_dir" -> outputDir = Path.of(v.toString());
                case "train.device" -> device = v.toString();
                case "train.dtype" -> dtype = v.toString();
                case "data.source" -> data = v.toString();
                case "parallel.ep" -> ep = toInt(key, v);
                case "parallel.dp_shard" -> dpShard = toInt(key, v);
                case "parallel.dp_replicate" -> dpReplicate = toInt(key, v);
                case "parallel.tp" -> tp = toInt(key, v);
                case "parallel.backend" -> backend = v.toString();
                case "checkpoint.dir" -> checkpointDir = Path.of(v.toString());
                case "checkpoint.every" -> checkpointEvery = toLong(key, v);
                case "checkpoint.keep_last" -> keepLast = toInt(key, v);
                default -> throw new IllegalArgumentException("unknown key '" + key + "' in [" + section + "]: valid keys are "
                        + switch (section) {
                            case "train" -> TRAIN_KEYS;
                            case "parallel" -> PARALLEL_KEYS;
                            case "data" -> DATA_KEYS;
                            default -> CHECKPOINT_KEYS;
                        });
            }
        }

        public TrainConfig build() {
            ModelConfig m = initFrom != null ? moe4j.hf.HfConfig.read(initFrom).model() : model.build();
            return new TrainConfig(m, steps, globalBatch, gradAccum, seqLen, lr, minLr, warmupSteps, weightDecay, beta1, beta2, eps,
                    gradClip, seed, data, ep, dpShard, dpReplicate, tp, backend, device, dtype, checkpointDir, checkpointEvery, keepLast, outputDir,
                    logEvery, initFrom);
        }

        private static long toLong(String key, Object v) {
            return moe4j.nn.ConfigValues.toLong(key, v);
        }

        private static int toInt(String key, Object v) {
            return moe4j.nn.ConfigValues.toInt(key, v);
        }

        private static double toDouble(String key, Object v) {
            if (v instanceof Number n) return n.doubleValue();
            throw new IllegalArgumentException(key + " must be a number, got " + v);
        }
    }
}
