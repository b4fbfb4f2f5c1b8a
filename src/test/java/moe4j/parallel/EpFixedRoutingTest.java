package moe4j.parallel;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import moe4j.nn.MoEConfig;
import moe4j.tensor.Device;
import org.junit.jupiter.api.Test;

/**
 * The routing the GPU check fixes beforehand: the CPU router's own choice on each rank's tokens, so that
 * expert parallelism with it fixed passes both oracles on the CPU as the router-driven run does, and the
 * router's gradient leaves the comparison.
 */
class EpFixedRoutingTest {
    @Test
    void routingFixedByTheCpuRouterPassesBothOracles() {
        MoEConfig config = MoEConfig.builder(16, 24, 8, 2).packed(true).initStd(0.5).seed(3).build();
        EpVerifier.Problem problem = EpVerifier.Problem.seeded(config, 2, new int[] {12, 0}, 5);
        EpVerifier.Problem routed = problem.routedOnCpu();
        assertTrue(routed.fixedRouting());
        assertFalse(problem.fixedRouting());
        // the router's choice itself: the same experts a router-driven forward picks
        moe4j.nn.RouterOutput direct = problem.newLayer().router().route(problem.x().get(0));
        assertArrayEquals(direct.indices().toIntArray(), routed.routingIndices().get(0).toIntArray());
        assertEquals(0, routed.routingIndices().get(1).dim(0));
        EpVerifier.Report report = EpVerifier.verify(routed);
        assertTrue(report.pass(), () -> report.oracles().toString());
        for (EpVerifier.RankRun r : report.ranks()) {
            assertTrue(r.grads().keySet().stream().noneMatch(n -> n.startsWith("router.")), "fixed routing leaves the router out");
        }
        // moving a rank's share to the cpu changes nothing
        assertTrue(routed.on(0, Device.CPU).x().get(0) == routed.x().get(0));
    }
}
