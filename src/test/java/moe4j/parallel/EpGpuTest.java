package moe4j.parallel;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import moe4j.kernels.cuda.CudaDriver;
import moe4j.nn.MoEConfig;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Expert parallelism on two GPUs of this machine over NCCL against both oracles computed on the CPU (the
 * non-EP layer on each rank's tokens, and one rank on all tokens), float32 to 1e-5: uneven token counts,
 * a rank with no tokens, list and packed experts, three activations, gradient scaling.
 */
@Tag("gpu")
class EpGpuTest {
    @BeforeAll
    static void needsTwoGpus() {
        assumeTrue(CudaDriver.available(), "no CUDA GPU here");
        assumeTrue(CudaDriver.get().deviceCount() >= 2, "fewer than two GPUs here");
    }

    @ParameterizedTest(name = "E={0} K={1} tokens={2},{3} packed={4} {5} scale={6}")
    @CsvSource({
            "8, 2, 16, 17, false, silu, false",
            "8, 2, 16, 17, true, silu, false",
            "4, 1, 9, 0, true, gelu, false",
            "8, 4, 33, 5, false, relu, false",
            "16, 2, 64, 40, true, silu, true",
    })
    void passesBothOracles(int experts, int k, int t0, int t1, boolean packed, String activation, boolean scale) {
        MoEConfig config = MoEConfig.builder(16, 24, experts, k).packed(packed).activation(activation).gradientScale(scale)
                .initStd(0.5).seed(7).build();
        EpVerifier.Problem problem = EpVerifier.Problem.seeded(config, 2, new int[] {t0, t1}, 11);
        EpVerifier.Report report = EpVerifier.verifyOnGpus(problem);
        for (EpVerifier.OracleResult o : report.oracles()) {
            if (!o.checked()) continue;
            o.errors().forEach((category, error) ->
                    assertTrue(EpVerifier.withinTolerance(error), o.name() + " " + category.label + ": " + error));
        }
        assertTrue(report.pass());
        assertEquals(2, report.ranks().size());
    }
}
