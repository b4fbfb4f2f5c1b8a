package moe4j.train;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonParseException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Comparator;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;
import moe4j.distributed.AgreedFailure;
import moe4j.distributed.ProcessGroup;
import moe4j.nn.MoEMLP;
import moe4j.nn.Module;
import moe4j.nn.SigmoidTopKRouter;
import moe4j.parallel.GlobalStateDict;
import moe4j.parallel.GradientSync;
import moe4j.tensor.DType;
import moe4j.tensor.SafeTensors;
import moe4j.tensor.Tensor;

/**
 * Training checkpoints: a directory {@code step-00000100/} holding
 * <ul>
 *   <li>{@code model.safetensors}: the weights under PyTorch-style names, experts under their
 *       <em>global</em> names whatever the EP size;</li>
 *   <li>{@code optimizer.safetensors}: AdamW moments as {@code exp_avg.<param>}, {@code exp_avg_sq.<param>};</li>
 *   <li>{@code state.json}: step, data position, RNG, sigmoid-router bias and EMA, the config, and the
 *       SHA-256 of both tensor files, checked on load.</li>
 * </ul>
 * A checkpoint is written into a temporary directory and renamed into place, and {@code latest} is
 * replaced atomically, so a crash never leaves a half-written checkpoint that looks complete. Saving is
 * a collective (experts are gathered from their owners); world rank 0 writes.
 */
public final class Checkpoint {
    private Checkpoint() {}

    static final String MODEL_FILE = "model.safetensors";
    static final String OPTIMIZER_FILE = "optimizer.safetensors";
    static final String STATE_FILE = "state.json";
    static final String LATEST = "latest";
    static final int FORMAT = 1;

    private static final Gson GSON = new GsonBuilder().setPrettyPrinting().serializeSpecialFloatingPointValues().create();

    /** Everything besides tensors that a resumed run needs to continue exactly. */
    public record TrainState(long step, long dataPosition, long rngState, String run, String config,
                             Map<String, float[]> routerBias, Map<String, float[]> routerEma) {}

    /** What state.json holds. */
    private record StateFile(int format, long step, long dataPosition, long rngState, String run, String config,
                             Map<String, float[]> routerBias, Map<String, float[]> routerEma,
                             Map<String, String> sha256, int modelTensors, int optimizerTensors) {}

    /**
     * Saves a checkpoint of step {@code state.step()} under {@code dir} (a collective over {@code world}
     * and the model's EP groups); returns its directory. Then keeps the newest {@code keepLast} checkpoints
     * (0: all), never removing the one {@code latest} names. If the write fails, every rank throws the same
     * {@link AgreedFailure} with the writer's reason.
     */
    public static Path save(Path dir, Module model, AdamW optimizer, TrainState state, ProcessGroup world, int keepLast) {
        return save(dir, model, optimizer, state, world, keepLast, null);
    }

    /**
     * {@link #save(Path, Module, AdamW, TrainState, ProcessGroup, int)} of a run whose optimizer state may be
     * sharded by {@code sync} (null: not sharded): the file holds the same global tensors either way, so
     * it loads at any mesh.
     */
    public static Path save(Path dir, Module model, AdamW optimizer, TrainState state, ProcessGroup world, int keepLast,
                            GradientSync sync) {
        boolean writer = world == null || world.rank() == 0;
        GradientSync assembler = sync != null ? sync : GradientSync.create(model, null);
        Path target = dir.resolve(String.format("step-%08d", state.step()));
        // The writer learns every name and shape first, so each file's header is fixed before any data; then
        // the tensors are assembled one parameter at a time (all ranks take part: the pieces, tp blocks and
        // experts come from their owners) and each goes straight to its place in the file. Nobody holds
        // the whole model or the whole optimizer state. A failed write does not stop the writer from taking
        // part in the remaining collectives; every rank learns of it at the end.
        Map<String, int[]> shapes = assembler.globalShapes();
        Map<String, SafeTensors.Spec> weightSpecs = new LinkedHashMap<>();
        Map<String, SafeTensors.Spec> momentSpecs = new LinkedHashMap<>();
        shapes.forEach((name, shape) -> {
            weightSpecs.put(name, new SafeTensors.Spec(DType.F32, shape));
            momentSpecs.put("exp_avg." + name, new SafeTensors.Spec(DType.F32, shape));
            momentSpecs.put("exp_avg_sq." + name, new SafeTensors.Spec(DType.F32, shape));
        });
        long[] peak = {0};
        Exception[] failure = {null};
        try (StreamingWrite files = writer ? StreamingWrite.begin(dir, target, weightSpecs, momentSpecs, state, failure) : null) {
            java.util.function.LongConsumer measure = bytes -> peak[0] = Math.max(peak[0], bytes);
            assembler.forEachGlobalTensor(assembler.optimizerParameters(), writer, (name, t) -> files.put(true, name, t), measure);
            assembler.forEachGlobalTensor(optimizer.expAvg(), writer, (name, t) -> files.put(false, "exp_avg." + name, t), measure);
            assembler.forEachGlobalTensor(optimizer.expAvgSq(), writer, (name, t) -> files.put(false, "exp_avg_sq." + name, t), measure);
            LAST_SAVE_PEAK_BYTES.set(peak[0]);
            // every rank learns whether (and why) rank 0's write failed, so none carries on past a lost checkpoint
            AgreedFailure.agree(world, () -> {
                if (!writer) return;
                try {
                    if (failure[0] != null) throw failure[0];
                    files.finish(dir, target, state);
                    if (keepLast > 0) prune(dir, keepLast);
                } catch (Exception e) {
                    throw new IllegalStateException("writing checkpoint " + target + " failed: " + e, e);
                }
            });
        } catch (IOException e) {
            throw new java.io.UncheckedIOException("cleaning up after checkpoint " + target, e);
        }
        return target;
    }

