package moe4j.parallel;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import moe4j.autograd.Autograd;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.Distributed;
import moe4j.distributed.MeshSizes;
import moe4j.nn.Dispatched;
import moe4j.nn.LocalDispatcher;
import moe4j.nn.MoEConfig;
import moe4j.nn.MoEMLP;
import moe4j.nn.Routing;
import moe4j.nn.WireType;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

/**
 * The all-to-all dispatcher against the local one: on every rank, what dispatch hands the experts must be
 * exactly the local dispatcher's rows for the experts this rank owns, gathered from every source rank in
 * rank order; combine must undo it. And {@link ExpertParallel#dispatchAndCompute}, the composition, must
 * equal the non-EP layer on each rank's own tokens.
 */
class AllToAllDispatcherTest {
    static final int P = 4;
    static final int E = 8;
    static final int K = 2;
    static final int D = 6;
    /** Rank 2 has no tokens: it still takes part in every exchange. */
    static final int[] TOKENS = {9, 5, 0, 12};

    static int[] indices(int rank) {
        int t = TOKENS[rank];
        Rng rng = Rng.forStream(40, rank);
        int[] ids = new int[t * K];
        for (int i = 0; i < t; i++) {
            ids[i * K] = rng.nextInt(E);
            ids[i * K + 1] = (ids[i * K] + 1 + rng.nextInt(E - 1)) % E;
        }
        for (int i = 2; i < ids.length; i += 5) ids[i] = -1; // dropped by capacity: never sent
        return ids;
    }

    static Tensor x(int rank) {
        return Tensor.randn(Rng.forStream(41, rank), 1.0, TOKENS[rank], D);
    }

    static Tensor weights(int rank) {
        return Tensor.randn(Rng.forStream(42, rank), 1.0, TOKENS[rank], K);
    }

    record RankDispatch(double[] rows, int[] rowsPerLocalExpert, long groupEntries, double[] combined) {}

    @Test
    void dispatchGivesEachRankTheLocalDispatchersRowsOfItsExperts() {
        int local = E / P;
        List<RankDispatch> got = Distributed.run(P, Duration.ofSeconds(20), world -> {
            DeviceMesh ep = DeviceMesh.create(world, MeshSizes.defaults().ep(P)).get("ep");
            int r = ep.localRank();
            var dispatcher = new ExpertParallel.AllToAllDispatcher(ep.group(), E, r * local, local, P, 0, WireType.F32, false);
            Tensor xr = x(r);
            var dispatched = dispatcher.dispatch(xr, Tensor.ofInts(indices(r), TOKENS[r], K));
            // identity experts: combine must give Σ_k w·x for this rank's own tokens
            Tensor out = dispatcher.combine(dispatched.rows_RD(), dispatched, weights(r));
            return new RankDispatch(dispatched.rows_RD().toDoubleArray(), dispatched.rowsPerLocalExpert(), dispatched.groupEntries(),
                    out.toDoubleArray());
        });

        // the reference: each source rank's local dispatch over all E experts
        List<double[]> sourceRows = new ArrayList<>();
        List<int[]> sourceCounts = new ArrayList<>();
        long allKept = 0;
        for (int src = 0; src < P; src++) {
            Dispatched<Routing> d = new LocalDispatcher(E).dispatch(x(src), Tensor.ofInts(indices(src), TOKENS[src], K));
            sourceRows.add(d.rows_RD().toDoubleArray());
            sourceCounts.add(d.rowsPerLocalExpert());
            allKept += d.groupEntries();
        }
        for (int r = 0; r < P; r++) {
            List<Double> expected = new ArrayList<>();
            int[] expectedCounts = new int[local];
            for (int j = 0; j < local; j++) {
                int g = r * local + j;
                for (int src = 0; src < P; src++) {
                    int start = 0;
                    for (int e = 0; e < g; e++) start += sourceCounts.get(src)[e];
                    int n = sourceCounts.get(src)[g];
                    for (int i = start * D; i < (start + n) * D; i++) expected.add(sourceRows.get(src)[i]);
                    expectedCounts[j] += n;
                }
            }
            RankDispatch d = got.get(r);
            assertArrayEquals(expectedCounts, d.rowsPerLocalExpert(), "rank " + r + " rows per local expert");
            assertArrayEquals(expected.stream().mapToDouble(Double::doubleValue).toArray(), d.rows(), 0.0, "rank " + r + " rows");
            assertEquals(allKept, d.groupEntries(), "rank " + r + " group entries");

            double[] xd = x(r).toDoubleArray();
            double[] wd = weights(r).toDoubleArray();
            int[] ids = indices(r);
            double[] sum = new double[TOKENS[r] * D];
            for (int t = 0; t < TOKENS[r]; t++) {
                for (int s = 0; s < K; s++) {
                    if (ids[t * K + s] < 0) continue;
                    for (int c = 0; c < D; c++) sum[t * D + c] += wd[t * K + s] * xd[t * D + c];
                }
            }
            assertArrayEquals(sum, d.combined(), 1e-6, "rank " + r + " combine of identity experts");
        }
    }

