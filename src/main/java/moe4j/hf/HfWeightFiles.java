package moe4j.hf;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.TreeSet;
import moe4j.tensor.DType;
import moe4j.tensor.SafeTensors;
import moe4j.tensor.Tensor;

/**
 * The weights of a Hugging Face model folder: {@code model.safetensors}, or the shards named by
 * {@code model.safetensors.index.json}. A shard is mapped the first time one of its tensors is asked for
 * (a rank that needs only some experts maps only what holds them) and stays mapped until {@link #close()}.
 */
public final class HfWeightFiles implements AutoCloseable {
    private final Path dir;
    private final Map<String, String> fileOf = new HashMap<>();
    private final Map<String, SafeTensors.Loaded> open = new LinkedHashMap<>();
    private final java.util.Set<String> read = java.util.concurrent.ConcurrentHashMap.newKeySet();

    public HfWeightFiles(Path dir) {
        this.dir = dir;
        Path index = dir.resolve("model.safetensors.index.json");
        Path single = dir.resolve("model.safetensors");
        try {
            if (Files.isRegularFile(index)) {
                JsonObject map = JsonParser.parseString(Files.readString(index)).getAsJsonObject().getAsJsonObject("weight_map");
                if (map == null) throw new IllegalArgumentException(index + " has no weight_map");
                for (var e : map.entrySet()) fileOf.put(e.getKey(), e.getValue().getAsString());
            } else if (Files.isRegularFile(single)) {
                try (SafeTensors.Loaded f = SafeTensors.read(single)) {
                    for (String name : f.names()) fileOf.put(name, "model.safetensors");
                }
            } else {
                throw new IllegalArgumentException("model folder " + dir + " has neither model.safetensors nor model.safetensors.index.json");
            }
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read the weights of " + dir + ": " + e.getMessage(), e);
        }
    }

    public boolean contains(String name) {
        return fileOf.containsKey(name);
    }

    /** Every tensor name in the folder, sorted. */
    public TreeSet<String> names() {
        return new TreeSet<>(fileOf.keySet());
    }

    /** The stored shape of {@code name}. */
    public int[] shape(String name) {
        return file(name).shape(name);
    }

    /** Tensor {@code name} over the mapped bytes, in its stored dtype (valid until {@link #close()}). */
    public Tensor stored(String name) {
        read.add(name);
        return file(name).tensor(name);
    }

    /** Tensor {@code name} as float32, a copy in the current memory scope. */
    public Tensor f32(String name) {
        read.add(name);
        return file(name).tensorAs(name, DType.F32);
    }

    /** The names of the tensors whose data has been asked for so far (shapes do not count). */
    public TreeSet<String> namesRead() {
        return new TreeSet<>(read);
    }

    private synchronized SafeTensors.Loaded file(String name) {
        String file = fileOf.get(name);
        if (file == null) throw new IllegalArgumentException("model folder " + dir + " has no tensor '" + name + "'");
        return open.computeIfAbsent(file, f -> {
            try {
                return SafeTensors.read(dir.resolve(f));
            } catch (IOException e) {
                throw new IllegalArgumentException("cannot map " + dir.resolve(f) + ": " + e.getMessage(), e);
            }
        });
    }

    @Override
    public synchronized void close() {
        open.values().forEach(SafeTensors.Loaded::close);
        open.clear();
    }
}
