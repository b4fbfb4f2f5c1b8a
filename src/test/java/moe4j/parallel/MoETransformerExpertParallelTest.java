package moe4j.parallel;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import moe4j.autograd.Autograd;
import moe4j.autograd.GradCheck;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.Distributed;
import moe4j.distributed.MeshSizes;
import moe4j.nn.ModelConfig;
import moe4j.nn.MoETransformer;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The language model under expert parallelism: 2 EP ranks, each on half of the batch's sequences, give
 * the same logits and (after gradient synchronisation) the same gradients as one rank on the whole batch,
 * ≤ 1e-4 relative. The load-balance loss is off: it is not linear in the tokens, so per-rank values do not
 * average to the global one; the z-loss (a mean over tokens) is on. The same with the deduplicating
 * dispatch, whose exchanges of two MoE layers interleave forward and backward.
 */
class MoETransformerExpertParallelTest {
    static final int B = 4;
    static final int S = 6;

    static ModelConfig config() {
        return config(false);
    }

    static ModelConfig config(boolean dedup) {
        return ModelConfig.builder().dim(16).nLayers(2).nHeads(4).nKvHeads(2).vocabSize(13).maxSeqLen(8).ffnHidden(24)
                .numExperts(4).moeTopK(2).moeFrequency(1).moeAuxLossWeight(0).moeRouterZLossWeight(0.1)
                .initStd(0.2).seed(5).moeDedup(dedup).build();
    }

    static Tensor ids(long seed, int vocab) {
        Rng rng = new Rng(seed);
        int[] v = new int[B * S];
        for (int i = 0; i < v.length; i++) v[i] = rng.nextInt(vocab);
        return Tensor.ofInts(v, B, S);
    }

    /** Logits of sequences [from, to) and the synchronised gradients by name. */
    record StepResult(float[] logits, Map<String, double[]> grads) {}

    static StepResult step(MoETransformer model, GradientSync sync, int from, int to) {
        try (MemoryScope scope = MemoryScope.open()) {
            Tensor tokens = ids(1, 13).rows(from, to);
            Tensor targets = ids(2, 13).rows(from, to);
            float[] logits = model.forward(tokens).toFloatArray();
            model.zeroGrad();
            Autograd.backward(model.loss(tokens, targets).total());
            sync.synchronize();
            Map<String, double[]> grads = new TreeMap<>();
            model.namedParameters().forEach((n, t) -> grads.put(n, t.grad().toDoubleArray()));
            return new StepResult(logits, grads);
        }
    }

    @ParameterizedTest(name = "dedup={0}")
    @ValueSource(booleans = {false, true})
    void twoEpRanksMatchOneRankOnTheWholeBatch(boolean dedup) {
        MoETransformer single = new MoETransformer(config());
        StepResult reference = step(single, GradientSync.create(single, null), 0, B);
        List<StepResult> ranks = Distributed.run(2, Duration.ofSeconds(30), world -> {
            MoETransformer model = new MoETransformer(config(dedup));
            DeviceMesh mesh = DeviceMesh.create(world, MeshSizes.defaults().ep(2));
            ExpertParallel.apply(model, mesh);
            int half = B / 2;
            return step(model, GradientSync.create(model, mesh), world.rank() * half, (world.rank() + 1) * half);
        });
        int perRank = B / 2 * S * 13;
        for (int r = 0; r < 2; r++) {
            float[] logits = ranks.get(r).logits();
            double[] expected = new double[perRank];
            double[] actual = new double[perRank];
            for (int i = 0; i < perRank; i++) {
                expected[i] = reference.logits()[r * perRank + i];
                actual[i] = logits[i];
            }
            assertTrue(GradCheck.relativeError(actual, expected) <= 1e-5, "rank " + r + " logits");
            Map<String, double[]> grads = ranks.get(r).grads();
            assertTrue(grads.containsKey("layers.0.moe.experts." + (2 * r) + ".up_proj.weight"), "rank " + r + " keeps its experts");
            assertFalse(grads.containsKey("layers.0.moe.experts." + (2 * (1 - r)) + ".up_proj.weight"), "rank " + r + " drops the others");
            for (var e : grads.entrySet()) {
                double err = GradCheck.relativeError(e.getValue(), reference.grads().get(e.getKey()));
                assertTrue(err <= 1e-4, "rank " + r + " " + e.getKey() + ": relative error " + err);
            }
        }
    }
}
