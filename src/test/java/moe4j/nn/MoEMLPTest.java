package moe4j.nn;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import moe4j.autograd.Autograd;
import moe4j.autograd.GradCheck;
import moe4j.kernels.cpu.GroupedGemm;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The single-rank MoE layer against the float64 reference: outputs at 1e-5 norm-wise, gradients of the
 * input and every parameter against float64 central differences at 1e-4.
 */
class MoEMLPTest {
    static final int D = 8;
    static final int H = 6;
    static final int E = 4;
    static final int T = 10;

    static Stream<Arguments> configurations() {
        List<Arguments> out = new ArrayList<>();
        for (boolean packed : new boolean[] {false, true}) {
            for (Activation act : Activation.values()) {
                for (int k : new int[] {1, 2, 4}) {
                    for (int variant = 0; variant < 4; variant++) {
                        // variants: plain; shared expert; capacity 0.5; gradient scaling + shared + capacity 1.0
                        out.add(Arguments.of(packed, act, k, variant == 1 || variant == 3,
                                variant == 2 ? 0.5 : variant == 3 ? 1.0 : 0.0, variant == 3));
                    }
                }
            }
        }
        return out.stream();
    }

    static MoEMLP layer(boolean packed, Activation act, int k, boolean shared, double cf, boolean gradScale, RouterKind router) {
        return MoEMLP.build(MoEConfig.builder(D, H, E, k).packed(packed).activation(act).sharedExperts(shared ? 1 : 0)
                .capacityFactor(cf).gradientScale(gradScale).router(router).initStd(0.5).seed(42).build());
    }

    @ParameterizedTest(name = "packed={0} act={1} K={2} shared={3} cf={4} gradScale={5}")
    @MethodSource("configurations")
    void matchesFloat64ReferenceWithGradients(boolean packed, Activation act, int k, boolean shared, double cf, boolean gradScale) {
        for (RouterKind router : RouterKind.values()) {
            MoEMLP moe = layer(packed, act, k, shared, cf, gradScale, router);
            checkAgainstReference(moe, Tensor.randn(new Rng(7), 1.0, T, D), gradScale);
        }
    }

    static void checkAgainstReference(MoEMLP moe, Tensor xValues, boolean gradScale) {
        Tensor x = xValues.copy().requiresGrad(true);
        Tensor out = moe.forward(x);
        RouterOutput routed = moe.router().lastOutput();
        Tensor kept = moe.config().capacityFactor() > 0 ? moe.dropOverflow(routed.indices()) : routed.indices();
        MoEReference ref = new MoEReference(moe, routed.indices(), kept, gradScale);
        double[] xd = x.toDoubleArray();
        double[] expected = ref.forward(xd);
        assertTrue(GradCheck.relativeError(out.toDoubleArray(), expected) <= 1e-5,
                "output error " + GradCheck.relativeError(out.toDoubleArray(), expected));

        Tensor r = Tensor.randn(new Rng(9), 1.0, out.shape());
        Autograd.backward(out, r);
        double[] rd = r.toDoubleArray();
        assertGradClose("input", x.grad().toDoubleArray(), ref.numericInputGrad(xd, rd));
        for (Map.Entry<String, Tensor> p : moe.namedParameters().entrySet()) {
            assertNotNull(p.getValue().grad(), "no gradient for " + p.getKey());
            assertGradClose(p.getKey(), p.getValue().grad().toDoubleArray(), ref.numericGrad(p.getKey(), xd, rd));
        }
    }

    static void assertGradClose(String what, double[] analytic, double[] numeric) {
        double norm = 0;
        for (double v : numeric) norm += v * v;
        if (Math.sqrt(norm) < 1e-9) {
            for (double v : analytic) assertTrue(Math.abs(v) < 1e-6, what + ": gradient should be zero, got " + v);
            return;
        }
        double err = GradCheck.relativeError(analytic, numeric);
        assertTrue(err <= 1e-4, what + ": gradient error " + err);
    }

    @Test
    void packedAndListLayersAgree() {
        for (Activation act : Activation.values()) {
            MoEMLP list = layer(false, act, 2, true, 0, false, RouterKind.SOFTMAX_TOPK);
            MoEMLP packed = list.toPacked();
            // up_w[e][i][o] is up_proj.weight[o][i]
            assertEquals(list.localExperts().get(3).upProj().weight().get(1, 2),
                    packed.upW().get(3L * D * H + 2L * H + 1), 0f, "up_w[e] is up_proj.weightᵀ");
            Tensor x = Tensor.randn(new Rng(3), 1, T, D);
            Tensor x1 = x.copy().requiresGrad(true);
            Tensor x2 = x.copy().requiresGrad(true);
            Tensor o1 = list.forward(x1);
            Tensor o2 = packed.forward(x2);
            assertTrue(GradCheck.relativeError(o2.toDoubleArray(), o1.toDoubleArray()) <= 1e-5);
            Tensor r = Tensor.randn(new Rng(4), 1, T, D);
            Autograd.backward(o1, r);
            Autograd.backward(o2, r);
            assertTrue(GradCheck.relativeError(x2.grad().toDoubleArray(), x1.grad().toDoubleArray()) <= 1e-5);
            assertTrue(GradCheck.relativeError(packed.router().gate().weight().grad().toDoubleArray(),
                    list.router().gate().weight().grad().toDoubleArray()) <= 1e-5);
        }
    }

