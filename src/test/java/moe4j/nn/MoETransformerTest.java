package moe4j.nn;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import moe4j.autograd.Autograd;
import moe4j.autograd.GradCheck;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

/**
 * The whole model: parameter names, determinism, causality, a dense variant, and gradients of the
 * logits and of the total loss against float32 central differences (GradCheck) with routing held fixed.
 */
class MoETransformerTest {
    static final int B = 2;
    static final int S = 5;
    static final int V = 11;

    /** dim 8, 2 layers (layer 0 dense, layer 1 MoE), 2 heads sharing 1 kv head, 4 experts top-2. */
    static ModelConfig.Builder tiny() {
        return ModelConfig.builder().dim(8).nLayers(2).nHeads(2).nKvHeads(1).vocabSize(V).maxSeqLen(8).ffnHidden(12)
                .numExperts(4).moeTopK(2).moeFrequency(2).initStd(0.3).moeAuxLossWeight(0.1).moeRouterZLossWeight(0.05).seed(3);
    }

    static Tensor tokens(long seed, int b, int s, int vocab) {
        Rng rng = new Rng(seed);
        int[] ids = new int[b * s];
        for (int i = 0; i < ids.length; i++) ids[i] = rng.nextInt(vocab);
        return Tensor.ofInts(ids, b, s);
    }

    @Test
    void parameterNamesFollowThePyTorchConvention() {
        MoETransformer model = new MoETransformer(tiny().build());
        Set<String> names = new TreeSet<>(model.namedParameters().keySet());
        Set<String> expected = new TreeSet<>(List.of("tok_embeddings.weight", "norm.weight", "output.weight",
                "layers.0.mlp.gate_proj.weight", "layers.0.mlp.up_proj.weight", "layers.0.mlp.down_proj.weight",
                "layers.1.moe.router.gate.weight"));
        for (int i = 0; i < 2; i++) {
            for (String w : new String[] {"wq", "wk", "wv", "wo"}) expected.add("layers." + i + ".attention." + w + ".weight");
            expected.add("layers." + i + ".attention_norm.weight");
            expected.add("layers." + i + ".ffn_norm.weight");
        }
        for (int g = 0; g < 4; g++) {
            for (String p : new String[] {"gate_proj", "up_proj", "down_proj"}) expected.add("layers.1.moe.experts." + g + "." + p + ".weight");
        }
        assertEquals(expected, names);
        Map<String, Tensor> p = model.namedParameters();
        assertArrayEquals(new int[] {8, 8}, p.get("layers.0.attention.wq.weight").shape());
        assertArrayEquals(new int[] {4, 8}, p.get("layers.0.attention.wk.weight").shape());
        assertArrayEquals(new int[] {4, 8}, p.get("layers.0.attention.wv.weight").shape());
        assertArrayEquals(new int[] {8, 8}, p.get("layers.0.attention.wo.weight").shape());
        assertArrayEquals(new int[] {V, 8}, p.get("tok_embeddings.weight").shape());
        assertArrayEquals(new int[] {V, 8}, p.get("output.weight").shape());
        assertArrayEquals(new int[] {4, 8}, p.get("layers.1.moe.router.gate.weight").shape());
        assertEquals(1, model.moeLayers().size());
        assertSame(model.layers().get(1).moe(), model.moeLayers().get(0));

        MoETransformer tied = new MoETransformer(tiny().tieEmbeddings(true).build());
        assertFalse(tied.namedParameters().containsKey("output.weight"));
        assertNull(tied.output());
        assertArrayEquals(new int[] {B * S, V}, tied.forward(tokens(1, B, S, V)).shape());
    }

    @Test
    void initialisationDependsOnlyOnTheSeed() {
        Map<String, Tensor> a = new MoETransformer(tiny().build()).namedParameters();
        Map<String, Tensor> b = new MoETransformer(tiny().build()).namedParameters();
        Map<String, Tensor> c = new MoETransformer(tiny().seed(4).build()).namedParameters();
        for (String name : a.keySet()) {
            assertArrayEquals(a.get(name).toFloatArray(), b.get(name).toFloatArray(), name);
            if (!name.endsWith("norm.weight")) assertFalse(Arrays.equals(a.get(name).toFloatArray(), c.get(name).toFloatArray()), name);
        }
        assertFalse(Arrays.equals(a.get("layers.0.attention.wq.weight").toFloatArray(), a.get("layers.1.attention.wq.weight").toFloatArray()));
        // Norms start at one; the residual projections are scaled by 1/sqrt(2·n_layers).
        for (float w : a.get("norm.weight").toFloatArray()) assertEquals(1f, w);
        assertTrue(std(a.get("layers.0.attention.wo.weight")) < 0.7 * std(a.get("layers.0.attention.wq.weight")));
    }

