package moe4j.nn;

import static org.junit.jupiter.api.Assertions.*;

import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

class RouterTest {
    static final int D = 6;
    static final int E = 8;

    @Test
    void weightsIndicesAndCountsAreConsistent() {
        for (Router router : new Router[] {new SoftmaxTopKRouter(D, E, 3).init(new Rng(1), 1),
                new SigmoidTopKRouter(D, E, 3, 0.001, 0.99, BiasSchedule.CONSTANT, 0.1).init(new Rng(1), 1)}) {
            int t = 50;
            RouterOutput out = router.route(Tensor.randn(new Rng(2), 1, t, D));
            int[] idx = out.indices().toIntArray();
            int total = 0;
            for (int i = 0; i < t; i++) {
                double sum = 0;
                for (int s = 0; s < 3; s++) {
                    sum += out.weights().get(i, s);
                    int e = idx[i * 3 + s];
                    assertTrue(e >= 0 && e < E);
                    for (int s2 = 0; s2 < s; s2++) assertNotEquals(idx[i * 3 + s2], e, "distinct experts per token");
                }
                assertEquals(1.0, sum, 1e-6);
            }
            for (int c : out.expertCounts()) total += c;
            assertEquals(t * 3, total);
        }
    }

    @Test
    void uniformGateGivesAuxLossOneAndZLossIsMeanSquaredLogSumExp() {
        Router router = new SoftmaxTopKRouter(D, E, 2); // zero gate: uniform probabilities
        RouterOutput out = router.route(Tensor.randn(new Rng(3), 1, 40, D));
        assertEquals(1.0, out.auxLoss().item(), 1e-6);
        assertEquals(Math.log(E) * Math.log(E), out.zLoss().item(), 1e-5);

        Router random = new SoftmaxTopKRouter(D, E, 2).init(new Rng(4), 1);
        Tensor x = Tensor.randn(new Rng(5), 1, 30, D);
        RouterOutput r = random.route(x);
        double expected = 0;
        for (int t = 0; t < 30; t++) {
            double[] logits = new double[E];
            double max = Double.NEGATIVE_INFINITY;
            for (int e = 0; e < E; e++) {
                for (int c = 0; c < D; c++) logits[e] += (double) x.get(t, c) * random.gate().weight().get(e, c);
                max = Math.max(max, logits[e]);
            }
            double z = 0;
            for (double l : logits) z += Math.exp(l - max);
            double lse = max + Math.log(z);
            expected += lse * lse / 30;
        }
        assertEquals(expected, r.zLoss().item(), 1e-5 * expected);
    }

    @Test
    void topOneWeightIsAlwaysOne() {
        RouterOutput out = new SoftmaxTopKRouter(D, E, 1).init(new Rng(6), 1).route(Tensor.randn(new Rng(7), 1, 20, D));
        for (int t = 0; t < 20; t++) assertEquals(1f, out.weights().get(t, 0));
    }

    @Test
    void sigmoidBiasMovesTowardsBalanceUnderSkewedRouting() {
        SigmoidTopKRouter router = new SigmoidTopKRouter(D, E, 2, 0.01, 0.9, BiasSchedule.CONSTANT, 0);
        router.init(new Rng(8), 1);
        // skew: expert 0 strongly preferred by every token
        for (int c = 0; c < D; c++) router.gate().weight().set(0, c, 3f);
        Tensor x = Tensor.rand(new Rng(9), 0.5, 1.0, 64, D);
        int first = router.route(x).expertCounts()[0];
        for (int step = 0; step < 300; step++) {
            router.route(x);
            router.updateBias(router.pendingCounts(), step, 300);
        }
        int last = router.route(x).expertCounts()[0];
        assertTrue(router.bias().get(0) < 0, "overloaded expert's bias must fall");
        assertTrue(last < first, "expert 0 load " + first + " -> " + last);
    }

    @Test
    void biasUpdateFollowsTheFormulaForEachSchedule() {
        for (BiasSchedule schedule : BiasSchedule.values()) {
            SigmoidTopKRouter router = new SigmoidTopKRouter(D, 4, 1, 0.05, 0.8, schedule, 0);
            long[] counts = {6, 2, 0, 2};
            long step = 30;
            long max = 100;
            double rate = switch (schedule) {
                case CONSTANT -> 0.05;
                case COSINE_DECAY -> 0.05 * 0.5 * (1 + Math.cos(Math.PI * 0.3));
                case LINEAR_WARMUP -> 0.05 * Math.min(1, 10 * 0.3);
            };
            router.updateBias(counts, step, max);
            for (int e = 0; e < 4; e++) {
                double ema = 0.25 + 0.2 * (counts[e] / 10.0 - 0.25);
                assertEquals(ema, router.ema().get(e), 1e-6);
                assertEquals(rate * (0.25 - ema), router.bias().get(e), 1e-7, schedule + " expert " + e);
            }
        }
    }

    @Test
    void underflowingSigmoidScoresGiveZeroWeightsNotNaN() {
        SigmoidTopKRouter router = new SigmoidTopKRouter(D, E, 2, 0.001, 0.99, BiasSchedule.CONSTANT, 0);
        router.gate().weight().fill(-50f); // logits of -300 per unit input: sigmoid underflows to 0
        RouterOutput out = router.route(Tensor.full(1f, 3, D));
        for (float w : out.weights().toFloatArray()) assertEquals(0f, w, "weight must be 0, not NaN");
    }
}