    @Test
    void bothLayoutsInitialiseIdentically() {
        MoEMLP list = MoEMLP.build(MoEConfig.builder(D, H, E, 2).numLayers(4).seed(5).build());
        MoEMLP packed = MoEMLP.build(MoEConfig.builder(D, H, E, 2).numLayers(4).seed(5).packed(true).build());
        MoEMLP converted = list.toPacked();
        for (String name : new String[] {"up_w", "down_w", "gate_w"}) {
            assertArrayEquals(converted.namedParameters().get(name).toFloatArray(), packed.namedParameters().get(name).toFloatArray(), name);
        }
        // residual scaling: down has std / sqrt(2 · layers) in both layouts
        double upVar = variance(packed.upW().toFloatArray());
        double downVar = variance(packed.downW().toFloatArray());
        assertEquals(8.0, upVar / downVar, 1.5);
    }

    @Test
    void eachExpertIsDrawnFromItsOwnStreamInTheReferenceOrder() {
        // the reference: Expert.init on a fresh expert with expert g's stream (gate, up, down, each (out, in))
        MoEConfig config = MoEConfig.builder(D, H, E, 2).numLayers(3).seed(9).initStd(0.1).build();
        MoEMLP list = MoEMLP.build(config);
        MoEMLP packed = MoEMLP.build(config.toBuilder().packed(true).build());
        double std = config.initStd();
        double downStd = std / Math.sqrt(2.0 * config.numLayers());
        for (int g = 0; g < E; g++) {
            Expert reference = new Expert(D, H, config.activation()).init(Rng.forStream(config.seed(), g), std, downStd);
            Expert mine = list.localExperts().get(g);
            for (ExpertProjection projection : ExpertProjection.forActivation(config.activation())) {
                float[] want = projection.in(reference).weight().toFloatArray();
                assertArrayEquals(want, projection.in(mine).weight().toFloatArray(), "list expert " + g + " " + projection);
                Tensor slot = packed.namedParameters().get(projection.packedName());
                int out = projection.in(reference).weight().dim(0);
                int in = projection.in(reference).weight().dim(1);
                for (int o = 0; o < out; o++) {
                    for (int i = 0; i < in; i++) {
                        assertEquals(want[o * in + i], slot.get((long) g * in * out + (long) i * out + o),
                                "packed expert " + g + " " + projection + " [" + o + ", " + i + "]");
                    }
                }
            }
        }
    }

    @Test
    void aBlockOfExpertsIsWhatTheWholeLayerHoldsForIt() {
        for (boolean packedLayout : new boolean[] {false, true}) {
            MoEConfig config = MoEConfig.builder(D, H, E, 2).numLayers(2).seed(3).packed(packedLayout).sharedExperts(1).build();
            MoEMLP whole = MoEMLP.build(config);
            MoEMLP block = MoEMLP.buildExperts(config, 2, 2);
            assertEquals(2, block.localExpertStart());
            assertEquals(2, block.numLocalExperts());
            var wholeParams = whole.namedParameters();
            block.namedParameters().forEach((name, t) -> {
                Tensor full = wholeParams.get(name);
                assertNotNull(full, "the whole layer has no " + name);
                float[] expected = full.toFloatArray();
                if (name.endsWith("_w")) {
                    int per = expected.length / E;
                    expected = java.util.Arrays.copyOfRange(expected, 2 * per, 4 * per);
                }
                assertArrayEquals(expected, t.toFloatArray(), (packedLayout ? "packed " : "list ") + name);
            });
            if (!packedLayout) {
                assertEquals(List.of("experts.2.gate_proj.weight", "experts.2.up_proj.weight", "experts.2.down_proj.weight",
                                "experts.3.gate_proj.weight", "experts.3.up_proj.weight", "experts.3.down_proj.weight"),
                        block.namedParameters().keySet().stream().filter(n -> n.startsWith("experts.")).toList());
            }
        }
        var bad = assertThrows(IllegalArgumentException.class, () -> MoEMLP.buildExperts(MoEConfig.builder(D, H, E, 2).build(), 3, E));
        assertTrue(bad.getMessage().contains("[3, " + (3 + E) + ")"), bad.getMessage());
    }

    private static double variance(float[] v) {
        double s = 0;
        for (float f : v) s += (double) f * f;
        return s / v.length;
    }

    @Test
    void oneExpertTopOneIsADenseMlp() {
        MoEMLP moe = MoEMLP.build(MoEConfig.builder(D, H, 1, 1).initStd(0.5).seed(3).build());
        Expert dense = moe.localExperts().get(0);
        Tensor x = Tensor.randn(new Rng(1), 1, T, D);
        assertTrue(GradCheck.relativeError(moe.forward(x).toDoubleArray(), dense.forward(x).toDoubleArray()) <= 1e-6);
    }

