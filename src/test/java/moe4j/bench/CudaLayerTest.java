package moe4j.bench;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import moe4j.kernels.cuda.CudaDriver;
import moe4j.kernels.cuda.CudaMoELayer;
import moe4j.nn.MoEConfig;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The MoE layer on the GPU against the CPU layer (the project's oracle): output, aux and z losses,
 * input gradient and every parameter gradient, f32 at 1e-5 norm-wise and bf16 at 2e-2 against the
 * f32 result on the same bf16-rounded values. Covers both routers (sigmoid with a selection bias),
 * all three activations, K = 1, 2, 4 and gradient scaling. Skipped where no GPU is visible.
 */
@Tag("gpu")
class CudaLayerTest {
    @BeforeAll
    static void needsGpu() {
        assumeTrue(CudaDriver.available(), "no CUDA GPU here");
    }

    static Stream<Arguments> configurations() {
        List<Arguments> out = new ArrayList<>();
        for (String router : new String[] {"softmax_topk", "sigmoid_topk"}) {
            for (String act : new String[] {"silu", "gelu", "relu"}) {
                for (int k : new int[] {1, 2, 4}) {
                    out.add(Arguments.of(router, act, k, k == 2, CudaMoELayer.RowLayout.values()[(k + act.charAt(0)) % 4]));
                }
            }
        }
        return out.stream();
    }

    static MoEConfig config(String router, String act, int k, boolean gradScale, int d, int h, int e) {
        return MoEConfig.builder(d, h, e, k).router(router).activation(act).gradientScale(gradScale)
                .sequenceAuxLossWeight(router.equals("sigmoid_topk") ? 0.01 : 0).initStd(0.3).seed(5).packed(true).build();
    }

    @ParameterizedTest(name = "{0} {1} K={2} gradScale={3} {4}")
    @MethodSource("configurations")
    void f32MatchesCpu(String router, String act, int k, boolean gradScale, CudaMoELayer.RowLayout layout) {
        CudaLayerComparison.Result r = CudaLayerComparison.compare(config(router, act, k, gradScale, 48, 40, 8), 200, 3,
                CudaMoELayer.Precision.F32, 0.01, 0.001, 0, layout);
        assertTrue(r.sameRouting(), "f32 routing differs from the CPU");
        assertTrue(r.max() <= 1e-5, "f32 errors " + r.errors());
    }

    @ParameterizedTest(name = "{0} {1} K={2} gradScale={3} {4}")
    @MethodSource("configurations")
    void bf16WithinTolerance(String router, String act, int k, boolean gradScale, CudaMoELayer.RowLayout layout) {
        CudaLayerComparison.Result r = CudaLayerComparison.compare(config(router, act, k, gradScale, 64, 96, 8), 256, 4,
                CudaMoELayer.Precision.BF16, 0.01, 0.001, 0, layout);
        assertTrue(r.max() <= 2e-2, "bf16 errors " + r.errors() + (r.sameRouting() ? "" : " (routing differs)"));
    }

    /** Many experts, odd sizes (rows not multiples of 16 bytes), some experts empty: the permutation and the ragged products. */
    @ParameterizedTest(name = "E={0} K={1} T={2}")
    @MethodSource("raggedShapes")
    void raggedShapesMatchCpu(int e, int k, int t) {
        for (CudaMoELayer.RowLayout layout : CudaMoELayer.RowLayout.values()) {
            CudaLayerComparison.Result r = CudaLayerComparison.compare(config("softmax_topk", "silu", k, true, 37, 29, e), t, 8,
                    CudaMoELayer.Precision.F32, 0.01, 0.001, 0, layout);
            assertTrue(r.max() <= 1e-5, layout + " f32 errors " + r.errors());
        }
    }

    static Stream<Arguments> raggedShapes() {
        return Stream.of(Arguments.of(64, 8, 300), Arguments.of(128, 8, 97), Arguments.of(16, 3, 5), Arguments.of(8, 2, 1));
    }
}