    /** Host bytes of tensors the calling rank held at once for the last checkpoint it saved: one parameter's assembled copies. */
    public static long lastSavePeakBytes() {
        return LAST_SAVE_PEAK_BYTES.get();
    }

    /** Per rank (ranks are threads in the in-JVM backend). */
    private static final ThreadLocal<Long> LAST_SAVE_PEAK_BYTES = ThreadLocal.withInitial(() -> 0L);

    /**
     * The writer's side of a save: the checkpoint's temporary directory and its two tensor files, filled
     * one tensor at a time. The first failure is kept (later tensors are then ignored) and reported after
     * the collectives.
     */
    private static final class StreamingWrite implements AutoCloseable {
        private final Path tmp;
        private final SafeTensors.Writer weights;
        private final SafeTensors.Writer moments;
        private final Exception[] failure;
        private final int weightCount;
        private final int momentCount;

        private StreamingWrite(Path tmp, SafeTensors.Writer weights, SafeTensors.Writer moments, Exception[] failure, int weightCount,
                               int momentCount) {
            this.tmp = tmp;
            this.weights = weights;
            this.moments = moments;
            this.failure = failure;
            this.weightCount = weightCount;
            this.momentCount = momentCount;
        }

        /** Opens the files; a failure is kept in {@code failure} and yields a writer that writes nothing. */
        static StreamingWrite begin(Path dir, Path target, Map<String, SafeTensors.Spec> weightSpecs,
                                    Map<String, SafeTensors.Spec> momentSpecs, TrainState state, Exception[] failure) {
            Path tmp = null;
            SafeTensors.Writer weights = null;
            SafeTensors.Writer moments = null;
            try {
                Files.createDirectories(dir);
                sweepTemporaries(dir);
                tmp = dir.resolve(target.getFileName() + ".tmp-" + ProcessHandle.current().pid());
                deleteRecursively(tmp);
                Files.createDirectories(tmp);
                weights = SafeTensors.Writer.create(tmp.resolve(MODEL_FILE), weightSpecs,
                        Map.of("format", "pt", "moe4j.step", Long.toString(state.step())));
                moments = SafeTensors.Writer.create(tmp.resolve(OPTIMIZER_FILE), momentSpecs, Map.of("moe4j.step", Long.toString(state.step())));
            } catch (IOException | RuntimeException e) {
                failure[0] = e;
            }
            return new StreamingWrite(tmp, weights, moments, failure, weightSpecs.size(), momentSpecs.size());
        }

        void put(boolean weight, String name, Tensor t) {
            if (failure[0] != null) return;
            try {
                (weight ? weights : moments).put(name, t);
            } catch (IOException | RuntimeException e) {
                failure[0] = e;
            }
        }