    @Test
    void dispatchAndComputeEqualsTheLayerWithoutExpertParallelism() {
        for (boolean gradientScale : new boolean[] {false, true}) {
            MoEConfig config = MoEConfig.builder(D, 5, E, K).packed(gradientScale).gradientScale(gradientScale).initStd(0.5).seed(12)
                    .build();
            int local = E / P;
            List<double[][]> got = Distributed.run(P, Duration.ofSeconds(20), world -> {
                MoEMLP moe = MoEMLP.build(config);
                DeviceMesh mesh = DeviceMesh.create(world, MeshSizes.defaults().ep(P));
                ExpertParallel.apply(moe, mesh);
                int r = world.rank();
                Tensor xr = x(r).requiresGrad(true);
                Tensor out = ExpertParallel.dispatchAndCompute(xr, weights(r), Tensor.ofInts(indices(r), TOKENS[r], K), moe,
                        mesh.get("ep").group(), moe.localExpertStart(), moe.numLocalExperts(), moe.epSize(), gradientScale);
                Autograd.backward(out, Tensor.full(1f, TOKENS[r], D));
                assertEquals(r * local, moe.localExpertStart());
                return new double[][] {out.toDoubleArray(), xr.grad().toDoubleArray()};
            });
            if (gradientScale) {
                // the global oracle: one rank on all tokens, where the group's loads are this rank's
                List<Tensor> xs = new ArrayList<>();
                List<Integer> all = new ArrayList<>();
                List<Double> ws = new ArrayList<>();
                int total = 0;
                for (int r = 0; r < P; r++) {
                    xs.add(x(r));
                    for (int id : indices(r)) all.add(id);
                    for (double w : weights(r).toDoubleArray()) ws.add(w);
                    total += TOKENS[r];
                }
                double[] xAll = xs.stream().flatMapToDouble(t -> java.util.Arrays.stream(t.toDoubleArray())).toArray();
                Tensor out = nonExpertParallel(MoEMLP.build(config), Tensor.of(xAll, total, D),
                        Tensor.of(ws.stream().mapToDouble(Double::doubleValue).toArray(), total, K),
                        Tensor.ofInts(all.stream().mapToInt(Integer::intValue).toArray(), total, K), true);
                double[] expected = out.toDoubleArray();
                int row = 0;
                for (int r = 0; r < P; r++) {
                    double[] slice = java.util.Arrays.copyOfRange(expected, row * D, (row + TOKENS[r]) * D);
                    assertTrue(moe4j.autograd.GradCheck.relativeError(got.get(r)[0], slice) <= 1e-5, "rank " + r + " output, scaled");
                    row += TOKENS[r];
                }
            } else {
                for (int r = 0; r < P; r++) {
                    MoEMLP reference = MoEMLP.build(config);
                    Tensor xr = x(r).requiresGrad(true);
                    Tensor out = nonExpertParallel(reference, xr, weights(r), Tensor.ofInts(indices(r), TOKENS[r], K), false);
                    Autograd.backward(out, Tensor.full(1f, TOKENS[r], D));
                    assertTrue(moe4j.autograd.GradCheck.relativeError(got.get(r)[0], out.toDoubleArray()) <= 1e-5, "rank " + r + " output");
                    assertTrue(moe4j.autograd.GradCheck.relativeError(got.get(r)[1], xr.grad().toDoubleArray()) <= 1e-5,
                            "rank " + r + " input gradient");
                }
            }
        }
    }

    /** The layer with every expert here, on a routing with dropped entries (which forwardWithRouting does not take). */
    static Tensor nonExpertParallel(MoEMLP layer, Tensor x, Tensor w, Tensor indices, boolean gradientScale) {
        LocalDispatcher local = new LocalDispatcher(layer.numExperts());
        Dispatched<Routing> dispatched = local.dispatch(x, indices);
        return local.combine(layer.computeExperts(dispatched, gradientScale), dispatched, w);
    }

    @Test
    void inconsistentMetadataIsRejectedBeforeAnyExchange() {
        Distributed.run(2, Duration.ofSeconds(10), world -> {
            int othersBlock = (1 - world.rank()) * (E / 2);
            var e = assertThrows(IllegalArgumentException.class,
                    () -> new ExpertParallel.AllToAllDispatcher(world, E, othersBlock, E / 2, 2, 0, WireType.F32, false));
            assertTrue(e.getMessage().contains("inconsistent EP metadata"), e.getMessage());
            return null;
        });
    }
}
