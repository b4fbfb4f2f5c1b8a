package moe4j.parallel;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import moe4j.autograd.Autograd;
import moe4j.autograd.GradCheck;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.Distributed;
import moe4j.distributed.MeshSizes;
import moe4j.nn.MoEConfig;
import moe4j.nn.MoEMLP;
import moe4j.nn.Module;
import moe4j.ops.Ops;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

/**
 * A 2-layer MoE stack trained with plain SGD for 20 steps on P = 4 EP ranks, each on its shard of the
 * batch, ends with the same weights as one rank on the whole batch (≤ 1e-4 relative per tensor), with
 * the per-entry and with the deduplicating dispatch.
 */
class ExpertParallelTrainingTest {
    static final int D = 8;
    static final int H = 12;
    static final int TOKENS = 48;
    static final int STEPS = 20;

    static final class Stack extends Module {
        final MoEMLP first;
        final MoEMLP second;

        Stack(boolean packed) {
            this(packed, false);
        }

        Stack(boolean packed, boolean dedup) {
            MoEConfig c = MoEConfig.builder(D, H, 8, 2).packed(packed).initStd(0.3).numLayers(2).seed(21).dedup(dedup).build();
            first = registerModule("layers.0", MoEMLP.build(c));
            second = registerModule("layers.1", MoEMLP.build(c.toBuilder().seed(22).build()));
        }

        Tensor forward(Tensor x) {
            Tensor h = Ops.add(x, first.forward(x));
            return Ops.add(h, second.forward(h));
        }
    }

    /** Trains on {@code [from, to)} of each step's batch; returns the weights under global expert names. */
    static Map<String, double[]> train(Stack model, GradientSync sync, int from, int to) {
        for (int step = 0; step < STEPS; step++) {
            try (MemoryScope scope = MemoryScope.open()) {
                Tensor x = Tensor.randn(Rng.forStream(1, step), 1.0, TOKENS, D).rows(from, to);
                Tensor y = Tensor.randn(Rng.forStream(2, step), 1.0, TOKENS, D).rows(from, to);
                Tensor loss = Ops.mean(Ops.square(Ops.sub(model.forward(x), y)));
                model.zeroGrad();
                Autograd.backward(loss);
                sync.synchronize();
                Autograd.noGrad(() -> {
                    for (Tensor p : model.parameters()) moe4j.kernels.cpu.Elementwise.axpy(p.numel(), -0.1f, p.grad().data(), 0, p.data(), 0);
                    return null;
                });
            }
        }
        Map<String, double[]> out = new TreeMap<>();
        model.namedParameters().forEach((n, t) -> out.put(n, t.toDoubleArray()));
        return out;
    }

    @Test
    void fourEpRanksTrainLikeOneRankOnTheGlobalBatch() {
        for (boolean[] variant : new boolean[][] {{false, false}, {true, false}, {false, true}, {true, true}}) {
            boolean packed = variant[0];
            boolean dedup = variant[1];
            Stack single = new Stack(packed);
            Map<String, double[]> reference = train(single, GradientSync.create(single, null), 0, TOKENS);
            List<Map<String, double[]>> ranks = Distributed.run(4, Duration.ofSeconds(30), world -> {
                Stack model = new Stack(packed, dedup);
                DeviceMesh mesh = DeviceMesh.create(world, MeshSizes.defaults().ep(4));
                ExpertParallel.apply(model, mesh);
                int shard = TOKENS / 4;
                return train(model, GradientSync.create(model, mesh), world.rank() * shard, (world.rank() + 1) * shard);
            });
            for (int r = 0; r < 4; r++) {
                for (var entry : ranks.get(r).entrySet()) {
                    String name = entry.getKey();
                    double[] expected = reference.get(name);
                    if (name.endsWith("_w")) {
                        int per = expected.length / 8;
                        expected = ExpertParallelOracleTest.slice(expected, 2 * r * per, 2 * per);
                    }
                    assertNotNull(expected, name);
                    double err = GradCheck.relativeError(entry.getValue(), expected);
                    assertTrue(err <= 1e-4, "packed=" + packed + " dedup=" + dedup + " rank " + r + " " + name + ": relative error " + err);
                }
            }
            // and training moved the weights: the comparison is not between two initialisations
            Stack untrained = new Stack(packed);
            double moved = GradCheck.relativeError(reference.get("layers.0.router.gate.weight"),
                    untrained.first.router().gate().weight().toDoubleArray());
            assertTrue(moved > 1e-3, "router moved by " + moved);
        }
    }
}
