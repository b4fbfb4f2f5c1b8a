package moe4j.hf;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.List;
import moe4j.autograd.Autograd;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.MeshSizes;
import moe4j.distributed.Distributed;
import moe4j.nn.MoETransformer;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * moe4j's logits on transformers' tiny random models equal transformers' fp32 logits within 1e-4, on one
 * rank and with the experts split over 4 expert-parallel ranks (each rank runs the whole batch).
 * The fixtures cover sliding-window attention (Mixtral, window 6 over 16 tokens), bf16 weights in three
 * shards, a shared expert with its sigmoid gate, un-normalised top-k and a dense layer (Qwen2-MoE), per-head
 * QK-norm, an explicit head_dim, linear RoPE scaling and tied embeddings (Qwen3-MoE), whole-projection
 * QK-norm (OLMoE).
 */
class HfForwardTest {
    static final double TOLERANCE = 1e-4;

    static float[] logits(MoETransformer model, Tensor ids) {
        try (MemoryScope scope = MemoryScope.open()) {
            return Autograd.noGrad(() -> model.forward(ids).toFloatArray());
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"mixtral", "mixtral-bf16", "qwen2_moe", "qwen3_moe", "olmoe"})
    void logitsMatchTransformersOnOneRank(String family) {
        MoETransformer model = HfCheckpoint.load(HfFixtures.dir(family));
        Tensor ids = HfFixtures.expected(family, "input_ids");
        float[] expected = HfFixtures.expected(family, "logits").toFloatArray();
        double diff = HfFixtures.maxAbsDiff(logits(model, ids), expected);
        assertTrue(diff <= TOLERANCE, family + ": max |moe4j − transformers| = " + diff);
    }

    @ParameterizedTest
    @ValueSource(strings = {"mixtral", "mixtral-bf16", "qwen2_moe", "qwen3_moe", "olmoe"})
    void logitsMatchTransformersWithFourExpertParallelRanks(String family) {
        HfConfig config = HfConfig.read(HfFixtures.dir(family));
        Tensor ids = HfFixtures.expected(family, "input_ids");
        float[] expected = HfFixtures.expected(family, "logits").toFloatArray();
        try (HfWeightFiles files = new HfWeightFiles(HfFixtures.dir(family))) {
            List<float[]> ranks = Distributed.run(4, Duration.ofSeconds(60), world -> {
                DeviceMesh mesh = DeviceMesh.create(world, MeshSizes.defaults().ep(4));
                MoETransformer model = HfCheckpoint.load(config, files, mesh);
                int experts = model.moeLayers().get(0).numLocalExperts();
                assertEquals(config.model().numExperts() / 4, experts, "each rank holds a quarter of the experts");
                return logits(model, ids);
            });
            for (int r = 0; r < 4; r++) {
                double diff = HfFixtures.maxAbsDiff(ranks.get(r), expected);
                assertTrue(diff <= TOLERANCE, family + " rank " + r + ": max |moe4j − transformers| = " + diff);
            }
        }
    }

    @org.junit.jupiter.api.Test
    void eachExpertParallelRankReadsOnlyItsExperts() {
        java.nio.file.Path dir = HfFixtures.dir("mixtral");
        HfConfig config = HfConfig.read(dir);
        List<java.util.TreeSet<String>> reads = Distributed.run(4, Duration.ofSeconds(60), world -> {
            try (HfWeightFiles files = new HfWeightFiles(dir)) {
                HfCheckpoint.load(config, files, DeviceMesh.create(world, MeshSizes.defaults().ep(4)));
                return files.namesRead();
            }
        });
        for (int r = 0; r < 4; r++) {
            java.util.Set<Integer> experts = new java.util.TreeSet<>();
            for (String name : reads.get(r)) {
                var m = java.util.regex.Pattern.compile("\\.experts\\.(\\d+)\\.").matcher(name);
                if (m.find()) experts.add(Integer.parseInt(m.group(1)));
            }
            assertEquals(java.util.Set.of(2 * r, 2 * r + 1), experts, "rank " + r + " read experts " + experts);
            assertTrue(reads.get(r).contains("model.embed_tokens.weight"), "replicated tensors are read by every rank");
        }
    }
}
