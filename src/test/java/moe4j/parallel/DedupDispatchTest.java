package moe4j.parallel;

import static moe4j.parallel.ExpertParallelOracleTest.*;
import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import moe4j.autograd.Autograd;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.Distributed;
import moe4j.distributed.MeshSizes;
import moe4j.nn.Activation;
import moe4j.nn.MoEConfig;
import moe4j.nn.MoEMLP;
import moe4j.nn.ModelConfig;
import moe4j.nn.Routing;
import moe4j.nn.WireType;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The deduplicating dispatch (each token sent once per rank that owns one of its experts, expanded there,
 * and reduced there before one row per token and rank goes back) computes the function of the per-entry
 * dispatch: output, input gradient, router gradient and every expert gradient equal the plain EP path
 * and the non-EP layer (the two oracles of {@link ExpertParallelOracleTest}), norm-wise relative error
 * ≤ 1e-5 in float32. Only the order of the sums differs, so equality with the plain path is not bitwise.
 */
class DedupDispatchTest {

    static Stream<Arguments> configurations() {
        List<Arguments> out = new ArrayList<>();
        int variant = 0;
        for (int p : new int[] {2, 4}) {
            for (int k : new int[] {1, 2, 8}) {
                for (boolean packed : new boolean[] {false, true}) {
                    for (double cf : new double[] {0.0, 1.0}) {
                        // rotate an activation without a gate, a shared expert and gradient scaling through the cases
                        int v = variant++ % 4;
                        out.add(Arguments.of(p, k, packed, cf, v == 1 ? Activation.GELU : Activation.SILU, v == 2, v == 3));
                    }
                }
            }
        }
        return out.stream();
    }

    @ParameterizedTest(name = "P={0} K={1} packed={2} cf={3} act={4} shared={5} gradScale={6}")
    @MethodSource("configurations")
    void dedupEqualsThePlainPathAndTheNonEpLayer(int p, int k, boolean packed, double cf, Activation act, boolean shared,
                                                 boolean gradScale) {
        MoEConfig plain = MoEConfig.builder(D, H, 8, k).packed(packed).activation(act).sharedExperts(shared ? 1 : 0)
                .capacityFactor(cf).gradientScale(gradScale).initStd(0.5).seed(17).build();
        MoEConfig dedup = plain.toBuilder().dedup(true).build();
        int[] tokens = new int[p];
        for (int r = 0; r < p; r++) tokens[r] = 5 + 4 * r;
        tokens[1] = 0; // a rank without tokens still takes part in every exchange
        Inputs in = Inputs.random(p, tokens, 300 + p + k);
        List<RankResult> deduplicated = runEp(dedup, in);
        List<RankResult> perEntry = runEp(plain, in);
        for (int r = 0; r < p; r++) assertSameResults("rank " + r, deduplicated.get(r), perEntry.get(r));
        if (!gradScale) assertPerRankOracle(plain, in, deduplicated);
        if (cf == 0) assertGlobalOracle(plain, in, deduplicated);
    }

    /** Every token routed to experts 0 and 1, rank 0's block: with P = 4 ranks 1..3 receive nothing, forward or backward. */
    @Test
    void ranksThatReceiveNothingCompleteAndMatchTheNonEpLayer() {
        for (int p : new int[] {2, 4}) {
            for (boolean packed : new boolean[] {false, true}) {
                MoEConfig config = ExpertParallelTest.skewed(packed).toBuilder().dedup(true).build();
                int[] tokens = new int[p];
                for (int r = 0; r < p; r++) tokens[r] = r == 1 ? 0 : 3 + 2 * r;
                Inputs in = Inputs.random(p, tokens, 7);
                for (Tensor x : in.x()) {
                    for (long i = 0; i < x.numel(); i++) x.set(i, Math.abs(x.get(i)) + 0.1f);
                }
                List<RankResult> ep = Distributed.run(p, Duration.ofSeconds(20), world -> {
                    MoEMLP moe = MoEMLP.build(config);
                    ExpertParallelTest.forceExperts01(moe);
                    ExpertParallel.apply(moe, DeviceMesh.create(world, MeshSizes.defaults().ep(p)));
                    return ExpertParallelTest.runRank(moe, in, world.rank());
                });
                for (RankResult r : ep.subList(1, p)) {
                    r.grads().forEach((name, g) -> {
                        if (isExpertParameter(name)) {
                            for (double v : g) assertEquals(0.0, v, 0.0, "rank " + r.rank() + " " + name + " received nothing");
                        }
                    });
                }
                for (RankResult r : ep) {
                    MoEMLP ref = MoEMLP.build(config);
                    ExpertParallelTest.forceExperts01(ref);
                    RankResult expected = ExpertParallelTest.runRank(ref, in, r.rank());
                    assertClose("P=" + p + " rank " + r.rank() + " output", r.out(), expected.out());
                    assertClose("P=" + p + " rank " + r.rank() + " input gradient", r.gradX(), expected.gradX());
                    assertClose("P=" + p + " rank " + r.rank() + " router gradient", r.grads().get("router.gate.weight"),
                            expected.grads().get("router.gate.weight"));
                }
            }
        }
    }

