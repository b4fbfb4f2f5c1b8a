package moe4j.parallel;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.List;
import moe4j.autograd.Autograd;
import moe4j.autograd.GradCheck;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.Distributed;
import moe4j.distributed.MeshSizes;
import moe4j.nn.MoETransformer;
import moe4j.nn.ModelConfig;
import moe4j.ops.Ops;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

/** The tensor-parallel transformation: what each rank keeps, its cross-entropy, its collectives' gradients, its errors. */
class TensorParallelTest {
    static ModelConfig.Builder config() {
        return ModelConfig.builder().dim(16).nLayers(2).nHeads(4).nKvHeads(2).vocabSize(12).maxSeqLen(8).ffnHidden(24)
                .numExperts(4).moeTopK(2).moeFrequency(2).moeSharedExperts(1).initStd(0.2).seed(5);
    }

    @Test
    void eachRankKeepsItsBlockOfTheFullWeights() {
        MoETransformer full = new MoETransformer(config().build());
        Distributed.run(2, Duration.ofSeconds(60), world -> {
            MoETransformer model = new MoETransformer(config().build());
            Parallelize.apply(model, DeviceMesh.create(world, MeshSizes.defaults().dpShard(1).tp(2)));
            int r = world.rank();
            var a = model.layers().get(0).attention();
            var fa = full.layers().get(0).attention();
            assertArrayEquals(new int[] {8, 16}, a.wq().weight().shape());
            assertArrayEquals(fa.wq().weight().rows(8 * r, 8 * r + 8).toFloatArray(), a.wq().weight().toFloatArray());
            assertArrayEquals(new int[] {16, 8}, a.wo().weight().shape());
            for (int row = 0; row < 16; row++) {
                for (int c = 0; c < 8; c++) assertEquals(fa.wo().weight().get(row, 8 * r + c), a.wo().weight().get(row, c));
            }
            assertArrayEquals(new int[] {6, 16}, model.tokEmbeddings().weight().shape());
            assertArrayEquals(new int[] {6, 16}, model.output().weight().shape());
            assertArrayEquals(new int[] {12, 16}, model.layers().get(0).mlp().upProj().weight().shape());
            assertArrayEquals(new int[] {16, 12}, model.layers().get(0).mlp().downProj().weight().shape());
            assertArrayEquals(new int[] {12, 16}, model.layers().get(1).moe().sharedExpert().upProj().weight().shape());
            assertInstanceOf(SequenceParallelDispatcher.class, model.layers().get(1).moe().dispatcher());
            return null;
        });
    }

    @Test
    void vocabularyParallelCrossEntropyEqualsTheFullOne() {
        int n = 7;
        int v = 12;
        Tensor logits = Tensor.randn(new Rng(3), 2.0, n, v);
        int[] t = {0, 5, 11, -1, 6, 7, 3};
        Tensor targets = Tensor.ofInts(t, n);
        logits.requiresGrad(true);
        Tensor expected = Ops.crossEntropy(logits, targets);
        Autograd.backward(expected);
        double[] fullGrad = logits.grad().toDoubleArray();
        List<double[]> results = Distributed.run(3, Duration.ofSeconds(60), world -> {
            try (MemoryScope scope = MemoryScope.open()) {
                int block = v / 3;
                Tensor mine = Tensor.zeros(n, block);
                for (int i = 0; i < n; i++) {
                    for (int c = 0; c < block; c++) mine.set(i, c, logits.get(i, world.rank() * block + c));
                }
                mine.requiresGrad(true);
                Tensor loss = TensorParallel.vocabParallelCrossEntropy(mine, targets, world.rank() * block, world);
                Autograd.backward(loss);
                double[] out = new double[1 + n * block];
                out[0] = loss.item();
                double[] g = mine.grad().toDoubleArray();
                System.arraycopy(g, 0, out, 1, g.length);
                return out;
            }
        });
        for (int r = 0; r < 3; r++) {
            double[] res = results.get(r);
            assertEquals(expected.item(), res[0], 1e-5, "rank " + r + " loss");
            double[] ref = new double[n * 4];
            for (int i = 0; i < n; i++) {
                for (int c = 0; c < 4; c++) ref[i * 4 + c] = fullGrad[i * v + r * 4 + c];
            }
            assertTrue(GradCheck.relativeError(java.util.Arrays.copyOfRange(res, 1, res.length), ref) <= 1e-5, "rank " + r + " gradient");
        }
    }

    @Test
    void sliceAndGatherOfRowsAreEachOthersAdjoint() {
        // y = gather(slice(x)) is the identity on replicated x, and so is its gradient on every rank
        List<double[]> grads = Distributed.run(3, Duration.ofSeconds(60), world -> {
            try (MemoryScope scope = MemoryScope.open()) {
                Tensor x = Tensor.randn(new Rng(9), 1.0, 7, 3);
                x.requiresGrad(true);
                Tensor y = TensorParallel.gatherRows(Ops.scale(TensorParallel.sliceRows(x, world), 2.0), 7, world);
                assertArrayEquals(Ops.scale(x, 2.0).toFloatArray(), y.toFloatArray());
                Tensor w = Tensor.randn(new Rng(10), 1.0, 7, 3);
                Autograd.backward(Ops.sum(Ops.mul(y, w)));
                assertArrayEquals(Ops.scale(w, 2.0).toFloatArray(), x.grad().toFloatArray());
                return x.grad().toDoubleArray();
            }
        });
        assertEquals(3, grads.size());
    }

    @Test
    void impossibleMeshesAndTheWrongOrderAreClearErrors() {
        Distributed.run(4, Duration.ofSeconds(60), world -> {
            MoETransformer model = new MoETransformer(config().build());
            var e = assertThrows(IllegalArgumentException.class,
                    () -> Parallelize.apply(model, DeviceMesh.create(world, MeshSizes.defaults().dpShard(1).tp(4))));
            assertEquals("n_heads (4) and n_kv_heads (2) must be divisible by tp (4)", e.getMessage());
            return null;
        });
        Distributed.run(2, Duration.ofSeconds(60), world -> {
            MoETransformer tied = new MoETransformer(config().tieEmbeddings(true).build());
            var e = assertThrows(IllegalArgumentException.class,
                    () -> Parallelize.apply(tied, DeviceMesh.create(world, MeshSizes.defaults().dpShard(1).tp(2))));
            assertEquals("tensor parallelism needs untied embeddings (tie_embeddings = false)", e.getMessage());
            MoETransformer model = new MoETransformer(config().build());
            DeviceMesh mesh = DeviceMesh.create(world, MeshSizes.defaults().dpShard(1).ep(2));
            ExpertParallel.apply(model, mesh);
            DeviceMesh tpMesh = DeviceMesh.create(world, MeshSizes.defaults().dpShard(1).tp(2));
            var order = assertThrows(IllegalStateException.class, () -> TensorParallel.apply(model, tpMesh));
            assertTrue(order.getMessage().startsWith("tensor parallelism must be applied before expert parallelism"), order.getMessage());
            return null;
        });
    }
}