        /** Commits both files, writes the state beside them and moves the checkpoint into place. */
        void finish(Path dir, Path target, TrainState state) throws IOException {
            weights.commit();
            moments.commit();
            Map<String, String> sums = new LinkedHashMap<>();
            sums.put(MODEL_FILE, sha256(tmp.resolve(MODEL_FILE)));
            sums.put(OPTIMIZER_FILE, sha256(tmp.resolve(OPTIMIZER_FILE)));
            StateFile file = new StateFile(FORMAT, state.step(), state.dataPosition(), state.rngState(), state.run(), state.config(),
                    state.routerBias(), state.routerEma(), sums, weightCount, momentCount);
            writeDurably(tmp.resolve(STATE_FILE), GSON.toJson(file));
            fsync(tmp);
            replace(dir, target, tmp, state);
        }

        /** Deletes whatever an unfinished save left (its temporary files). */
        @Override
        public void close() throws IOException {
            if (weights != null) weights.close();
            if (moments != null) moments.close();
            if (tmp != null && Files.exists(tmp)) deleteRecursively(tmp);
        }
    }

    /**
     * Removes all but the newest {@code keepLast} checkpoints up to the one {@code latest} names (which is
     * always kept). Checkpoints of later steps, left by a run that was resumed from an earlier one, are
     * left alone: the resumed run replaces them as it reaches their steps.
     */
    static void prune(Path dir, int keepLast) throws IOException {
        Path latest = latest(dir);
        long latestStep = stepOf(latest);
        List<Path> older = checkpointDirs(dir).stream().filter(p -> stepOf(p) <= latestStep)
                .sorted(Comparator.comparingLong(Checkpoint::stepOf).reversed()).toList();
        for (int i = keepLast; i < older.size(); i++) {
            if (!older.get(i).equals(latest)) deleteRecursively(older.get(i));
        }
    }

    /** The {@code step-NNNNNNNN} directories in {@code dir}, in no particular order (none if it does not exist). */
    static List<Path> checkpointDirs(Path dir) throws IOException {
        if (!Files.isDirectory(dir)) return List.of();
        try (Stream<Path> entries = Files.list(dir)) {
            return entries.filter(p -> p.getFileName().toString().matches("step-\\d{8}") && Files.isDirectory(p)).toList();
        }
    }

    static long stepOf(Path checkpoint) {
        return Long.parseLong(checkpoint.getFileName().toString().substring("step-".length()));
    }

    /**
     * Before a fresh run writes anything into {@code dir}: refuses a folder that already holds checkpoints
     * (they belong to another run, which a fresh run would mix with and whose {@code latest} it would move),
     * unless {@code overwrite}, which removes them; then checks that the folder can be written.
     */
    public static void prepareFreshRun(Path dir, boolean overwrite) {
        try {
            List<Path> existing = checkpointDirs(dir);
            boolean pointer = Files.exists(dir.resolve(LATEST));
            if ((!existing.isEmpty() || pointer) && !overwrite) {
                Path latest = pointer ? dir.resolve(LATEST) : null;
                String which = latest != null ? Files.readString(latest, StandardCharsets.UTF_8).strip() : existing.size() + " checkpoints";
                throw new IllegalArgumentException("checkpoint folder " + dir + " already holds another run's checkpoints (latest "
                        + which + "): pass --resume to continue that run, --overwrite to replace it, or another --checkpoint-dir");
            }
            if (overwrite) {
                Files.deleteIfExists(dir.resolve(LATEST));
                for (Path p : existing) deleteRecursively(p);
            }
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read checkpoint folder " + dir + ": " + e.getMessage(), e);
        }
        requireWritable(dir, "checkpoint folder");
    }

    /**
     * Creates {@code dir} if needed and writes and removes a probe file in it, so that a folder that cannot
     * take a checkpoint (or metrics) is found before step 1, not after the whole run.
     */
    public static void requireWritable(Path dir, String what) {
        try {
            Files.createDirectories(dir);
            Path probe = Files.createTempFile(dir, ".moe4j-write-check-", ".tmp");
            Files.delete(probe);
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot write to " + what + " " + dir + " (" + reason(e) + ")", e);
        }
    }

    /** What went wrong with a file, in words: the operating system's reason rather than an exception's name. */
    static String reason(IOException e) {
        if (e instanceof java.nio.file.AccessDeniedException) return "permission denied";
        if (e instanceof java.nio.file.FileAlreadyExistsException) return "a file of that name is in the way";
        if (e instanceof NoSuchFileException) return "no such file or folder";
        if (e instanceof java.nio.file.FileSystemException fs && fs.getReason() != null) return fs.getReason();
        return e.getMessage() != null ? e.getMessage() : e.toString();
    }

