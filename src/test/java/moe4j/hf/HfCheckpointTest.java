package moe4j.hf;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.SafeTensors;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Folder variants and bad folders: experts in transformers' fused in-memory layout load to the same model;
 * an unknown architecture, an unsupported setting or a missing tensor is an error that names it.
 */
class HfCheckpointTest {
    /** A copy of fixture {@code family} whose weights pass through {@code edit} first. */
    static Path copyWith(String family, Path dir, java.util.function.Consumer<Map<String, Tensor>> edit, String configFrom, String configTo)
            throws Exception {
        Path src = HfFixtures.dir(family);
        Files.writeString(dir.resolve("config.json"), Files.readString(src.resolve("config.json")).replace(configFrom, configTo));
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        try (SafeTensors.Loaded f = SafeTensors.read(src.resolve("model.safetensors"))) {
            for (String n : f.names()) tensors.put(n, MemoryScope.persistent(() -> f.tensor(n).copy()));
        }
        edit.accept(tensors);
        SafeTensors.write(dir.resolve("model.safetensors"), tensors);
        return dir;
    }

    @Test
    void fusedExpertLayoutLoadsTheSameModel(@TempDir Path dir) throws Exception {
        copyWith("olmoe", dir, t -> {
            for (int layer = 0; layer < 2; layer++) {
                String p = "model.layers." + layer + ".mlp.experts.";
                int e = 8;
                Tensor g0 = t.get(p + "0.gate_proj.weight");
                int h = g0.dim(0);
                int d = g0.dim(1);
                Tensor gateUp = Tensor.zeros(e, 2 * h, d);
                Tensor down = Tensor.zeros(e, d, h);
                for (int x = 0; x < e; x++) {
                    gateUp.rows(x, x + 1).view(2 * h, d).rows(0, h).copyFrom(t.remove(p + x + ".gate_proj.weight"));
                    gateUp.rows(x, x + 1).view(2 * h, d).rows(h, 2 * h).copyFrom(t.remove(p + x + ".up_proj.weight"));
                    down.rows(x, x + 1).view(d, h).copyFrom(t.remove(p + x + ".down_proj.weight"));
                }
                t.put(p + "gate_up_proj", gateUp);
                t.put(p + "down_proj", down);
            }
        }, "\"olmoe\"", "\"olmoe\"");
        var ids = HfFixtures.expected("olmoe", "input_ids");
        float[] expected = HfFixtures.expected("olmoe", "logits").toFloatArray();
        double diff = HfFixtures.maxAbsDiff(HfForwardTest.logits(HfCheckpoint.load(dir), ids), expected);
        assertTrue(diff <= HfForwardTest.TOLERANCE, "fused layout: " + diff);
    }

    @Test
    void missingTensorsAreNamed(@TempDir Path dir) throws Exception {
        copyWith("qwen2_moe", dir, t -> {
            t.remove("model.layers.0.self_attn.q_proj.bias");
            t.remove("model.layers.0.mlp.experts.5.up_proj.weight");
        }, "\"qwen2_moe\"", "\"qwen2_moe\"");
        var e = assertThrows(IllegalArgumentException.class, () -> HfCheckpoint.load(dir));
        assertTrue(e.getMessage().contains("model.layers.0.self_attn.q_proj.bias"), e.getMessage());
        assertTrue(e.getMessage().contains("model.layers.0.mlp.experts.5.up_proj.weight"), e.getMessage());
    }

    @Test
    void unknownArchitecturesAndSettingsAreNamed(@TempDir Path dir) throws Exception {
        copyWith("mixtral", dir, t -> { }, "\"mixtral\"", "\"llama4\"");
        var e = assertThrows(IllegalArgumentException.class, () -> HfCheckpoint.load(dir));
        assertTrue(e.getMessage().contains("llama4") && e.getMessage().contains("qwen3_moe"), e.getMessage());

        copyWith("mixtral", dir, t -> { }, "\"rope_type\": \"default\"", "\"rope_type\": \"yarn\"");
        e = assertThrows(IllegalArgumentException.class, () -> HfCheckpoint.load(dir));
        assertTrue(e.getMessage().contains("yarn"), e.getMessage());

        copyWith("olmoe", dir, t -> { }, "\"clip_qkv\": null", "\"clip_qkv\": 8.0");
        e = assertThrows(IllegalArgumentException.class, () -> HfCheckpoint.load(dir));
        assertTrue(e.getMessage().contains("clip_qkv"), e.getMessage());
    }
}