    static double std(Tensor t) {
        double s = 0;
        for (float v : t.toFloatArray()) s += v * v;
        return Math.sqrt(s / t.numel());
    }

    @Test
    void changingAFutureTokenLeavesEarlierLogitsUnchanged() {
        MoETransformer model = new MoETransformer(tiny().build());
        Tensor toks = tokens(5, B, S, V);
        float[] before = model.forward(toks).toFloatArray();
        int pos = 3;
        toks.setInt(pos, (toks.getInt(pos) + 1) % V); // sequence 0, position 3
        float[] after = model.forward(toks).toFloatArray();
        for (int s = 0; s < S; s++) {
            double diff = 0;
            for (int v = 0; v < V; v++) diff = Math.max(diff, Math.abs(before[s * V + v] - after[s * V + v]));
            if (s < pos) assertTrue(diff <= 1e-6, "position " + s + " changed by " + diff);
            else assertTrue(diff > 1e-6, "position " + s + " must see token " + pos);
        }
        // the other sequence of the batch is untouched
        for (int i = S * V; i < 2 * S * V; i++) assertEquals(before[i], after[i], 1e-6f);
    }

    /** Gradients by GradCheck; fails if any perturbation changed an MoE layer's routing. */
    static GradCheck.Result checkWithFixedRouting(MoETransformer model, List<String> names, double eps,
                                                  java.util.function.Supplier<Tensor> f) {
        Map<String, Tensor> params = model.namedParameters();
        List<Tensor> inputs = new ArrayList<>();
        for (String n : names) inputs.add(params.get(n));
        f.get();
        List<int[]> routing = new ArrayList<>();
        for (MoEMLP moe : model.moeLayers()) routing.add(moe.router().lastOutput().indices().toIntArray());
        int[] flips = new int[1];
        GradCheck.Result result = GradCheck.check(in -> {
            Tensor out = f.get();
            List<MoEMLP> layers = model.moeLayers();
            for (int l = 0; l < layers.size(); l++) {
                if (!Arrays.equals(routing.get(l), layers.get(l).router().lastOutput().indices().toIntArray())) flips[0]++;
            }
            return out;
        }, inputs, eps, 17);
        assertEquals(0, flips[0], "a perturbation of " + eps + " changed the routing; the finite differences are not valid");
        return result;
    }

    static final List<String> CHECKED = List.of("tok_embeddings.weight", "layers.0.attention.wq.weight",
            "layers.0.attention.wk.weight", "layers.0.attention.wv.weight", "layers.0.attention_norm.weight",
            "layers.0.mlp.down_proj.weight", "layers.1.attention.wo.weight", "layers.1.ffn_norm.weight",
            "layers.1.moe.router.gate.weight", "layers.1.moe.experts.0.gate_proj.weight",
            "layers.1.moe.experts.2.down_proj.weight", "norm.weight", "output.weight");

    @Test
    void logitGradientsMatchFiniteDifferences() {
        MoETransformer model = new MoETransformer(tiny().build());
        Tensor toks = tokens(7, B, S, V);
        GradCheck.Result r = checkWithFixedRouting(model, CHECKED, 1e-3, () -> model.forward(toks));
        for (int i = 0; i < CHECKED.size(); i++) {
            assertTrue(r.relativeError()[i] < 5e-3, CHECKED.get(i) + ": relative error " + r.relativeError()[i]);
        }
    }

    @Test
    void totalLossGradientsIncludeTheRouterLosses() {
        MoETransformer model = new MoETransformer(tiny().build());
        Tensor toks = tokens(18, B, S, V);
        Tensor targets = tokens(9, B, S, V);
        targets.setInt(2, -1); // an ignored position
        // A scalar loss of ~2.4 in float32 carries ~1e-7 relative rounding: eps 1e-2 keeps that noise below the
        // tolerance while no perturbation flips a routing decision.
        GradCheck.Result r = checkWithFixedRouting(model, CHECKED, 1e-2, () -> model.loss(toks, targets).total());
        for (int i = 0; i < CHECKED.size(); i++) {
            assertTrue(r.relativeError()[i] < 5e-3, CHECKED.get(i) + ": relative error " + r.relativeError()[i]);
        }
    }