    /** Moves the finished temporary checkpoint {@code tmp} to {@code target} and points {@code latest} at it. */
    private static void replace(Path dir, Path target, Path tmp, TrainState state) throws IOException {
        String suffix = ".tmp-" + ProcessHandle.current().pid();
        if (Files.exists(target)) {
            String existing;
            try {
                existing = readState(target).run();
            } catch (IllegalArgumentException damaged) {
                existing = state.run(); // a damaged checkpoint of this step: replacing it is what the save is for
            }
            if (!java.util.Objects.equals(existing, state.run())) {
                throw new IllegalStateException(target + " belongs to another run (" + existing + ", this run is " + state.run()
                        + "): not replaced");
            }
        }
        // An existing checkpoint of the same step (a rerun) is moved aside, not deleted first: at every
        // moment, `latest` names a complete checkpoint.
        Path old = Files.exists(target) ? dir.resolve(target.getFileName() + ".old" + suffix) : null;
        if (old != null) move(target, old);
        move(tmp, target);
        Path latestTmp = dir.resolve(LATEST + suffix);
        writeDurably(latestTmp, target.getFileName().toString() + "\n");
        move(latestTmp, dir.resolve(LATEST));
        fsync(dir);
        if (old != null) deleteRecursively(old);
    }

    /** Temporary files and directories of earlier, interrupted saves (only world rank 0 writes here). */
    private static void sweepTemporaries(Path dir) throws IOException {
        try (Stream<Path> entries = Files.list(dir)) {
            for (Path p : entries.toList()) {
                String name = p.getFileName().toString();
                if (name.contains(".tmp-")) deleteRecursively(p);
            }
        }
    }

    private static void writeDurably(Path file, String text) throws IOException {
        try (var ch = java.nio.channels.FileChannel.open(file, java.nio.file.StandardOpenOption.CREATE,
                java.nio.file.StandardOpenOption.TRUNCATE_EXISTING, java.nio.file.StandardOpenOption.WRITE)) {
            ch.write(java.nio.ByteBuffer.wrap(text.getBytes(StandardCharsets.UTF_8)));
            ch.force(true);
        }
    }