    /**
     * On a bf16 wire the owner rounds each (token, rank) sum once instead of each expert output, so the result
     * is not the per-entry path's bf16 function; it stays within the spec's bf16 tolerance (2e-2 norm-wise)
     * of the float32 non-EP layer, output and every gradient, and it does round.
     */
    @Test
    void onABf16WireTheResultIsWithinTheBf16ToleranceOfTheFloat32Layer() {
        int p = 2;
        MoEConfig f32 = MoEConfig.builder(D, H, 8, 4).packed(true).initStd(0.5).seed(23).wire(WireType.F32).build();
        MoEConfig bf16 = f32.toBuilder().wire(WireType.BF16).dedup(true).build();
        Inputs in = Inputs.random(p, new int[] {11, 7}, 61);
        List<RankResult> ep = runEp(bf16, in);
        Map<String, double[]> summed = new java.util.LinkedHashMap<>();
        for (RankResult r : ep) {
            RankResult ref = runReference(f32, in.x().get(r.rank()), in.gradOut().get(r.rank()));
            assertWithin("rank " + r.rank() + " output", r.out(), ref.out(), Bf16WireTest.BF16_TOLERANCE);
            assertTrue(moe4j.autograd.GradCheck.relativeError(r.out(), ref.out()) > 1e-4, "the bf16 wire rounded nothing");
            assertWithin("rank " + r.rank() + " input gradient", r.gradX(), ref.gradX(), Bf16WireTest.BF16_TOLERANCE);
            assertWithin("rank " + r.rank() + " router gradient", r.grads().get("router.gate.weight"), ref.grads().get("router.gate.weight"),
                    Bf16WireTest.BF16_TOLERANCE);
            ref.grads().forEach((n, g) -> summed.merge(n, g.clone(), ExpertParallelOracleTest::add));
        }
        for (RankResult r : ep) {
            r.grads().forEach((name, g) -> {
                if (!name.endsWith("_w")) return;
                int per = summed.get(name).length / 8;
                assertWithin("rank " + r.rank() + " " + name, g, slice(summed.get(name), r.localExpertStart() * per, r.numLocalExperts() * per),
                        Bf16WireTest.BF16_TOLERANCE);
            });
        }
    }

    static void assertWithin(String what, double[] actual, double[] expected, double tolerance) {
        double err = moe4j.autograd.GradCheck.relativeError(actual, expected);
        assertTrue(err <= tolerance, what + ": relative error " + err + " > " + tolerance);
    }

    static void assertSameResults(String what, RankResult actual, RankResult expected) {
        assertClose(what + " output against the per-entry dispatch", actual.out(), expected.out());
        assertClose(what + " input gradient against the per-entry dispatch", actual.gradX(), expected.gradX());
        assertEquals(expected.grads().keySet(), actual.grads().keySet(), what + ": the same parameters");
        expected.grads().forEach((name, g) -> assertClose(what + " " + name + " against the per-entry dispatch",
                actual.grads().get(name), g));
    }

    // ------------------------------------------------------------------ what travels

