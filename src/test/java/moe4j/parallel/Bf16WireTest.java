package moe4j.parallel;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import moe4j.autograd.Autograd;
import moe4j.autograd.GradCheck;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.Distributed;
import moe4j.distributed.MeshSizes;
import moe4j.nn.Dispatched;
import moe4j.nn.MoEConfig;
import moe4j.nn.MoEMLP;
import moe4j.nn.ModelConfig;
import moe4j.nn.TokenDispatcher;
import moe4j.nn.WireType;
import moe4j.tensor.DType;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Rows travelling in bf16 between expert-parallel ranks (in-JVM ranks on the CPU, whose process group
 * moves the bytes of any type): the EP layer with a bf16 wire equals the non-EP layer whose dispatched rows
 * and expert outputs, and the gradients of both, are rounded to bf16 (the rounding done here on the host,
 * by {@link Tensor#to(DType)}, not by the kernel the dispatcher uses), to 1e-5 norm-wise; it stays within
 * the spec's bf16 tolerance (2e-2) of the float32 layer; and it sends exactly half the bytes.
 */
class Bf16WireTest {
    static final double TIGHT = 1e-5;
    static final double BF16_TOLERANCE = 2e-2;

    @ParameterizedTest(name = "P={0} E={1} K={2} packed={3}")
    @CsvSource({"2, 8, 2, true", "2, 8, 2, false", "4, 8, 4, true", "3, 6, 1, false"})
    void epWithBf16WireEqualsTheNonEpLayerOnBf16RoundedRows(int p, int e, int k, boolean packed) {
        MoEConfig f32 = MoEConfig.builder(ExpertParallelOracleTest.D, ExpertParallelOracleTest.H, e, k).packed(packed)
                .initStd(0.5).seed(5).wire(WireType.F32).build();
        MoEConfig bf16 = f32.toBuilder().wire(WireType.BF16).build();
        int[] tokens = new int[p];
        for (int r = 0; r < p; r++) tokens[r] = 9 + 4 * r;
        ExpertParallelOracleTest.Inputs in = ExpertParallelOracleTest.Inputs.random(p, tokens, 300 + p);

        Run onF32Wire = runEp(f32, in);
        Run onBf16Wire = runEp(bf16, in);

        Map<String, double[]> roundedSum = new LinkedHashMap<>();
        Map<String, double[]> plainSum = new LinkedHashMap<>();
        for (ExpertParallelOracleTest.RankResult r : onBf16Wire.ranks()) {
            Tensor x = in.x().get(r.rank());
            Tensor g = in.gradOut().get(r.rank());
            ExpertParallelOracleTest.RankResult rounded = reference(bf16, x, g, true);
            ExpertParallelOracleTest.RankResult plain = reference(bf16, x, g, false);
            assertWithin("rank " + r.rank() + " output", r.out(), rounded.out(), TIGHT);
            assertWithin("rank " + r.rank() + " input gradient", r.gradX(), rounded.gradX(), TIGHT);
            assertWithin("rank " + r.rank() + " output against f32", r.out(), plain.out(), BF16_TOLERANCE);
            assertWithin("rank " + r.rank() + " input gradient against f32", r.gradX(), plain.gradX(), BF16_TOLERANCE);
            // the wire really rounds: the bf16 run is not the float32 one
            assertTrue(GradCheck.relativeError(r.out(), plain.out()) > 1e-4, "rank " + r.rank() + ": the bf16 wire changed nothing");
            for (String name : r.grads().keySet()) {
                if (!ExpertParallelOracleTest.isExpertParameter(name)) {
                    assertWithin("rank " + r.rank() + " " + name, r.grads().get(name), rounded.grads().get(name), TIGHT);
                }
            }
            rounded.grads().forEach((n, v) -> roundedSum.merge(n, v.clone(), ExpertParallelOracleTest::add));
            plain.grads().forEach((n, v) -> plainSum.merge(n, v.clone(), ExpertParallelOracleTest::add));
        }
        // expert gradients: each owner against the sum over ranks of the rounded reference (1e-5, inside
        // assertExpertGradients) and within the bf16 tolerance of the float32 one
        ExpertParallelOracleTest.assertExpertGradients(bf16, onBf16Wire.ranks(), roundedSum, "bf16 wire");
        for (ExpertParallelOracleTest.RankResult r : onBf16Wire.ranks()) {
            r.grads().forEach((name, grad) -> {
                if (name.endsWith("_w")) {
                    int per = plainSum.get(name).length / e;
                    double[] expected = ExpertParallelOracleTest.slice(plainSum.get(name), r.localExpertStart() * per, r.numLocalExperts() * per);
                    assertWithin("rank " + r.rank() + " " + name + " against f32", grad, expected, BF16_TOLERANCE);
                } else if (name.startsWith("experts.")) {
                    assertWithin("rank " + r.rank() + " " + name + " against f32", grad, plainSum.get(name), BF16_TOLERANCE);
                }
            });
        }

        // the float32 wire is the plain EP layer, and the bf16 wire sends half its bytes, forward and backward
        for (int r = 0; r < p; r++) {
            ExpertParallelOracleTest.RankResult plain = reference(f32, in.x().get(r), in.gradOut().get(r), false);
            assertWithin("f32 wire rank " + r + " output", onF32Wire.ranks().get(r).out(), plain.out(), TIGHT);
            long f32Bytes = onF32Wire.rowBytes()[r];
            assertTrue(f32Bytes > 0, "rank " + r + " sent no rows to its peers");
            assertEquals(f32Bytes / 2, onBf16Wire.rowBytes()[r], "rank " + r + ": bytes on a bf16 wire");
            assertEquals(0, f32Bytes % 2);
        }
    }

    @Test
    void wireFollowsTheProductsByDefaultAndIsAModelConfigKey() {
        assertEquals(WireType.AUTO, MoEConfig.builder(8, 6, 4, 2).build().wire());
        assertEquals(DType.BF16, WireType.AUTO.resolve(DType.BF16));
        assertEquals(DType.F32, WireType.AUTO.resolve(DType.F32));
        assertEquals(DType.BF16, WireType.BF16.resolve(DType.F32));
        assertEquals(DType.F32, WireType.F32.resolve(DType.BF16));
        ModelConfig model = ModelConfig.builder().set("moe_wire", "bf16").build();
        assertEquals(WireType.BF16, model.moeConfig(0).wire());
        assertEquals(WireType.AUTO, ModelConfig.defaults().moeConfig(0).wire());
        var bad = assertThrows(IllegalArgumentException.class, () -> ModelConfig.builder().set("moe_wire", "fp8"));
        assertTrue(bad.getMessage().contains("moe_wire") && bad.getMessage().contains("fp8") && bad.getMessage().contains("bf16"),
                bad.getMessage());
    }

    // ------------------------------------------------------------------ running

    record Run(List<ExpertParallelOracleTest.RankResult> ranks, long[] rowBytes) {}

    static Run runEp(MoEConfig config, ExpertParallelOracleTest.Inputs in) {
        int p = in.x().size();
        long[] bytes = new long[p];
        List<ExpertParallelOracleTest.RankResult> ranks = Distributed.run(p, Duration.ofSeconds(20), world -> {
            MoEMLP moe = MoEMLP.build(config);
            ExpertParallel.apply(moe, DeviceMesh.create(world, MeshSizes.defaults().ep(p)));
            TrafficCountingGroup traffic = ExpertParallel.countTraffic(moe);
            Tensor x = in.x().get(world.rank()).copy().requiresGrad(true);
            Tensor out = moe.forward(x);
            Autograd.backward(out, in.gradOut().get(world.rank()));
            bytes[world.rank()] = traffic.rowBytes();
            Map<String, double[]> grads = new LinkedHashMap<>();
            moe.namedParameters().forEach((n, t) -> grads.put(n, t.grad().toDoubleArray()));
            return new ExpertParallelOracleTest.RankResult(world.rank(), moe.localExpertStart(), moe.numLocalExperts(),
                    out.toDoubleArray(), x.grad().toDoubleArray(), grads);
        });
        return new Run(ranks, bytes);
    }

    /** The non-EP layer on {@code x}; with {@code rounded}, its rows and expert outputs pass through bf16 both ways. */
    static ExpertParallelOracleTest.RankResult reference(MoEConfig config, Tensor xValues, Tensor gradOut, boolean rounded) {
        MoEMLP moe = MoEMLP.build(config);
        if (rounded) moe.setDispatcher(roundingRows(moe.dispatcher()));
        Tensor x = xValues.copy().requiresGrad(true);
        Tensor out = moe.forward(x);
        Autograd.backward(out, gradOut);
        Map<String, double[]> grads = new LinkedHashMap<>();
        moe.namedParameters().forEach((n, t) -> grads.put(n, t.grad().toDoubleArray()));
        return new ExpertParallelOracleTest.RankResult(0, 0, config.numExperts(), out.toDoubleArray(), x.grad().toDoubleArray(), grads);
    }

    /** {@code inner} with the dispatched rows and the expert outputs rounded to bf16, forward and backward. */
    static <M> TokenDispatcher<M> roundingRows(TokenDispatcher<M> inner) {
        return new TokenDispatcher<>() {
            @Override
            public Dispatched<M> dispatch(Tensor x_TD, Tensor indices_TK) {
                Dispatched<M> d = inner.dispatch(x_TD, indices_TK);
                return new Dispatched<>(roundToBf16(d.rows_RD()), d.rowsPerLocalExpert(), d.groupEntries(), d.combineState());
            }

            @Override
            public Tensor combine(Tensor expertOut_RD, Dispatched<M> dispatched, Tensor weights_TK) {
                return inner.combine(roundToBf16(expertOut_RD), dispatched, weights_TK);
            }
        };
    }

    /** x rounded to bf16 and widened back, its gradient likewise. */
    static Tensor roundToBf16(Tensor x) {
        Tensor out = x.to(DType.BF16).to(DType.F32);
        return Autograd.record(out, "round to bf16", new Tensor[] {x}, g -> new Tensor[] {g.to(DType.BF16).to(DType.F32)});
    }

    static void assertWithin(String what, double[] actual, double[] expected, double tolerance) {
        assertEquals(expected.length, actual.length, what + ": length");
        double err = GradCheck.relativeError(actual, expected);
        assertTrue(err <= tolerance, what + ": relative error " + err + " > " + tolerance);
    }
}