    /** Flushes a directory's entries (renames into it) to disk; a no-op where the platform cannot. */
    private static void fsync(Path directory) {
        try (var ch = java.nio.channels.FileChannel.open(directory, java.nio.file.StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException | UnsupportedOperationException e) {
            // some file systems do not sync directories; the checksums still catch a torn checkpoint
        }
    }

    /** The checkpoint {@code latest} names in {@code dir}, or null if there is none. */
    public static Path latest(Path dir) {
        Path pointer = dir.resolve(LATEST);
        if (!Files.exists(pointer)) return null;
        try {
            Path target = dir.resolve(Files.readString(pointer, StandardCharsets.UTF_8).strip());
            if (!Files.isDirectory(target)) {
                throw new IllegalArgumentException("checkpoint pointer " + pointer + " names " + target + ", which does not exist");
            }
            return target;
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read checkpoint pointer " + pointer + ": " + e.getMessage(), e);
        }
    }

    /**
     * The checkpoints a resume may start from, best first: the one {@code latest} names, then the older
     * ones, newest first ({@link #resumeFrom} picks the first intact one).
     */
    static List<Path> resumeCandidates(Path dir) throws IOException {
        List<Path> all = checkpointDirs(dir);
        Path pointed = null;
        try {
            pointed = latest(dir);
        } catch (IllegalArgumentException unreadable) {
            // the pointer itself is damaged: every checkpoint is a candidate
        }
        long below = pointed == null ? Long.MAX_VALUE : stepOf(pointed);
        List<Path> out = new java.util.ArrayList<>();
        if (pointed != null) out.add(pointed);
        all.stream().filter(p -> stepOf(p) < below).sorted(Comparator.comparingLong(Checkpoint::stepOf).reversed()).forEach(out::add);
        return out;
    }

    /** A checkpoint a resume starts from, and why newer ones were passed over (empty when latest was intact). */
    public record ResumePoint(Path checkpoint, long step, String run, List<String> skipped) {}

    /**
     * The newest intact checkpoint in {@code dir}: the one {@code latest} names, or, if that one is damaged
     * (a checksum, a missing file, unreadable state), the newest older one that is intact, with the reasons
     * the newer ones were passed over.
     */
    public static ResumePoint resumeFrom(Path dir) {
        List<Path> candidates;
        try {
            candidates = resumeCandidates(dir);
        } catch (IOException e) {
            throw new IllegalArgumentException("--resume: cannot read checkpoint folder " + dir + ": " + e.getMessage(), e);
        }
        if (candidates.isEmpty()) throw new IllegalArgumentException("--resume: no checkpoint found in " + dir);
        List<String> skipped = new java.util.ArrayList<>();
        try {
            latest(dir);
        } catch (IllegalArgumentException e) {
            skipped.add(e.getMessage());
        }
        for (Path c : candidates) {
            try {
                StateFile state = verify(c);
                return new ResumePoint(c, state.step(), state.run(), skipped);
            } catch (IllegalArgumentException damaged) {
                skipped.add(damaged.getMessage());
            }
        }
        throw new IllegalArgumentException("--resume: no intact checkpoint in " + dir + ": " + String.join("; ", skipped));
    }

    /** Reads {@code checkpoint}'s state and checks its files against the recorded checksums. */
    private static StateFile verify(Path checkpoint) {
        StateFile state = readState(checkpoint);
        for (var sum : state.sha256().entrySet()) {
            String actual;
            try {
                actual = sha256(checkpoint.resolve(sum.getKey()));
            } catch (NoSuchFileException e) {
                throw new IllegalArgumentException("checkpoint " + checkpoint + " is missing " + sum.getKey(), e);
            } catch (IOException e) {
                throw new IllegalArgumentException("cannot read " + checkpoint.resolve(sum.getKey()) + ": " + e.getMessage(), e);
            }
            if (!actual.equals(sum.getValue())) {
                throw new IllegalArgumentException("checkpoint file " + checkpoint.resolve(sum.getKey())
                        + " is corrupt: SHA-256 " + actual + ", state.json recorded " + sum.getValue());
            }
        }
        return state;
    }

    /**
     * Loads checkpoint {@code checkpoint} into {@code model} and {@code optimizer} (either may have been
     * partitioned at a different EP size than the one that wrote it). Verifies the checksums, the names
     * and the shapes before changing anything; returns the training state.
     */
    public static TrainState load(Path checkpoint, Module model, AdamW optimizer) {
        return load(checkpoint, model, optimizer, null);
    }

    /**
     * {@link #load(Path, Module, AdamW)} into an optimizer whose state is sharded by {@code sync} (null: not
     * sharded): each rank keeps its pieces of the stored moments.
     */
    public static TrainState load(Path checkpoint, Module model, AdamW optimizer, GradientSync sync) {
        StateFile state = verify(checkpoint);
        GradientSync assembler = sync != null ? sync : GradientSync.create(model, null);
        try (SafeTensors.Loaded weights = SafeTensors.read(checkpoint.resolve(MODEL_FILE));
             SafeTensors.Loaded moments = optimizer == null ? null : SafeTensors.read(checkpoint.resolve(OPTIMIZER_FILE))) {
            // every check first (names, shapes, moments, router state), then the copies: a failed load changes nothing
            Map<String, int[]> expected = assembler.globalShapes();
            Set<String> found = new HashSet<>(weights.names());
            if (!found.equals(expected.keySet())) {
                Set<String> missing = new HashSet<>(expected.keySet());
                missing.removeAll(found);
                Set<String> unexpected = new HashSet<>(found);
                unexpected.removeAll(expected.keySet());
                throw new IllegalArgumentException("checkpoint " + checkpoint + " does not match the model: missing "
                        + first(missing) + ", unexpected " + first(unexpected));
            }
            String weightSource = checkpoint.resolve(MODEL_FILE).toString();
            String momentSource = checkpoint.resolve(OPTIMIZER_FILE).toString();
            expected.forEach((name, shape) -> {
                requireShape(weights, name, shape, weightSource);
                if (moments != null) {
                    requireShape(moments, "exp_avg." + name, shape, momentSource);
                    requireShape(moments, "exp_avg_sq." + name, shape, momentSource);
                }
            });
            Runnable routers = prepareRouters(model, state.routerBias(), state.routerEma());
            // each rank reads the tensors it needs one at a time and keeps its experts, tp block and piece of each
            assembler.loadGlobal(n -> weights.tensorAs(n, DType.F32), assembler.optimizerParameters(), weightSource);
            if (optimizer != null) {
                assembler.loadGlobal(n -> moments.tensorAs("exp_avg." + n, DType.F32), optimizer.expAvg(), momentSource);
                assembler.loadGlobal(n -> moments.tensorAs("exp_avg_sq." + n, DType.F32), optimizer.expAvgSq(), momentSource);
                optimizer.setStepCount(state.step());
            }
            routers.run();
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read checkpoint " + checkpoint + ": " + e.getMessage(), e);
        }
        return new TrainState(state.step(), state.dataPosition(), state.rngState(), state.run(), state.config(),
                state.routerBias(), state.routerEma());
    }

    private static void requireShape(SafeTensors.Loaded file, String name, int[] shape, String source) {
        if (!file.contains(name)) throw new IllegalArgumentException(source + ": missing tensor '" + name + "'");
        if (!java.util.Arrays.equals(file.shape(name), shape)) {
            throw new IllegalArgumentException(source + ": tensor '" + name + "' is " + file.dtype(name) + java.util.Arrays.toString(file.shape(name))
                    + ", the model expects " + DType.F32 + java.util.Arrays.toString(shape));
        }
    }

    /** The config a checkpoint was written with (to resume with the same model). */
    public static String storedConfig(Path checkpoint) {
        return readState(checkpoint).config();
    }

    private static StateFile readState(Path checkpoint) {
        Path file = checkpoint.resolve(STATE_FILE);
        StateFile state;
        try {
            state = GSON.fromJson(Files.readString(file, StandardCharsets.UTF_8), StateFile.class);
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException("not a checkpoint: " + file + " does not exist", e);
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read " + file + ": " + e.getMessage(), e);
        } catch (JsonParseException e) {
            throw new IllegalArgumentException(file + " is not valid checkpoint JSON: " + e.getMessage(), e);
        }
        if (state == null || state.format() != FORMAT || state.sha256() == null) {
            throw new IllegalArgumentException(file + " is not a moe4j checkpoint of format " + FORMAT);
        }
        return state;
    }

    /** The sigmoid routers' bias and EMA by layer name (replicated: the same on every rank). */
    public static Map<String, float[]>[] routerState(Module model) {
        Map<String, float[]> bias = new LinkedHashMap<>();
        Map<String, float[]> ema = new LinkedHashMap<>();
        model.namedModules().forEach((name, m) -> {
            if (m instanceof MoEMLP moe && moe.router() instanceof SigmoidTopKRouter r) {
                bias.put(name, r.bias().toFloatArray());
                ema.put(name, r.ema().toFloatArray());
            }
        });
        @SuppressWarnings("unchecked")
        Map<String, float[]>[] out = new Map[] {bias, ema};
        return out;
    }

    /** Checks the sigmoid routers' stored state and returns the restore, to run after all checks passed. */
    private static Runnable prepareRouters(Module model, Map<String, float[]> bias, Map<String, float[]> ema) {
        List<Runnable> restores = new java.util.ArrayList<>();
        model.namedModules().forEach((name, m) -> {
            if (m instanceof MoEMLP moe && moe.router() instanceof SigmoidTopKRouter r) {
                float[] b = bias == null ? null : bias.get(name);
                float[] e = ema == null ? null : ema.get(name);
                if (b == null || e == null || b.length != moe.numExperts() || e.length != moe.numExperts()) {
                    throw new IllegalArgumentException("checkpoint lacks the router bias/EMA of layer '" + name + "'");
                }
                restores.add(() -> {
                    for (int i = 0; i < b.length; i++) {
                        r.bias().set(i, b[i]);
                        r.ema().set(i, e[i]);
                    }
                });
            }
        });
        return () -> restores.forEach(Runnable::run);
    }

    private static String first(Set<String> names) {
        return names.isEmpty() ? "none" : names.stream().sorted().limit(3).toList() + (names.size() > 3 ? " and " + (names.size() - 3) + " more" : "");
    }

    static String sha256(Path file) throws IOException {
        try (InputStream in = Files.newInputStream(file)) {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            byte[] buf = new byte[1 << 20];
            for (int n; (n = in.read(buf)) > 0; ) md.update(buf, 0, n);
            return HexFormat.of().formatHex(md.digest());
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    private static void move(Path from, Path to) throws IOException {
        try {
            Files.move(from, to, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(from, to, StandardCopyOption.REPLACE_EXISTING);
        }
    }

    static void deleteRecursively(Path p) throws IOException {
        if (!Files.exists(p)) return;
        try (Stream<Path> walk = Files.walk(p)) {
            List<Path> all = walk.sorted(Comparator.reverseOrder()).toList();
            for (Path q : all) Files.delete(q);
        }
    }
}
