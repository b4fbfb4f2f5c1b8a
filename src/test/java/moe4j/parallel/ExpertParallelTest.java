package moe4j.parallel;

import static moe4j.parallel.ExpertParallelOracleTest.*;
import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.List;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.Distributed;
import moe4j.distributed.MeshSizes;
import moe4j.nn.Expert;
import moe4j.nn.MoEConfig;
import moe4j.nn.MoEMLP;
import moe4j.nn.Module;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

class ExpertParallelTest {

    /** A layer whose gate sends every token (all-positive inputs) to experts 0 and 1: rank 0's block at P = 4, E = 8. */
    static MoEConfig skewed(boolean packed) {
        return MoEConfig.builder(D, H, 8, 2).packed(packed).initStd(0.5).seed(3).build();
    }

    @Test
    void zeroTrafficRanksAndEmptyRanksComplete() {
        for (boolean packed : new boolean[] {false, true}) {
            MoEConfig config = skewed(packed);
            int p = 4;
            int[] tokens = {5, 0, 7, 3}; // rank 1 has no tokens: it sends nothing
            Inputs in = Inputs.random(p, tokens, 5);
            for (Tensor x : in.x()) {
                for (long i = 0; i < x.numel(); i++) x.set(i, Math.abs(x.get(i)) + 0.1f);
            }
            List<RankResult> ep = Distributed.run(p, Duration.ofSeconds(20), world -> {
                MoEMLP moe = MoEMLP.build(config);
                forceExperts01(moe);
                ExpertParallel.apply(moe, DeviceMesh.create(world, MeshSizes.defaults().ep(p)));
                return runRank(moe, in, world.rank());
            });
            // check the forced routing really starves ranks 1..3 of work
            for (RankResult r : ep.subList(1, p)) {
                for (var g : r.grads().entrySet()) {
                    if (isExpertParameter(g.getKey())) {
                        for (double v : g.getValue()) assertEquals(0.0, v, 0.0, "rank " + r.rank() + " " + g.getKey() + " must be exactly zero");
                    }
                }
            }
            MoEConfig refConfig = config;
            Inputs refIn = in;
            // oracles against non-EP layers with the same forced gate
            for (RankResult r : ep) {
                MoEMLP ref = MoEMLP.build(refConfig);
                forceExperts01(ref);
                RankResult expected = runRank(ref, refIn, r.rank());
                assertClose("rank " + r.rank() + " output", r.out(), expected.out());
                assertClose("rank " + r.rank() + " input gradient", r.gradX(), expected.gradX());
            }
        }
    }

    static void forceExperts01(MoEMLP moe) {
        Tensor gate = moe.router().gate().weight();
        gate.fill(0f);
        for (int c = 0; c < D; c++) {
            gate.set(c, 4f);
            gate.set(D + c, 2f);
        }
    }

    static RankResult runRank(MoEMLP moe, Inputs in, int rank) {
        Tensor x = in.x().get(rank).copy().requiresGrad(true);
        Tensor out = moe.forward(x);
        moe4j.autograd.Autograd.backward(out, in.gradOut().get(rank));
        var grads = new java.util.LinkedHashMap<String, double[]>();
        moe.namedParameters().forEach((n, t) -> grads.put(n, t.grad().toDoubleArray()));
        return new RankResult(rank, moe.localExpertStart(), moe.numLocalExperts(), out.toDoubleArray(), x.grad().toDoubleArray(), grads);
    }

    @Test
    void applyKeepsEachRanksBlockWithTheUnpartitionedWeights() {
        for (boolean packed : new boolean[] {false, true}) {
            MoEConfig config = MoEConfig.builder(D, H, 8, 2).packed(packed).seed(9).build();
            MoEMLP full = MoEMLP.build(config);
            Distributed.run(4, world -> {
                MoEMLP moe = MoEMLP.build(config);
                ExpertParallel.apply(moe, DeviceMesh.create(world, MeshSizes.defaults().ep(4)));
                int r = world.rank();
                assertEquals(4, moe.epSize());
                assertEquals(r, moe.epRank());
                assertInstanceOf(ExpertParallel.AllToAllDispatcher.class, moe.dispatcher());
                assertEquals(2, moe.numLocalExperts());
                assertEquals(2 * r, moe.localExpertStart());
                assertEquals(8, moe.numExperts());
                assertSame(world.size(), moe.epGroup().size());
                if (packed) {
                    Tensor up = moe.upW();
                    assertArrayEquals(new int[] {2, D, H}, up.shape());
                    assertTrue(up.requiresGrad());
                    assertSame(up, moe.namedParameters().get("up_w"), "the slice is the registered parameter");
                    assertArrayEquals(full.upW().rows(2 * r, 2 * r + 2).toFloatArray(), up.toFloatArray());
                    assertArrayEquals(full.downW().rows(2 * r, 2 * r + 2).toFloatArray(), moe.downW().toFloatArray());
                } else {
                    List<Expert> experts = moe.localExperts();
                    assertEquals(2, experts.size());
                    for (int j = 0; j < 2; j++) {
                        int g = 2 * r + j;
                        assertTrue(moe.namedParameters().containsKey("experts." + g + ".up_proj.weight"));
                        assertArrayEquals(full.localExperts().get(g).upProj().weight().toFloatArray(),
                                experts.get(j).upProj().weight().toFloatArray(), "expert " + g);
                    }
                }
                // router and shared parts stay replicated
                assertArrayEquals(full.router().gate().weight().toFloatArray(), moe.router().gate().weight().toFloatArray());
                return null;
            });
        }
    }

