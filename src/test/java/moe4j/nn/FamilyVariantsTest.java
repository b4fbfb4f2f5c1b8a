package moe4j.nn;

import static org.junit.jupiter.api.Assertions.*;

import java.util.List;
import moe4j.autograd.Autograd;
import moe4j.autograd.GradCheck;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The layer variants published MoE families need, against float64 references and finite-difference
 * gradients: a linear map with bias; attention with q/k/v biases, QK-norm (per head and over all heads),
 * a head_dim other than dim / heads, RoPE scaling and a window; the MoE layer with un-normalised top-k
 * weights and a sigmoid-gated shared expert of its own hidden size.
 */
class FamilyVariantsTest {
    static void randomize(Module m, long seed, double std) {
        Rng rng = new Rng(seed);
        for (Tensor p : m.parameters()) {
            for (long i = 0; i < p.numel(); i++) p.set(i, (float) (rng.nextGaussian() * std + (p.rank() == 1 && std < 1 ? 1 : 0)));
        }
    }

    @Test
    void linearWithBiasMatchesFloat64AndItsGradients() {
        Linear lin = new Linear(5, 3, true);
        randomize(lin, 1, 0.5);
        lin.bias().copyFrom(Tensor.randn(new Rng(2), 1.0, 3));
        Tensor x = Tensor.randn(new Rng(3), 1.0, 4, 5).requiresGrad(true);
        float[] y = lin.forward(x).toFloatArray();
        for (int t = 0; t < 4; t++) {
            for (int o = 0; o < 3; o++) {
                double want = lin.bias().get(o);
                for (int i = 0; i < 5; i++) want += (double) x.get(t * 5 + i) * lin.weight().get(o * 5 + i);
                assertEquals(want, y[t * 3 + o], 1e-5);
            }
        }
        var r = GradCheck.check(in -> lin.forward(in.get(0)), List.of(x, lin.weight(), lin.bias()), 1e-2, 4);
        assertTrue(r.maxRelativeError() < 1e-2, "linear with bias gradients: " + r.maxRelativeError());
        assertNull(new Linear(5, 3).bias());
    }

    @ParameterizedTest
    @EnumSource(QkNorm.class)
    void attentionVariantsPassFiniteDifferenceChecks(QkNorm norm) {
        // dim 8, 2 query heads of 6 (12 ≠ 8), 1 kv head, biases, scaled RoPE, window 3 over 5 tokens
        Attention.Options o = new Attention.Options(2, 1, 6, 1e4, 2.0, true, norm, 1e-6, 3);
        Attention a = new Attention(8, o);
        randomize(a, 5, 0.4);
        Tensor x = Tensor.randn(new Rng(6), 1.0, 2, 5, 8).requiresGrad(true);
        assertArrayEquals(new int[] {2, 5, 8}, a.forward(x).shape());
        List<Tensor> inputs = new java.util.ArrayList<>(List.of(x, a.wq().weight(), a.wq().bias(), a.wk().bias(), a.wv().bias()));
        if (norm != QkNorm.NONE) {
            inputs.add(a.qNorm().weight());
            inputs.add(a.kNorm().weight());
            assertEquals(norm == QkNorm.PER_HEAD ? 6 : 12, a.qNorm().dim());
        } else {
            assertNull(a.qNorm());
        }
        var r = GradCheck.check(in -> a.forward(in.get(0)), inputs, 1e-2, 7);
        assertTrue(r.maxRelativeError() < 2e-2, norm + ": " + java.util.Arrays.toString(r.relativeError()));
    }

