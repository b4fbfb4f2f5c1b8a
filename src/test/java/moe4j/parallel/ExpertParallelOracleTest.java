package moe4j.parallel;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import moe4j.autograd.Autograd;
import moe4j.autograd.GradCheck;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.Distributed;
import moe4j.distributed.MeshSizes;
import moe4j.nn.Activation;
import moe4j.nn.MoEConfig;
import moe4j.nn.MoEMLP;
import moe4j.ops.Ops;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The two equivalence oracles of expert parallelism, float32, norm-wise relative error ≤ 1e-5 on the
 * output and on every gradient tensor:
 * <ul>
 *   <li>per rank: each rank's output, input gradient and router gradient equal the non-EP layer on that
 *       rank's tokens, and expert g's gradient on its owner equals the sum over ranks of the non-EP
 *       gradients of g;</li>
 *   <li>global: P ranks equal one rank processing all ranks' tokens concatenated (gradient scaling too).</li>
 * </ul>
 */
class ExpertParallelOracleTest {
    static final int D = 8;
    static final int H = 6;
    static final double TOL = 1e-5;

    static Stream<Arguments> configurations() {
        List<Arguments> out = new ArrayList<>();
        int variant = 0;
        for (int p : new int[] {1, 2, 4, 8}) {
            for (boolean packed : new boolean[] {false, true}) {
                for (Activation act : Activation.values()) {
                    for (int k : new int[] {1, 2, 4}) {
                        // rotate through: plain, shared expert, capacity, gradient scaling (+ shared)
                        int v = variant++ % 4;
                        out.add(Arguments.of(p, 8, k, packed, act, v == 1 || v == 3, v == 2 ? 1.0 : 0.0, v == 3));
                    }
                }
            }
        }
        for (int p : new int[] {2, 4, 8}) {
            out.add(Arguments.of(p, p, 1, false, Activation.SILU, false, 0.0, false));
            out.add(Arguments.of(p, p, 1, true, Activation.GELU, true, 0.0, true));
        }
        return out.stream();
    }

    @ParameterizedTest(name = "P={0} E={1} K={2} packed={3} act={4} shared={5} cf={6} gradScale={7}")
    @MethodSource("configurations")
    void epEqualsTheNonEpLayer(int p, int e, int k, boolean packed, Activation act, boolean shared, double cf, boolean gradScale) {
        MoEConfig config = MoEConfig.builder(D, H, e, k).packed(packed).activation(act).sharedExperts(shared ? 1 : 0)
                .capacityFactor(cf).gradientScale(gradScale).initStd(0.5).seed(11).build();
        int[] tokens = new int[p];
        for (int r = 0; r < p; r++) tokens[r] = 6 + 3 * r; // uneven token counts
        Inputs in = Inputs.random(p, tokens, 100 + p);
        List<RankResult> ep = runEp(config, in);
        if (!gradScale) assertPerRankOracle(config, in, ep);
        if (cf == 0) assertGlobalOracle(config, in, ep);
    }

    // ------------------------------------------------------------------ running

    record Inputs(List<Tensor> x, List<Tensor> gradOut) {
        static Inputs random(int p, int[] tokens, long seed) {
            List<Tensor> x = new ArrayList<>();
            List<Tensor> g = new ArrayList<>();
            for (int r = 0; r < p; r++) {
                x.add(Tensor.randn(Rng.forStream(seed, r), 1.0, tokens[r], D));
                g.add(Tensor.randn(Rng.forStream(seed + 1, r), 1.0, tokens[r], D));
            }
            return new Inputs(x, g);
        }
    }

    /** One rank's output, input gradient and parameter gradients (under this rank's parameter names). */
    record RankResult(int rank, int localExpertStart, int numLocalExperts, double[] out, double[] gradX,
                      Map<String, double[]> grads) {}

    static List<RankResult> runEp(MoEConfig config, Inputs in) {
        int p = in.x().size();
        return Distributed.run(p, Duration.ofSeconds(20), world -> {
            MoEMLP moe = MoEMLP.build(config);
            DeviceMesh mesh = DeviceMesh.create(world, MeshSizes.defaults().ep(p));
            ExpertParallel.apply(moe, mesh);
            Tensor x = in.x().get(world.rank()).copy().requiresGrad(true);
            Tensor out = moe.forward(x);
            Autograd.backward(out, in.gradOut().get(world.rank()));
            Map<String, double[]> grads = new LinkedHashMap<>();
            moe.namedParameters().forEach((n, t) -> grads.put(n, t.grad().toDoubleArray()));
            return new RankResult(world.rank(), moe.localExpertStart(), moe.numLocalExperts(), out.toDoubleArray(),
                    x.grad().toDoubleArray(), grads);
        });
    }

