package moe4j.hf;

import com.google.gson.GsonBuilder;
import com.google.gson.JsonObject;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.ProcessGroup;
import moe4j.nn.Attention;
import moe4j.nn.MoETransformer;
import moe4j.nn.Module;
import moe4j.parallel.ExpertParallel;
import moe4j.parallel.GlobalStateDict;
import moe4j.parallel.GradientSync;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.SafeTensors;
import moe4j.tensor.Tensor;

/**
 * Hugging Face model folders in and out of moe4j: {@link #load} builds the model a folder describes and
 * fills it from the folder's weights; {@link #save} writes a model back in the same layout
 * (config.json, model.safetensors with transformers' names, the tokenizer files), loadable by transformers.
 *
 * <p>Under expert parallelism the model is partitioned first and then filled parameter by parameter, so a
 * rank reads only the experts it holds; every other tensor is read from the mapped files once per rank.
 */
public final class HfCheckpoint {
    private HfCheckpoint() {}

    /** The model of folder {@code dir} on one rank with all experts, weights loaded. */
    public static MoETransformer load(Path dir) {
        HfConfig config = HfConfig.read(dir);
        try (HfWeightFiles files = new HfWeightFiles(dir)) {
            return load(config, files, null);
        }
    }

    /**
     * The model of {@code config}, partitioned over {@code mesh}'s "ep" dimension (null: not at all), with this
     * rank's parameters read from {@code files}. Ranks of one JVM may share {@code files}.
     */
    public static MoETransformer load(HfConfig config, HfWeightFiles files, DeviceMesh mesh) {
        MoETransformer model = MoETransformer.uninitialized(config.model(), config.options());
        model.train(false);
        ExpertParallel.apply(model, mesh);
        loadWeights(model, config.family(), files);
        return model;
    }

    /**
     * Copies every parameter of {@code model} (as partitioned on this rank) from {@code files}. Checks all
     * names and shapes first: a checkpoint that lacks tensors is an error listing them, and nothing is copied.
     */
    public static void loadWeights(MoETransformer model, HfFamily family, HfWeightFiles files) {
        List<String> missing = new ArrayList<>();
        List<String> wrongShape = new ArrayList<>();
        Map<String, Tensor> params = model.namedParameters();
        for (var e : params.entrySet()) {
            HfNames.Source src = HfNames.of(family, e.getKey());
            int[] want = e.getValue().shape();
            if (files.contains(src.name())) {
                if (!java.util.Arrays.equals(files.shape(src.name()), want)) {
                    wrongShape.add(src.name() + " is " + java.util.Arrays.toString(files.shape(src.name())) + ", expected "
                            + java.util.Arrays.toString(want));
                }
                continue;
            }
            HfNames.Fused fused = HfNames.fused(family, e.getKey());
            if (fused == null || !files.contains(fused.name())) missing.add(src.name());
        }
        if (!missing.isEmpty() || !wrongShape.isEmpty()) {
            StringBuilder msg = new StringBuilder("the " + family.modelType() + " checkpoint does not fit the model of its config.json:");
            if (!missing.isEmpty()) msg.append(" missing tensors ").append(abbreviate(missing)).append(';');
            if (!wrongShape.isEmpty()) msg.append(" wrong shapes ").append(abbreviate(wrongShape)).append(';');
            throw new IllegalArgumentException(msg.substring(0, msg.length() - 1));
        }
        for (var e : params.entrySet()) {
            try (MemoryScope scope = MemoryScope.open()) {
                e.getValue().copyFrom(read(model, family, files, e.getKey(), e.getValue().shape()));
            }
        }
    }

    private static String abbreviate(List<String> names) {
        return names.size() <= 8 ? names.toString() : names.subList(0, 8) + " ... (" + names.size() + " in all)";
    }