    @Test
    void capacityKeepsAtMostCapacityPerSlotAndDropsCostNothing() {
        MoEMLP moe = MoEMLP.build(MoEConfig.builder(D, H, 4, 2).capacityFactor(1.0).seed(1).build());
        // a gate that sends every token to expert 0 first and expert 1 second
        Tensor gate = moe.router().gate().weight();
        gate.fill(0f);
        for (int c = 0; c < D; c++) {
            gate.set(c, 10f);
            gate.set(D + c, 5f);
        }
        Tensor x = Tensor.full(1f, 100, D);
        GroupedGemm.resetRowsProcessed();
        moe.forward(x);
        assertEquals(50, moe.capacity(100));
        Tensor kept = moe.dropOverflow(moe.router().lastOutput().indices());
        int[] idx = kept.toIntArray();
        int slot0 = 0;
        int slot1 = 0;
        for (int t = 0; t < 100; t++) {
            if (idx[2 * t] == 0) slot0++;
            if (idx[2 * t + 1] == 1) slot1++;
        }
        assertEquals(50, slot0);
        assertEquals(50, slot1);
        // SwiGLU: gate, up, down products each see exactly the 100 kept rows, not 200
        assertEquals(3 * 100, GroupedGemm.rowsProcessed());
        assertEquals(100, moe.router().lastOutput().expertCounts()[0], "router statistics count dropped entries");
    }

    @Test
    void unusedExpertsGetExactlyZeroGradients() {
        for (boolean packed : new boolean[] {false, true}) {
            MoEMLP moe = MoEMLP.build(MoEConfig.builder(D, H, 4, 1).packed(packed).seed(1).build());
            Tensor gate = moe.router().gate().weight();
            gate.fill(0f);
            for (int c = 0; c < D; c++) gate.set(2L * D + c, 10f);
            Tensor x = Tensor.full(1f, 5, D).requiresGrad(true);
            Autograd.backward(moe.forward(x), Tensor.full(1f, 5, D));
            for (var p : moe.namedParameters().entrySet()) {
                assertNotNull(p.getValue().grad(), p.getKey());
            }
            if (packed) {
                float[] g = moe.upW().grad().toFloatArray();
                for (int e = 0; e < 4; e++) {
                    double norm = 0;
                    for (int i = e * D * H; i < (e + 1) * D * H; i++) norm += Math.abs(g[i]);
                    if (e == 2) assertTrue(norm > 0);
                    else assertEquals(0.0, norm, 0.0, "expert " + e);
                }
            } else {
                assertArrayEquals(new float[D * H], moe.localExperts().get(0).upProj().weight().grad().toFloatArray());
                assertTrue(Math.abs(moe.localExperts().get(2).upProj().weight().grad().get(0)) > 0);
            }
        }
    }

    @Test
    void gradientScalingOnlyInTraining() {
        MoEMLP scaled = layer(true, Activation.SILU, 2, false, 0, true, RouterKind.SOFTMAX_TOPK);
        MoEMLP plain = layer(true, Activation.SILU, 2, false, 0, false, RouterKind.SOFTMAX_TOPK);
        Tensor x = Tensor.randn(new Rng(2), 1, T, D);
        scaled.train(false);
        plain.train(false);
        assertArrayEquals(plain.forward(x).toFloatArray(), scaled.forward(x).toFloatArray());
        scaled.train(true);
        assertFalse(java.util.Arrays.equals(plain.forward(x).toFloatArray(), scaled.forward(x).toFloatArray()));
    }

    @Test
    void badInputIsAClearError() {
        MoEMLP moe = layer(false, Activation.SILU, 2, false, 0, false, RouterKind.SOFTMAX_TOPK);
        var e1 = assertThrows(IllegalArgumentException.class, () -> moe.forward(Tensor.zeros(3, D + 1)));
        assertTrue(e1.getMessage().contains("(..., 8)") && e1.getMessage().contains("[3, 9]"), e1.getMessage());
        var e2 = assertThrows(IllegalArgumentException.class, () -> MoEConfig.builder(D, H, 4, 5).build());
        assertEquals("moe_top_k (5) must be <= num_experts (4)", e2.getMessage());
        var e3 = assertThrows(IllegalArgumentException.class, () -> MoEConfig.builder(D, H, 4, 2).capacityFactor(-1).build());
        assertTrue(e3.getMessage().contains("-1"), e3.getMessage());
        var e4 = assertThrows(IllegalArgumentException.class, () -> MoEConfig.builder(D, H, 4, 2).activation("tanh"));
        assertTrue(e4.getMessage().contains("[silu, gelu, relu]"), e4.getMessage());
        MoEMLP checked = MoEMLP.build(MoEConfig.builder(D, H, 4, 2).checkFinite(true).build());
        Tensor x = Tensor.zeros(4, D);
        x.set(2, 5, Float.NaN);
        var e5 = assertThrows(IllegalArgumentException.class, () -> checked.forward(x));
        assertTrue(e5.getMessage().contains("row 2"), e5.getMessage());
    }
}