    /** The non-EP layer on {@code x}: output, input gradient, parameter gradients. */
    static RankResult runReference(MoEConfig config, Tensor xValues, Tensor gradOut) {
        MoEMLP moe = MoEMLP.build(config);
        Tensor x = xValues.copy().requiresGrad(true);
        Tensor out = moe.forward(x);
        Autograd.backward(out, gradOut);
        Map<String, double[]> grads = new LinkedHashMap<>();
        moe.namedParameters().forEach((n, t) -> grads.put(n, t.grad().toDoubleArray()));
        return new RankResult(0, 0, config.numExperts(), out.toDoubleArray(), x.grad().toDoubleArray(), grads);
    }

    // ------------------------------------------------------------------ oracles

    static void assertPerRankOracle(MoEConfig config, Inputs in, List<RankResult> ep) {
        Map<String, double[]> summedRef = new LinkedHashMap<>();
        for (RankResult r : ep) {
            RankResult ref = runReference(config, in.x().get(r.rank()), in.gradOut().get(r.rank()));
            assertClose("rank " + r.rank() + " output", r.out(), ref.out());
            assertClose("rank " + r.rank() + " input gradient", r.gradX(), ref.gradX());
            for (String name : r.grads().keySet()) {
                if (!isExpertParameter(name)) assertClose("rank " + r.rank() + " " + name, r.grads().get(name), ref.grads().get(name));
            }
            ref.grads().forEach((n, g) -> summedRef.merge(n, g.clone(), ExpertParallelOracleTest::add));
        }
        assertExpertGradients(config, ep, summedRef, "per-rank oracle");
    }

    static void assertGlobalOracle(MoEConfig config, Inputs in, List<RankResult> ep) {
        RankResult ref = runReference(config, Ops.concatRows(in.x()), Ops.concatRows(in.gradOut()));
        int offset = 0;
        Map<String, double[]> replicatedSum = new LinkedHashMap<>();
        for (RankResult r : ep) {
            int n = r.out().length;
            assertClose("global oracle: rank " + r.rank() + " output", r.out(), slice(ref.out(), offset, n));
            assertClose("global oracle: rank " + r.rank() + " input gradient", r.gradX(), slice(ref.gradX(), offset, n));
            offset += n;
            r.grads().forEach((name, g) -> {
                if (!isExpertParameter(name)) replicatedSum.merge(name, g.clone(), ExpertParallelOracleTest::add);
            });
        }
        replicatedSum.forEach((name, g) -> assertClose("global oracle: Σ ranks " + name, g, ref.grads().get(name)));
        assertExpertGradients(config, ep, ref.grads(), "global oracle");
    }

    /** Each owner's expert gradients against the reference's gradients of the same global experts. */
    static void assertExpertGradients(MoEConfig config, List<RankResult> ep, Map<String, double[]> reference, String what) {
        int expertTensors = 0;
        for (RankResult r : ep) {
            for (var entry : r.grads().entrySet()) {
                String name = entry.getKey();
                if (!isExpertParameter(name)) continue;
                expertTensors++;
                double[] expected;
                if (name.startsWith("experts.")) {
                    int g = Integer.parseInt(name.split("\\.")[1]);
                    assertTrue(g >= r.localExpertStart() && g < r.localExpertStart() + r.numLocalExperts(),
                            "rank " + r.rank() + " holds expert " + g + " outside its block");
                    expected = reference.get(name);
                } else {
                    double[] full = reference.get(name);
                    int per = full.length / config.numExperts();
                    expected = slice(full, r.localExpertStart() * per, r.numLocalExperts() * per);
                }
                assertClose(what + ": rank " + r.rank() + " " + name, entry.getValue(), expected);
            }
        }
        int perLayer = config.activation().gated() ? 3 : 2;
        assertEquals(config.packed() ? perLayer * ep.size() : perLayer * config.numExperts(), expertTensors,
                "every expert weight is held by exactly one rank");
    }

    static boolean isExpertParameter(String name) {
        return name.startsWith("experts.") || name.endsWith("_w");
    }

    static void assertClose(String what, double[] actual, double[] expected) {
        assertEquals(expected.length, actual.length, what + ": length");
        double norm = 0;
        for (double v : expected) norm += v * v;
        if (norm == 0) {
            for (double v : actual) assertEquals(0.0, v, 0.0, what + ": must be exactly zero");
            return;
        }
        double err = GradCheck.relativeError(actual, expected);
        assertTrue(err <= TOL, what + ": relative error " + err + " > " + TOL);
    }

    static double[] slice(double[] a, int from, int n) {
        double[] out = new double[n];
        System.arraycopy(a, from, out, 0, n);
        return out;
    }

    static double[] add(double[] a, double[] b) {
        for (int i = 0; i < a.length; i++) a[i] += b[i];
        return a;
    }
}