    @Test
    void lossIsCrossEntropyPlusWeightedRouterLosses() {
        ModelConfig cfg = tiny().build();
        MoETransformer model = new MoETransformer(cfg);
        Tensor toks = tokens(10, B, S, V);
        Tensor targets = tokens(11, B, S, V);
        MoETransformer.Loss loss = model.loss(toks, targets);
        RouterOutput routed = model.moeLayers().get(0).router().lastOutput();
        assertEquals(routed.auxLoss().item(), loss.auxLoss().item());
        assertEquals(routed.zLoss().item(), loss.zLoss().item());
        assertTrue(loss.auxLoss().item() > 0 && loss.zLoss().item() > 0);
        double expected = loss.crossEntropy().item() + cfg.moeAuxLossWeight() * loss.auxLoss().item()
                + cfg.moeRouterZLossWeight() * loss.zLoss().item();
        assertEquals(expected, loss.total().item(), 1e-6);

        // cross-entropy against a float64 log-softmax of the logits
        float[] logits = model.forward(toks).toFloatArray();
        double ce = 0;
        for (int i = 0; i < B * S; i++) {
            double max = Double.NEGATIVE_INFINITY;
            for (int v = 0; v < V; v++) max = Math.max(max, logits[i * V + v]);
            double z = 0;
            for (int v = 0; v < V; v++) z += Math.exp(logits[i * V + v] - max);
            ce += max + Math.log(z) - logits[i * V + targets.getInt(i)];
        }
        assertEquals(ce / (B * S), loss.crossEntropy().item(), 1e-5);
    }

    @Test
    void denseModelTrainsWithoutRouterLosses() {
        MoETransformer model = new MoETransformer(tiny().numExperts(0).build());
        assertTrue(model.moeLayers().isEmpty());
        assertTrue(model.namedParameters().keySet().stream().noneMatch(n -> n.contains(".moe.")));
        assertTrue(model.namedParameters().containsKey("layers.1.mlp.up_proj.weight"));
        // a repeated pattern is learnable: plain SGD must lower the loss clearly
        Tensor toks = Tensor.ofInts(new int[] {1, 2, 3, 4, 5, 1, 2, 3, 4, 5}, B, S);
        Tensor targets = Tensor.ofInts(new int[] {2, 3, 4, 5, 1, 2, 3, 4, 5, 1}, B, S);
        float first = 0;
        float last = 0;
        for (int step = 0; step < 40; step++) {
            model.zeroGrad();
            MoETransformer.Loss loss = model.loss(toks, targets);
            assertEquals(0f, loss.auxLoss().item());
            assertEquals(loss.crossEntropy().item(), loss.total().item());
            Autograd.backward(loss.total());
            if (step == 0) {
                first = loss.total().item();
                for (var e : model.namedParameters().entrySet()) assertNotNull(e.getValue().grad(), e.getKey());
            }
            last = loss.total().item();
            sgd(model, 0.5f);
        }
        assertTrue(last < 0.5 * first, "loss " + first + " -> " + last);
    }

    @Test
    void moeModelLossDecreasesUnderSgd() {
        MoETransformer model = new MoETransformer(tiny().build());
        Tensor toks = Tensor.ofInts(new int[] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, B, S);
        Tensor targets = Tensor.ofInts(new int[] {2, 3, 4, 5, 6, 7, 8, 9, 10, 0}, B, S);
        float first = 0;
        float last = 0;
        for (int step = 0; step < 40; step++) {
            model.zeroGrad();
            MoETransformer.Loss loss = model.loss(toks, targets);
            Autograd.backward(loss.total());
            if (step == 0) first = loss.crossEntropy().item();
            last = loss.crossEntropy().item();
            sgd(model, 0.5f);
        }
        assertTrue(last < 0.5 * first, "cross-entropy " + first + " -> " + last);
    }

    static void sgd(MoETransformer model, float lr) {
        Autograd.noGrad(() -> {
            for (Tensor p : model.parameters()) {
                if (p.grad() == null) continue;
                for (long i = 0; i < p.numel(); i++) p.set(i, p.get(i) - lr * p.grad().get(i));
            }
            return null;
        });
    }

    @Test
    void badInputsAreRejected() {
        MoETransformer model = new MoETransformer(tiny().build());
        var e = assertThrows(IllegalArgumentException.class, () -> model.forward(tokens(1, 1, 9, V)));
        assertTrue(e.getMessage().contains("exceeds max_seq_len 8"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> model.forward(Tensor.zeros(2, 3)));
        assertThrows(IllegalArgumentException.class, () -> model.forward(Tensor.ofInts(new int[] {0, 11}, 1, 2)));
        assertThrows(IllegalArgumentException.class, () -> model.loss(tokens(1, B, S, V), tokens(1, B, S + 1, V)));
    }
}
