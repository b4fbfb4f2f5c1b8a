package moe4j.parallel;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import moe4j.nn.MoEConfig;
import moe4j.parallel.EpVerifier.Category;
import moe4j.parallel.EpVerifier.OracleResult;
import moe4j.parallel.EpVerifier.RankRun;
import moe4j.parallel.EpVerifier.Values;
import org.junit.jupiter.api.Test;

class EpVerifierTest {

    @Test
    void relativeErrorDemandsExactZeroForAZeroReferenceAndNaNIsWorst() {
        assertEquals(0.0, EpVerifier.relativeError(new double[] {0, 0}, new double[] {0, 0}));
        assertEquals(Double.POSITIVE_INFINITY, EpVerifier.relativeError(new double[] {1e-30, 0}, new double[] {0, 0}));
        assertEquals(0.4, EpVerifier.relativeError(new double[] {3, 2}, new double[] {3, 4}), 1e-15); // ‖(0, −2)‖ / ‖(3, 4)‖ = 2/5
        assertTrue(Double.isNaN(EpVerifier.relativeError(new double[] {Double.NaN}, new double[] {1})));
        assertTrue(Double.isNaN(EpVerifier.worse(1e-9, Double.NaN)));
        assertEquals(2.0, EpVerifier.worse(2.0, 1.0));
        assertFalse(EpVerifier.withinTolerance(Double.NaN));
        assertTrue(EpVerifier.withinTolerance(1e-5));
        assertFalse(EpVerifier.withinTolerance(1.01e-5));
    }

    static EpVerifier.Problem problem(boolean packed) {
        MoEConfig config = MoEConfig.builder(8, 6, 4, 2).packed(packed).sharedExperts(1).initStd(0.5).seed(5).build();
        return EpVerifier.Problem.seeded(config, 2, new int[] {4, 5}, 9);
    }

    @Test
    void theOraclesPassOnTheRealRunAndCatchOneWrongGradientElement() {
        for (boolean packed : new boolean[] {false, true}) {
            EpVerifier.Problem p = problem(packed);
            List<RankRun> ranks = EpVerifier.runExpertParallel(p);
            for (OracleResult o : List.of(EpVerifier.perRankOracle(p, ranks), EpVerifier.globalOracle(p, ranks))) {
                assertTrue(o.pass(), o.toString());
                assertEquals(Category.values().length, o.errors().size(), "all five categories apply: " + o.errors());
            }
            // one element of one expert gradient on rank 1, off by 1%
            List<RankRun> tampered = new ArrayList<>(ranks);
            RankRun r1 = ranks.get(1);
            Map<String, Values> grads = new LinkedHashMap<>(r1.grads());
            String expertParam = grads.keySet().stream().filter(n -> Category.ofParameter(n) == Category.EXPERT_GRADIENTS)
                    .findFirst().orElseThrow();
            Values v = grads.get(expertParam);
            double[] wrong = v.data().clone();
            int at = 0;
            while (wrong[at] == 0) at++;
            wrong[at] *= 1.5;
            grads.put(expertParam, new Values(v.shape(), wrong));
            tampered.set(1, new RankRun(1, r1.localExpertStart(), r1.numLocalExperts(), r1.out(), r1.gradX(), grads,
                    r1.forwardRowBytes(), r1.backwardRowBytes(), r1.countBytes()));
            for (OracleResult o : List.of(EpVerifier.perRankOracle(p, tampered), EpVerifier.globalOracle(p, tampered))) {
                assertFalse(o.pass(), o.name() + " must catch " + expertParam + ": " + o.errors());
                assertFalse(EpVerifier.withinTolerance(o.errors().get(Category.EXPERT_GRADIENTS)));
                assertTrue(EpVerifier.withinTolerance(o.errors().get(Category.OUTPUT)));
            }
            // a rank that lost an expert's gradient altogether
            Map<String, Values> missing = new LinkedHashMap<>(r1.grads());
            missing.remove(expertParam);
            tampered.set(1, new RankRun(1, r1.localExpertStart(), r1.numLocalExperts(), r1.out(), r1.gradX(), missing,
                    r1.forwardRowBytes(), r1.backwardRowBytes(), r1.countBytes()));
            assertFalse(EpVerifier.perRankOracle(p, tampered).pass(), "a missing expert gradient fails");
        }
    }

    @Test
    void problemsThatDoNotAddUpAreRejected() {
        MoEConfig config = MoEConfig.builder(8, 6, 4, 2).build();
        var e = assertThrows(IllegalArgumentException.class, () -> EpVerifier.Problem.seeded(config, 3, new int[] {1, 1, 1}, 0));
        assertEquals("num_experts (4) must be divisible by ep (3)", e.getMessage());
    }
}