    /** Parameter {@code name}'s value as float32 in moe4j's layout, in the current scope. */
    private static Tensor read(MoETransformer model, HfFamily family, HfWeightFiles files, String name, int[] shape) {
        HfNames.Source src = HfNames.of(family, name);
        Tensor t;
        if (files.contains(src.name())) {
            t = files.f32(src.name());
        } else {
            HfNames.Fused fused = HfNames.fused(family, name);
            Tensor all = files.stored(fused.name());
            Tensor expert = all.rows(fused.expert(), fused.expert() + 1);
            int rows = all.dim(1);
            int cols = all.dim(2);
            Tensor slice = expert.view(rows, cols);
            if (fused.gateHalf()) slice = slice.rows(0, rows / 2);
            if (fused.upHalf()) slice = slice.rows(rows / 2, rows);
            t = slice.to(moe4j.tensor.DType.F32).copy();
        }
        if (!java.util.Arrays.equals(t.shape(), shape)) {
            throw new IllegalArgumentException("checkpoint tensor for '" + name + "' is " + t.shapeString() + ", the model expects "
                    + java.util.Arrays.toString(shape));
        }
        if (src.ropeRows()) {
            int rows = t.dim(0);
            int cols = t.rank() == 1 ? 1 : t.dim(1);
            return Tensor.of(HfNames.toMetaRows(t.toFloatArray(), rows, cols, headDim(model)), shape);
        }
        return t;
    }

    private static int headDim(MoETransformer model) {
        Attention a = model.layers().get(0).attention();
        return a.headDim();
    }

    // ---------------------------------------------------------------- saving

    /**
     * Writes {@code model} to folder {@code dir} in the Hugging Face layout of {@code config}'s family:
     * config.json (the original, dtype float32), model.safetensors with transformers' names and layouts,
     * and the tokenizer files of {@code tokenizerFrom} (the folder the model came from; null: none).
     * A collective over the expert-parallel groups: every rank calls it; rank 0 of {@code world} writes.
     */
    public static void save(MoETransformer model, HfConfig config, Path dir, Path tokenizerFrom, ProcessGroup world) {
        save(model, config, dir, tokenizerFrom, world, GradientSync.create(model, null));
    }

    /**
     * {@link #save(MoETransformer, HfConfig, Path, Path, ProcessGroup)} of a model whose parameters {@code sync}
     * may shard: the weights are assembled one at a time from their pieces and experts and each is written
     * into its place in the file, so no rank holds the whole model. A collective over the shard and
     * expert-parallel groups.
     */
    public static void save(MoETransformer model, HfConfig config, Path dir, Path tokenizerFrom, ProcessGroup world, GradientSync sync) {
        boolean writer = world == null || world.rank() == 0;
        Map<String, SafeTensors.Spec> specs = new LinkedHashMap<>();
        sync.globalShapes().forEach((name, shape) -> specs.put(HfNames.of(config.family(), name).name(),
                new SafeTensors.Spec(moe4j.tensor.DType.F32, shape)));
        Exception[] failure = {null};
        SafeTensors.Writer weights = null;
        if (writer) {
            try {
                Files.createDirectories(dir);
                weights = SafeTensors.Writer.create(dir.resolve("model.safetensors"), specs, Map.of("format", "pt"));
            } catch (IOException | RuntimeException e) {
                failure[0] = e;
            }
        }
        SafeTensors.Writer file = weights;
        int headDim = headDim(model);
        // a failed write keeps the writer in the remaining collectives; it reports after them
        sync.forEachGlobalTensor(sync.optimizerParameters(), writer, (name, value) -> {
            if (failure[0] != null) return;
            try {
                HfNames.Source src = HfNames.of(config.family(), name);
                Tensor t = value.device().isCpu() ? value : value.to(moe4j.tensor.Device.CPU);
                if (src.ropeRows()) {
                    int rows = t.dim(0);
                    int cols = t.rank() == 1 ? 1 : t.dim(1);
                    t = Tensor.of(HfNames.toHfRows(t.toFloatArray(), rows, cols, headDim), t.shape());
                }
                file.put(src.name(), t);
            } catch (IOException | RuntimeException e) {
                failure[0] = e;
            }
        }, null);
        if (!writer) return;
        try (SafeTensors.Writer close = file) {
            if (failure[0] != null) throw failure[0];
            file.commit();
            JsonObject json = config.json().deepCopy();
            json.addProperty("dtype", "float32");
            json.remove("torch_dtype");
            Files.writeString(dir.resolve("config.json"), new GsonBuilder().setPrettyPrinting().create().toJson(json) + "\n");
            Files.deleteIfExists(dir.resolve("model.safetensors.index.json"));
            if (tokenizerFrom != null && !tokenizerFrom.equals(dir)) {
                for (String f : new String[] {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"}) {
                    Path p = tokenizerFrom.resolve(f);
                    if (Files.isRegularFile(p)) Files.copy(p, dir.resolve(f), StandardCopyOption.REPLACE_EXISTING);
                }
            }
        } catch (Exception e) {
            throw new IllegalStateException("cannot write the model to " + dir + ": " + e.getMessage(), e);
        }
    }

}