    /** float64 reference of the layer: softmax router, raw top-k probabilities, SwiGLU experts, gated shared expert. */
    static double[] moeRef(MoEMLP m, double[] x, int t, int d) {
        int e = m.numExperts();
        int k = m.router().topK();
        double[] out = new double[t * d];
        for (int i = 0; i < t; i++) {
            double[] xi = java.util.Arrays.copyOfRange(x, i * d, (i + 1) * d);
            double[] logits = matvec(m.router().gate().weight(), xi);
            double max = java.util.Arrays.stream(logits).max().orElseThrow();
            double z = 0;
            for (int j = 0; j < e; j++) z += Math.exp(logits[j] - max);
            double[] p = new double[e];
            for (int j = 0; j < e; j++) p[j] = Math.exp(logits[j] - max) / z;
            boolean[] taken = new boolean[e];
            for (int s = 0; s < k; s++) {
                int best = -1;
                for (int j = 0; j < e; j++) if (!taken[j] && (best < 0 || p[j] > p[best])) best = j;
                taken[best] = true;
                double[] y = swiglu(m.localExperts().get(best), xi);
                for (int c = 0; c < d; c++) out[i * d + c] += p[best] * y[c];
            }
            double gate = 1 / (1 + Math.exp(-matvec(m.sharedExpertGate().weight(), xi)[0]));
            double[] shared = swiglu(m.sharedExpert(), xi);
            for (int c = 0; c < d; c++) out[i * d + c] += gate * shared[c];
        }
        return out;
    }

    static double[] swiglu(Expert ex, double[] x) {
        double[] g = matvec(ex.gateProj().weight(), x);
        double[] u = matvec(ex.upProj().weight(), x);
        double[] h = new double[g.length];
        for (int i = 0; i < h.length; i++) h[i] = g[i] / (1 + Math.exp(-g[i])) * u[i];
        return matvec(ex.downProj().weight(), h);
    }

    static double[] matvec(Tensor w, double[] x) {
        int out = w.dim(0);
        int in = w.dim(1);
        double[] y = new double[out];
        for (int o = 0; o < out; o++) for (int i = 0; i < in; i++) y[o] += w.get((long) o * in + i) * x[i];
        return y;
    }

    @Test
    void gatedSharedExpertAndRawTopKMatchFloat64WithGradients() {
        MoEConfig c = MoEConfig.builder(6, 4, 4, 2).sharedExperts(1).sharedHidden(5).sharedExpertGate(true).normalizeTopK(false)
                .initStd(0.5).seed(3).build();
        MoEMLP m = MoEMLP.build(c);
        assertEquals(5, m.sharedExpert().upProj().outFeatures());
        m.sharedExpertGate().weight().copyFrom(Tensor.randn(new Rng(8), 0.7, 1, 6));
        Tensor x = Tensor.randn(new Rng(10), 1.0, 7, 6).requiresGrad(true);
        double[] want = moeRef(m, x.toDoubleArray(), 7, 6);
        double[] got = m.forward(x).toDoubleArray();
        for (int i = 0; i < want.length; i++) assertEquals(want[i], got[i], 1e-5, "element " + i);
        var r = GradCheck.check(in -> m.forward(in.get(0)), List.of(m.sharedExpertGate().weight(),
                m.sharedExpert().upProj().weight(), m.localExperts().get(1).downProj().weight()), 1e-2, 11);
        assertTrue(r.maxRelativeError() < 1e-2, java.util.Arrays.toString(r.relativeError()));
        assertThrows(IllegalArgumentException.class, () -> MoEConfig.builder(6, 4, 4, 2).sharedExpertGate(true).build(),
                "a gate needs a shared expert");
    }

    @Test
    void uninitializedModelHasZeroWeightsAndUnitNorms() {
        ModelConfig c = ModelConfig.builder().dim(16).nLayers(2).nHeads(2).nKvHeads(1).vocabSize(11).ffnHidden(8).numExperts(4).build();
        TransformerOptions o = new TransformerOptions(0, 1.0, true, QkNorm.PER_HEAD, 0, java.util.Set.of(1), 0, 0, false, true);
        MoETransformer m = MoETransformer.uninitialized(c, o);
        m.namedParameters().forEach((name, p) -> {
            float want = name.endsWith("norm.weight") ? 1f : 0f;
            for (long i = 0; i < p.numel(); i++) assertEquals(want, p.get(i), 0f, name);
        });
        assertNotNull(m.layers().get(0).moe());
        assertNull(m.layers().get(1).moe(), "layer 1 is dense by the options");
        // the initialised model of the same shape draws its weights
        assertNotEquals(0f, new MoETransformer(c, o).layers().get(0).moe().localExperts().get(0).upProj().weight().get(0));
    }
}
