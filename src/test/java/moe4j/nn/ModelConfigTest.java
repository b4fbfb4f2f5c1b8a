package moe4j.nn;

import static org.junit.jupiter.api.Assertions.*;

import java.util.function.Consumer;
import org.junit.jupiter.api.Test;

class ModelConfigTest {
    static void assertInvalid(Consumer<ModelConfig.Builder> edit, String expectedMessagePart) {
        ModelConfig.Builder b = ModelConfig.builder();
        edit.accept(b);
        var e = assertThrows(IllegalArgumentException.class, b::build);
        assertTrue(e.getMessage().contains(expectedMessagePart), "message '" + e.getMessage() + "' lacks '" + expectedMessagePart + "'");
    }

    @Test
    void defaultsDescribeTheSmallModel() {
        ModelConfig c = ModelConfig.defaults();
        assertEquals(256, c.dim());
        assertEquals(4, c.nLayers());
        assertEquals(8, c.nHeads());
        assertEquals(4, c.nKvHeads());
        assertEquals(32, c.headDim());
        assertEquals(256, c.vocabSize());
        assertEquals(256, c.maxSeqLen());
        assertEquals(8, c.numExperts());
        assertEquals(2, c.moeTopK());
        // Llama: 8/3 · 256 = 682, rounded up to a multiple of 256
        assertEquals(768, c.ffnHidden());
        assertEquals(768, c.expertHidden());
        assertEquals(1e-5, c.normEps());
        assertEquals(10000, c.ropeTheta());
        assertEquals(0.02, c.initStd());
        assertFalse(c.tieEmbeddings());
        assertEquals(4, c.numMoeLayers());
    }

    @Test
    void moeFrequencyPicksEveryKthLayer() {
        ModelConfig c = ModelConfig.builder().nLayers(6).moeFrequency(3).build();
        boolean[] expected = {false, false, true, false, false, true};
        for (int i = 0; i < 6; i++) assertEquals(expected[i], c.isMoeLayer(i), "layer " + i);
        ModelConfig dense = ModelConfig.builder().numExperts(0).build();
        assertEquals(0, dense.numMoeLayers());
        assertThrows(IllegalStateException.class, () -> dense.moeConfig(0));
    }

    @Test
    void expertHiddenIsRoundedMultipleOfFfnHidden() {
        ModelConfig c = ModelConfig.builder().ffnHidden(100).moeExpertFfnMultiplier(0.255).build();
        assertEquals(26, c.expertHidden());
        assertEquals(26, c.moeConfig(0).hidden());
    }

    @Test
    void moeLayerConfigsCarryDepthAndDistinctSeeds() {
        ModelConfig c = ModelConfig.builder().nLayers(3).seed(7).moeRouter("sigmoid_topk").moeSharedExperts(1).build();
        MoEConfig m0 = c.moeConfig(0);
        assertEquals(3, m0.numLayers());
        assertEquals(RouterKind.SIGMOID_TOPK, m0.router());
        assertEquals(1, m0.sharedExperts());
        assertNotEquals(m0.seed(), c.moeConfig(1).seed());
        assertEquals(m0.seed(), ModelConfig.builder().nLayers(3).seed(7).build().moeConfig(0).seed());
    }

    @Test
    void setAcceptsConfigFileNames() {
        ModelConfig c = ModelConfig.builder()
                .set("dim", 64L).set("n_layers", 2).set("n_heads", "4").set("n_kv_heads", 2).set("vocab_size", 100)
                .set("max_seq_len", 32).set("multiple_of", 32).set("norm_eps", 1e-6).set("rope_theta", 500000.0)
                .set("num_experts", 4).set("moe_top_k", 1).set("moe_frequency", 2).set("moe_router", "sigmoid_topk")
                .set("moe_aux_loss_weight", 0.02).set("moe_router_z_loss_weight", 0.0).set("moe_capacity_factor", 1.25)
                .set("moe_gradient_scale", true).set("moe_packed_experts", "true").set("moe_expert_ffn_multiplier", 0.5)
                .set("moe_bias_schedule", "cosine_decay").set("init_std", 0.01).set("tie_embeddings", true).set("seed", 9)
                .build();
        assertEquals(64, c.dim());
        assertEquals(4, c.nHeads());
        assertEquals(192, c.ffnHidden()); // 8/3·64 = 170 → multiple of 32
        assertEquals(96, c.expertHidden());
        assertEquals(500000.0, c.ropeTheta());
        assertEquals(BiasSchedule.COSINE_DECAY, c.moeBiasSchedule());
        assertTrue(c.moePackedExperts());
        assertTrue(c.tieEmbeddings());
        assertEquals(9, c.seed());
        assertEquals(1.25, c.moeCapacityFactor());
        var e = assertThrows(IllegalArgumentException.class, () -> ModelConfig.builder().set("n_head", 4));
        assertTrue(e.getMessage().contains("unknown model config key 'n_head'"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> ModelConfig.builder().set("dim", 2.5));
        assertThrows(IllegalArgumentException.class, () -> ModelConfig.builder().set("tie_embeddings", "yes"));
    }

    @Test
    void inconsistentConfigsAreRejectedWithTheValues() {
        assertInvalid(b -> b.dim(100).nHeads(8), "dim (100) must be divisible by n_heads (8)");
        assertInvalid(b -> b.nHeads(8).nKvHeads(3), "n_heads (8) must be divisible by n_kv_heads (3)");
        assertInvalid(b -> b.dim(24).nHeads(8).nKvHeads(4), "must be even");
        assertInvalid(b -> b.numExperts(2).moeTopK(3), "moe_top_k (3) must be <= num_experts (2)");
        assertInvalid(b -> b.moeTopK(0), "moe_top_k must be >= 1");
        var unknownRouter = assertThrows(IllegalArgumentException.class, () -> ModelConfig.builder().moeRouter("hash"));
        assertEquals("unknown moe_router 'hash': valid routers are [softmax_topk, sigmoid_topk]", unknownRouter.getMessage());
        assertInvalid(b -> b.moeFrequency(0), "moe_frequency must be >= 1");
        assertInvalid(b -> b.numExperts(-1), "num_experts must be >= 0");
        assertInvalid(b -> b.moeSharedExperts(2), "moe_shared_experts must be 0 or 1");
        assertInvalid(b -> b.moeCapacityFactor(-1), "moe_capacity_factor must be >= 0");
        assertInvalid(b -> b.vocabSize(0), "vocab_size must be >= 1");
        assertInvalid(b -> b.normEps(0), "norm_eps must be > 0");
        assertInvalid(b -> b.initStd(-0.1), "init_std must be > 0");
        assertInvalid(b -> b.moeExpertFfnMultiplier(0.0001).ffnHidden(10), "expert hidden size");
        // a dense model ignores the MoE-only fields
        assertEquals(0, ModelConfig.builder().numExperts(0).moeTopK(5).build().numMoeLayers());
    }
}