    /**
     * Counted on the wire: a deduplicating dispatch sends each rank exactly one row of D elements of the wire
     * type (and one row of K expert ids) per (token, rank) pair with a kept entry, which the test counts from
     * the routing itself. Over a step, what a rank sends as a source (rows, weights, then the gradients of
     * the sums) follows its own pairs, and what it sends as an owner (the sums, then the gradients of the
     * weights and rows) the pairs it received. The per-entry dispatch, counted the same way, sends a row per entry.
     */
    @Test
    void bytesOnTheWireAreOneRowPerTokenAndDestinationRank() {
        int p = 4;
        int k = 8;
        for (WireType wire : new WireType[] {WireType.F32, WireType.BF16}) {
            for (boolean dedup : new boolean[] {true, false}) {
                MoEConfig config = MoEConfig.builder(D, H, 8, k).capacityFactor(1.0).initStd(0.5).seed(5).wire(wire).dedup(dedup).build();
                int[] tokens = {9, 0, 6, 11};
                Inputs in = Inputs.random(p, tokens, 41);
                int elementBytes = wire == WireType.BF16 ? 2 : 4;
                record Counted(long[][] rowsTo, long dispatchRows, long dispatchIds, long stepRows, long stepIds) {}
                List<Counted> counted = Distributed.run(p, Duration.ofSeconds(20), world -> {
                    MoEMLP moe = MoEMLP.build(config);
                    ExpertParallel.apply(moe, DeviceMesh.create(world, MeshSizes.defaults().ep(p)));
                    TrafficCountingGroup traffic = ExpertParallel.countTraffic(moe);
                    Tensor x = in.x().get(world.rank()).copy().requiresGrad(true);
                    Tensor indices = Autograd.noGrad(() -> moe.dropOverflow(moe.router().route(x).indices()));
                    long[][] rowsTo = rowsTo(indices.toIntArray(), k, 8, p);
                    Autograd.noGrad(() -> moe.dispatcher().dispatch(x, indices)); // the dispatch alone
                    long dispatchRows = traffic.rowBytes();
                    long dispatchIds = traffic.indexBytes();
                    Autograd.backward(moe.forward(x), in.gradOut().get(world.rank())); // a whole step
                    return new Counted(rowsTo, dispatchRows, dispatchIds, traffic.rowBytes() - dispatchRows,
                            traffic.indexBytes() - dispatchIds);
                });
                for (int r = 0; r < p; r++) {
                    long entriesOut = 0, pairsOut = 0, entriesIn = 0, pairsIn = 0;
                    for (int peer = 0; peer < p; peer++) {
                        if (peer == r) continue;
                        entriesOut += counted.get(r).rowsTo()[0][peer];
                        pairsOut += counted.get(r).rowsTo()[1][peer];
                        entriesIn += counted.get(peer).rowsTo()[0][r];
                        pairsIn += counted.get(peer).rowsTo()[1][r];
                    }
                    Counted c = counted.get(r);
                    String what = "rank " + r + " wire " + wire + (dedup ? " deduplicated" : " per entry");
                    if (r != 1) assertTrue(pairsOut > 0 && pairsOut < entriesOut, what + ": the routing has repeats to remove");
                    long row = (long) D * elementBytes;
                    if (dedup) {
                        assertEquals(pairsOut * row, c.dispatchRows(), what + ": dispatch bytes");
                        assertEquals(pairsOut * k * 4, c.dispatchIds(), what + ": dispatch expert ids");
                        assertEquals(2 * pairsOut * row + pairsOut * k * 4 + 2 * pairsIn * row + pairsIn * k * 4, c.stepRows(),
                                what + ": a step's bytes");
                        assertEquals(pairsOut * k * 4, c.stepIds(), what + ": a step's expert ids");
                    } else {
                        assertEquals(entriesOut * row, c.dispatchRows(), what + ": dispatch bytes");
                        assertEquals(0, c.dispatchIds(), what + ": no expert id travels");
                        assertEquals(2 * entriesOut * row + 2 * entriesIn * row, c.stepRows(), what + ": a step's bytes");
                        assertEquals(0, c.stepIds(), what + ": no expert id travels");
                    }
                }
            }
        }
    }

