package moe4j.nn;

import static org.junit.jupiter.api.Assertions.*;

import moe4j.autograd.Autograd;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

/**
 * The dispatcher interface on its own, against float64 loops written from its contract: dispatch groups
 * the kept (token, slot) entries by expert in token order, combine weights and sums them back by token.
 * Dropped entries (−1) must be neither grouped nor combined.
 */
class TokenDispatcherTest {
    static final int T = 13;
    static final int D = 5;
    static final int K = 3;
    static final int E = 6;

    /** Random expert ids in [0, E) with distinct ids per token, and every fourth entry dropped (−1). */
    static int[] randomIndices(long seed, int tokens, int k, int experts, boolean withDrops) {
        Rng rng = new Rng(seed);
        int[] ids = new int[tokens * k];
        for (int t = 0; t < tokens; t++) {
            for (int s = 0; s < k; s++) {
                int e;
                boolean taken;
                do {
                    e = rng.nextInt(experts);
                    taken = false;
                    for (int q = 0; q < s; q++) taken |= ids[t * k + q] == e;
                } while (taken);
                ids[t * k + s] = e;
            }
        }
        if (withDrops) {
            for (int i = 3; i < ids.length; i += 4) ids[i] = -1;
        }
        return ids;
    }

    static Tensor randomWeights(long seed, int tokens, int k) {
        Rng rng = new Rng(seed);
        float[] w = new float[tokens * k];
        for (int i = 0; i < w.length; i++) w[i] = (float) (0.1 + rng.nextDouble());
        return Tensor.of(w, tokens, k);
    }

    /** {@code Σ_k w[t,k] · x[t]} over the kept entries, in float64. */
    static double[] weightedSumReference(double[] x, double[] w, int[] ids, int tokens, int d, int k) {
        double[] out = new double[tokens * d];
        for (int t = 0; t < tokens; t++) {
            for (int s = 0; s < k; s++) {
                if (ids[t * k + s] < 0) continue;
                for (int c = 0; c < d; c++) out[t * d + c] += w[t * k + s] * x[t * d + c];
            }
        }
        return out;
    }

    static double relativeError(double[] a, double[] b) {
        double num = 0;
        double den = 0;
        for (int i = 0; i < a.length; i++) {
            num += (a[i] - b[i]) * (a[i] - b[i]);
            den += b[i] * b[i];
        }
        return den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
    }

    @Test
    void dispatchThenCombineOfIdentityExpertsIsTheWeightedSumOfTheToken() {
        for (boolean drops : new boolean[] {false, true}) {
            int[] ids = randomIndices(11, T, K, E, drops);
            Tensor x = Tensor.randn(new Rng(3), 1.0, T, D).requiresGrad(true);
            Tensor w = randomWeights(5, T, K).requiresGrad(true);
            LocalDispatcher dispatcher = new LocalDispatcher(E);

            Dispatched<Routing> dispatched = dispatcher.dispatch(x, Tensor.ofInts(ids, T, K));
            Tensor out = dispatcher.combine(dispatched.rows_RD(), dispatched, w);

            double[] expected = weightedSumReference(x.toDoubleArray(), w.toDoubleArray(), ids, T, D, K);
            assertArrayEquals(new int[] {T, D}, out.shape());
            assertTrue(relativeError(out.toDoubleArray(), expected) <= 1e-6, "drops=" + drops);

            // gradients of Σ out · g: dx[t] = Σ_kept w[t,k] · g[t], dw[t,k] = <g[t], x[t]> for kept entries, else 0
            Tensor g = Tensor.randn(new Rng(9), 1.0, T, D);
            Autograd.backward(out, g);
            double[] gd = g.toDoubleArray();
            double[] xd = x.toDoubleArray();
            double[] wd = w.toDoubleArray();
            double[] dx = new double[T * D];
            double[] dw = new double[T * K];
            for (int t = 0; t < T; t++) {
                for (int s = 0; s < K; s++) {
                    if (ids[t * K + s] < 0) continue;
                    for (int c = 0; c < D; c++) {
                        dx[t * D + c] += wd[t * K + s] * gd[t * D + c];
                        dw[t * K + s] += gd[t * D + c] * xd[t * D + c];
                    }
                }
            }
            assertTrue(relativeError(x.grad().toDoubleArray(), dx) <= 1e-6, "dx, drops=" + drops);
            assertTrue(relativeError(w.grad().toDoubleArray(), dw) <= 1e-6, "dw, drops=" + drops);
            if (drops) assertEquals(0.0, w.grad().get(3), 0.0, "a dropped entry's weight gets no gradient");
        }
    }

