package moe4j.hf;

import static org.junit.jupiter.api.Assertions.*;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import moe4j.autograd.Autograd;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.MeshSizes;
import moe4j.distributed.Distributed;
import moe4j.nn.MoEMLP;
import moe4j.parallel.ExpertParallel;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.SafeTensors;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

/**
 * The DeepSeek-V3 MoE block (sigmoid router with selection bias, 4 groups of which the best 2 are kept,
 * top-3, normalised weights × 2.5, one shared expert; experts in transformers' fused layout) against
 * transformers' DeepseekV3MoE on 24 tokens: ≤ 1e-4 on one rank and on each of 4 expert-parallel ranks.
 */
class DeepSeekV3MoeTest {
    static Path dir() {
        return HfFixtures.dir("deepseek_v3_moe");
    }

    static float[] run(MoEMLP layer, SafeTensors.Loaded block, Tensor x) {
        DeepSeekV3Moe.load(layer, "", block::contains, block::tensor);
        layer.train(false);
        try (MemoryScope scope = MemoryScope.open()) {
            return Autograd.noGrad(() -> layer.forward(x)).toFloatArray();
        }
    }

    @Test
    void blockMatchesTransformersOnOneAndFourRanks() throws Exception {
        JsonObject json = JsonParser.parseString(Files.readString(dir().resolve("config.json"))).getAsJsonObject();
        var config = DeepSeekV3Moe.config(json, "deepseek config");
        assertEquals(4, config.routerGroups());
        try (SafeTensors.Loaded block = SafeTensors.read(dir().resolve("block.safetensors"));
             SafeTensors.Loaded expected = SafeTensors.read(dir().resolve("expected.safetensors"))) {
            Tensor x = MemoryScope.persistent(() -> expected.tensor("x").copy());
            float[] y = expected.tensor("y").toFloatArray();
            double diff = HfFixtures.maxAbsDiff(run(MoEMLP.build(config), block, x), y);
            assertTrue(diff <= 1e-4, "one rank: max diff " + diff);
            List<float[]> ranks = Distributed.run(4, Duration.ofSeconds(60), world -> {
                MoEMLP layer = MoEMLP.build(config);
                ExpertParallel.apply(layer, DeviceMesh.create(world, MeshSizes.defaults().ep(4)));
                assertEquals(2, layer.numLocalExperts());
                return run(layer, block, x);
            });
            for (int r = 0; r < 4; r++) {
                double d = HfFixtures.maxAbsDiff(ranks.get(r), y);
                assertTrue(d <= 1e-4, "rank " + r + ": max diff " + d);
            }
        }
    }

    @Test
    void groupLimitingChangesTheChoiceAndMissingTensorsAreNamed() throws Exception {
        JsonObject json = JsonParser.parseString(Files.readString(dir().resolve("config.json"))).getAsJsonObject();
        var limited = DeepSeekV3Moe.config(json, "c");
        var free = limited.toBuilder().routerGroups(1, 1).build();
        try (SafeTensors.Loaded block = SafeTensors.read(dir().resolve("block.safetensors"));
             SafeTensors.Loaded expected = SafeTensors.read(dir().resolve("expected.safetensors"))) {
            Tensor x = MemoryScope.persistent(() -> expected.tensor("x").copy());
            float[] y = expected.tensor("y").toFloatArray();
            // without the group limit some token picks an expert outside its best two groups: the reference disagrees
            assertTrue(HfFixtures.maxAbsDiff(run(MoEMLP.build(free), block, x), y) > 1e-3);
            var e = assertThrows(IllegalArgumentException.class,
                    () -> DeepSeekV3Moe.load(MoEMLP.build(limited), "", n -> !n.equals("gate.e_score_correction_bias") && block.contains(n), block::tensor));
            assertTrue(e.getMessage().contains("gate.e_score_correction_bias"), e.getMessage());
        }
    }
}