    @Test
    void applyIsANoOpWithoutAnEpDimension() {
        MoEConfig config = MoEConfig.builder(D, H, 8, 2).build();
        MoEMLP a = MoEMLP.build(config);
        ExpertParallel.apply(a, null);
        assertEquals(8, a.numLocalExperts());
        Distributed.run(2, world -> {
            MoEMLP b = MoEMLP.build(config);
            ExpertParallel.apply(b, DeviceMesh.create(world, MeshSizes.defaults())); // dp_shard = 2, no ep
            assertEquals(8, b.numLocalExperts());
            assertEquals(1, b.epSize());
            return null;
        });
    }

    @Test
    void applyRejectsIndivisibleExpertsAndWrongOrder() {
        Distributed.run(4, world -> {
            DeviceMesh mesh = DeviceMesh.create(world, MeshSizes.defaults().ep(4));
            MoEMLP six = MoEMLP.build(MoEConfig.builder(D, H, 6, 2).build());
            var e = assertThrows(IllegalArgumentException.class, () -> ExpertParallel.apply(six, mesh));
            assertEquals("num_experts (6) must be divisible by ep (4)", e.getMessage());

            MoEMLP twice = MoEMLP.build(MoEConfig.builder(D, H, 8, 2).build());
            ExpertParallel.apply(twice, mesh);
            var again = assertThrows(IllegalStateException.class, () -> ExpertParallel.apply(twice, mesh));
            assertTrue(again.getMessage().contains("already applied"), again.getMessage());

            MoEMLP sharded = MoEMLP.build(MoEConfig.builder(D, H, 8, 2).build());
            ParallelPlan.of(sharded).mark(ParallelPlan.Stage.DATA_PARALLEL_SHARDING);
            var order = assertThrows(IllegalStateException.class, () -> ExpertParallel.apply(sharded, mesh));
            assertTrue(order.getMessage().contains("must be applied before data parallelism (FSDP-style sharding)"), order.getMessage());
            return null;
        });
    }

    @Test
    void applyPartitionsEveryMoeLayerOfAModel() {
        Distributed.run(2, world -> {
            Module model = new TwoLayers(MoEConfig.builder(D, H, 4, 2).build());
            ExpertParallel.apply(model, DeviceMesh.create(world, MeshSizes.defaults().ep(2)));
            long experts = model.namedParameters().keySet().stream().filter(n -> n.contains(".experts.")).count();
            assertEquals(2 * 2 * 3, experts, "2 layers × 2 local experts × 3 matrices");
            return null;
        });
    }

    static final class TwoLayers extends Module {
        final MoEMLP first;
        final MoEMLP second;

        TwoLayers(MoEConfig config) {
            first = registerModule("first", MoEMLP.build(config));
            second = registerModule("second", MoEMLP.build(config.toBuilder().seed(config.seed() + 1).build()));
        }
    }

    @Test
    void aRankFailingInForwardFailsEveryRankWithinTheDeadline() {
        MoEConfig config = MoEConfig.builder(D, H, 8, 2).build();
        long start = System.nanoTime();
        RuntimeException e = EveryRankFails.of(4, Duration.ofSeconds(2), world -> {
            MoEMLP moe = MoEMLP.build(config);
            ExpertParallel.apply(moe, DeviceMesh.create(world, MeshSizes.defaults().ep(4)));
            if (world.rank() == 2) throw new IllegalStateException("rank 2 fails in forward");
            moe.forward(Tensor.full(1f, 4, D));
            return null;
        }).run();
        assertTrue((System.nanoTime() - start) / 1e9 < 10, "failure must arrive within the deadline");
        assertTrue(String.valueOf(e.getMessage()).contains("rank 2") || e.getCause() != null, e.toString());
    }

    @Test
    void aRankRunningADifferentTopKFailsEveryRank() {
        Throwable[] seen = EveryRankFails.of(4, Duration.ofSeconds(2), world -> {
            MoEMLP moe = MoEMLP.build(MoEConfig.builder(D, H, 8, world.rank() == 1 ? 1 : 2).build());
            ExpertParallel.apply(moe, DeviceMesh.create(world, MeshSizes.defaults().ep(4)));
            moe.forward(Tensor.full(1f, 4, D));
            return null;
        }).ranks();
        String msg = seen[0].getMessage();
        assertTrue(msg.contains("K=2") && msg.contains("K=1"), msg);
    }
}