    @Test
    void rowsAreGroupedByExpertInTokenOrderAndCountedLikeAHistogram() {
        int[] ids = randomIndices(21, T, K, E, true);
        Tensor x = Tensor.randn(new Rng(4), 1.0, T, D);
        Dispatched<Routing> dispatched = new LocalDispatcher(E).dispatch(x, Tensor.ofInts(ids, T, K));

        int[] histogram = new int[E];
        long kept = 0;
        for (int id : ids) {
            if (id >= 0) {
                histogram[id]++;
                kept++;
            }
        }
        assertArrayEquals(histogram, dispatched.rowsPerLocalExpert());
        assertEquals(kept, dispatched.groupEntries(), "every entry of the group is this rank's");
        assertEquals(kept, dispatched.rows_RD().dim(0), "dropped entries are not dispatched");

        // the expected grouped layout: for each expert, the tokens routed to it in token order
        double[] xd = x.toDoubleArray();
        double[] rows = dispatched.rows_RD().toDoubleArray();
        int r = 0;
        for (int e = 0; e < E; e++) {
            for (int t = 0; t < T; t++) {
                for (int s = 0; s < K; s++) {
                    if (ids[t * K + s] != e) continue;
                    for (int c = 0; c < D; c++) assertEquals(xd[t * D + c], rows[r * D + c], 0.0, "row " + r + " (expert " + e + ", token " + t + ")");
                    r++;
                }
            }
        }
        assertEquals(kept, r);
    }

    @Test
    void everyEntryDroppedGivesNoRowsAndAZeroOutput() {
        int[] ids = new int[T * K];
        java.util.Arrays.fill(ids, -1);
        LocalDispatcher dispatcher = new LocalDispatcher(E);
        Dispatched<Routing> dispatched = dispatcher.dispatch(Tensor.randn(new Rng(1), 1.0, T, D), Tensor.ofInts(ids, T, K));
        assertEquals(0, dispatched.rows_RD().dim(0));
        assertArrayEquals(new int[E], dispatched.rowsPerLocalExpert());
        Tensor out = dispatcher.combine(dispatched.rows_RD(), dispatched, randomWeights(2, T, K));
        assertArrayEquals(new double[T * D], out.toDoubleArray());
    }

    @Test
    void badInputsAreNamed() {
        LocalDispatcher dispatcher = new LocalDispatcher(E);
        Tensor x = Tensor.zeros(T, D);
        var wrongTokens = assertThrows(IllegalArgumentException.class, () -> dispatcher.dispatch(x, Tensor.ofInts(new int[(T - 1) * K], T - 1, K)));
        assertTrue(wrongTokens.getMessage().contains("same T"), wrongTokens.getMessage());
        int[] outOfRange = new int[T * K];
        outOfRange[4] = E;
        var badId = assertThrows(IllegalArgumentException.class, () -> dispatcher.dispatch(x, Tensor.ofInts(outOfRange, T, K)));
        assertTrue(badId.getMessage().contains("expert id " + E), badId.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new LocalDispatcher(0));
    }

    /** The layer on a routing equals the float64 layer whether it runs through dispatch/compute/combine or the reference. */
    @Test
    void theLayerComputesExactlyTheDispatchedRows() {
        MoEMLP moe = MoEMLP.build(MoEConfig.builder(D, 7, E, K).initStd(0.5).seed(8).build());
        int[] ids = randomIndices(31, T, K, E, false);
        Tensor x = Tensor.randn(new Rng(6), 1.0, T, D);
        Tensor w = randomWeights(7, T, K);
        LocalDispatcher dispatcher = new LocalDispatcher(E);
        Dispatched<Routing> dispatched = dispatcher.dispatch(x, Tensor.ofInts(ids, T, K));
        Tensor viaHalves = dispatcher.combine(moe.computeExperts(dispatched, false), dispatched, w);
        Tensor viaLayer = moe.forwardWithRouting(x, w, Tensor.ofInts(ids, T, K));
        assertArrayEquals(viaLayer.toDoubleArray(), viaHalves.toDoubleArray(), 0.0, "the layer's forward is dispatch → computeExperts → combine");
        var wrongGroups = assertThrows(IllegalArgumentException.class,
                () -> moe.computeExperts(new Dispatched<>(Tensor.zeros(0, D), new int[E - 1], 0, null), false));
        assertTrue(wrongGroups.getMessage().contains("local experts"), wrongGroups.getMessage());
    }
}
