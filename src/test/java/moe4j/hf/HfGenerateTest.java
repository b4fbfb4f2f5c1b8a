package moe4j.hf;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.List;
import moe4j.autograd.Autograd;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.MeshSizes;
import moe4j.distributed.Distributed;
import moe4j.nn.Generator;
import moe4j.nn.KvCache;
import moe4j.nn.MoETransformer;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Decoding with the key/value cache: greedy continuations equal transformers' (its generate with a cache,
 * 12 new tokens) for every family, on one rank and over 4 expert-parallel ranks; and the cached logits of a
 * sequence fed in pieces equal the whole-sequence forward (Mixtral's window of 6 is passed by then).
 */
class HfGenerateTest {
    static int[] ints(Tensor t) {
        return t.toIntArray();
    }

    @ParameterizedTest
    @ValueSource(strings = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe"})
    void greedyContinuationMatchesTransformers(String family) {
        MoETransformer model = HfCheckpoint.load(HfFixtures.dir(family));
        int[] prompt = ints(HfFixtures.expected(family, "prompt_ids"));
        int[] expected = ints(HfFixtures.expected(family, "greedy_ids"));
        Generator.Result r = Generator.generate(model, prompt, expected.length, Generator.Sampling.GREEDY, -1, t -> { });
        assertArrayEquals(expected, r.tokens(), family);
    }

    @Test
    void greedyContinuationOverFourExpertParallelRanks() {
        String family = "qwen2_moe";
        HfConfig config = HfConfig.read(HfFixtures.dir(family));
        int[] prompt = ints(HfFixtures.expected(family, "prompt_ids"));
        int[] expected = ints(HfFixtures.expected(family, "greedy_ids"));
        try (HfWeightFiles files = new HfWeightFiles(HfFixtures.dir(family))) {
            List<int[]> ranks = Distributed.run(4, Duration.ofSeconds(60), world -> {
                MoETransformer model = HfCheckpoint.load(config, files, DeviceMesh.create(world, MeshSizes.defaults().ep(4)));
                return Generator.generate(model, prompt, expected.length, Generator.Sampling.GREEDY, -1, t -> { }).tokens();
            });
            for (int r = 0; r < 4; r++) assertArrayEquals(expected, ranks.get(r), "rank " + r);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"mixtral", "qwen3_moe", "olmoe"})
    void cachedLogitsEqualTheWholeSequenceForward(String family) {
        MoETransformer model = HfCheckpoint.load(HfFixtures.dir(family));
        model.train(false);
        int[] ids = ints(HfFixtures.expected(family, "input_ids").rows(0, 1));
        try (MemoryScope scope = MemoryScope.open()) {
            float[] whole = Autograd.noGrad(() -> model.forward(Tensor.ofInts(ids, 1, ids.length))).toFloatArray();
            KvCache cache = new KvCache(model, ids.length);
            int v = model.config().vocabSize();
            int at = 0;
            for (int piece : new int[] {5, 1, 1, 4, 1, 4}) {
                int from = at;
                int[] part = java.util.Arrays.copyOfRange(ids, from, from + piece);
                float[] got = Autograd.noGrad(() -> model.forwardCached(Tensor.ofInts(part, piece), cache)).toFloatArray();
                float[] want = java.util.Arrays.copyOfRange(whole, from * v, (from + piece) * v);
                double diff = HfFixtures.maxAbsDiff(got, want);
                assertTrue(diff <= 1e-5, family + " tokens [" + from + ", " + (from + piece) + "): max diff " + diff);
                at += piece;
            }
            assertEquals(ids.length, cache.length());
        }
    }

    @Test
    void topPSamplingIsReproducibleAndStaysInTheNucleus() {
        MoETransformer model = HfCheckpoint.load(HfFixtures.dir("olmoe"));
        int[] prompt = ints(HfFixtures.expected("olmoe", "prompt_ids"));
        Generator.Sampling s = new Generator.Sampling(1.0, 0.9, 42);
        int[] a = Generator.generate(model, prompt, 10, s, -1, t -> { }).tokens();
        int[] b = Generator.generate(model, prompt, 10, s, -1, t -> { }).tokens();
        assertArrayEquals(a, b, "same seed, same tokens");
        // with a tiny nucleus only the most likely token is ever kept: sampling turns greedy
        int[] nucleus = Generator.generate(model, prompt, 10, new Generator.Sampling(1.0, 1e-9, 7), -1, t -> { }).tokens();
        int[] greedy = Generator.generate(model, prompt, 10, Generator.Sampling.GREEDY, -1, t -> { }).tokens();
        assertArrayEquals(greedy, nucleus);
    }
}