    /** Rows a rank sends to each rank: {entries per rank, distinct (token, rank) pairs per rank}. */
    static long[][] rowsTo(int[] indices, int k, int numExperts, int ranks) {
        int perRank = numExperts / ranks;
        long[][] rows = new long[2][ranks];
        for (int t = 0; t < indices.length / k; t++) {
            boolean[] seen = new boolean[ranks];
            for (int s = 0; s < k; s++) {
                int e = indices[t * k + s];
                if (e < 0) continue;
                int owner = e / perRank;
                rows[0][owner]++;
                if (!seen[owner]) rows[1][owner]++;
                seen[owner] = true;
            }
        }
        return rows;
    }

    /** The pairs a dispatch sends, against a double loop over the routing: by rank, then token; counts per rank. */
    @Test
    void pairsAreEveryTokenAndRankOnceByRankThenToken() {
        int[] ids = {
            5, 1, -1, 4, //  token 0: ranks 2, 0, dropped, 2 again
            0, 1, 2, 3, //   token 1: ranks 0, 0, 1, 1
            -1, -1, -1, -1, // token 2: everything dropped
            7, 6, 0, 3, //   token 3: ranks 3, 3, 0, 1
        };
        Tensor indices = Tensor.ofInts(ids, 4, 4);
        Routing.ByExpertAndRank sorted = Routing.sortByExpertAndRank(indices, 8, 4);
        List<Integer> tokens = new ArrayList<>();
        int[] perRank = new int[4];
        for (int r = 0; r < 4; r++) {
            for (int t = 0; t < 4; t++) {
                boolean has = false;
                for (int s = 0; s < 4; s++) has |= ids[t * 4 + s] >= 0 && ids[t * 4 + s] / 2 == r;
                if (has) {
                    tokens.add(t);
                    perRank[r]++;
                }
            }
        }
        assertArrayEquals(perRank, sorted.byRank().rowsPerExpert());
        assertArrayEquals(tokens.stream().mapToInt(Integer::intValue).toArray(), sorted.byRank().tokenOfRow().toIntArray());
        // each pair's entry is the token's first slot on that rank
        assertArrayEquals(new int[] {0 * 4 + 1, 1 * 4, 3 * 4 + 2, 1 * 4 + 2, 3 * 4 + 3, 0, 3 * 4}, sorted.byRank().entryOfRow().toIntArray());
        // and the expert grouping is the plain one, bit for bit
        Routing plain = Routing.sortByExpert(indices, 8);
        assertArrayEquals(plain.rowsPerExpert(), sorted.byExpert().rowsPerExpert());
        assertArrayEquals(plain.tokenOfRow().toIntArray(), sorted.byExpert().tokenOfRow().toIntArray());
        assertArrayEquals(plain.entryOfRow().toIntArray(), sorted.byExpert().entryOfRow().toIntArray());
    }

    // ------------------------------------------------------------------ configuration and agreement

    @Test
    void theModelKeyReachesEveryLayerAndDefaultsOff() {
        assertFalse(ModelConfig.defaults().moeConfig(0).dedup());
        ModelConfig on = ModelConfig.builder().set("moe_dedup", "true").build();
        assertTrue(on.moeDedup());
        assertTrue(on.moeConfig(1).dedup());
        assertTrue(on.toBuilder().build().moeDedup());
        var bad = assertThrows(IllegalArgumentException.class, () -> ModelConfig.builder().set("moe_dedup", "sometimes"));
        assertTrue(bad.getMessage().contains("moe_dedup"), bad.getMessage());
    }

    @Test
    void ranksThatDisagreeOnDedupFailEveryRankNamingTheKey() {
        Throwable[] seen = EveryRankFails.of(2, Duration.ofSeconds(5), world -> {
            MoEMLP moe = MoEMLP.build(MoEConfig.builder(D, H, 4, 2).dedup(world.rank() == 0).build());
            ExpertParallel.apply(moe, DeviceMesh.create(world, MeshSizes.defaults().ep(2)));
            moe.forward(Tensor.full(1f, 3, D));
            return null;
        }).ranks();
        for (Throwable t : seen) assertTrue(String.valueOf(t.getMessage()).contains("moe_dedup"), t.toString());
    }
}
