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
    void sequenceParallelGatherAndReduceScatterAreEachOthersAdjoint() {
        // z = reduce-scatter(c_r · gather(x)) keeps my block of (Σ c) · X; for L = Σ_r <z_r, w_r> the gradient of
        // my block x_r is (Σ c) · w_r: the gather's backward must sum the ranks' partial gradients
        int total = 7; // uneven blocks over 3 ranks: 2, 2, 3
        Distributed.run(3, Duration.ofSeconds(60), world -> {
            try (MemoryScope scope = MemoryScope.open()) {
                int r = world.rank();
                int start = TensorParallel.rowStart(total, 3, r);
                int end = TensorParallel.rowStart(total, 3, r + 1);
                Tensor all = Tensor.randn(new Rng(9), 1.0, total, 3);
                Tensor x = all.rows(start, end).copy();
                x.requiresGrad(true);
                Tensor gathered = TensorParallel.gatherRowsSummingGradients(x, total, world);
                assertArrayEquals(all.toFloatArray(), gathered.toFloatArray());
                double c = r + 1; // Σ c = 6
                Tensor z = TensorParallel.reduceScatterRows(Ops.scale(gathered, c), world);
                assertArrayEquals(Ops.scale(x, 6.0).toFloatArray(), z.toFloatArray(), 1e-5f);
                Tensor w = Tensor.randn(new Rng(20 + r), 1.0, end - start, 3);
                Autograd.backward(Ops.sum(Ops.mul(z, w)));
                assertArrayEquals(Ops.scale(w, 6.0).toFloatArray(), x.grad().toFloatArray(), 1e-5f);
                return null;
            }
        });
    }

    @Test
    void betweenTheBlocksEachTpRankHoldsItsSliceOfTheTokensAndTheNormsGetWholeGradients() {
        ModelConfig cfg = config().nLayers(3).build(); // dense, MoE, dense
        Tensor tokens = Tensor.ofInts(new int[] {1, 4, 7, 2, 11, 0, 3, 5, 9, 8, 6, 10, 2, 2, 7}, 3, 5); // 15 tokens: 7 and 8 per rank
        Tensor targets = Tensor.ofInts(new int[] {4, 7, 2, 11, 0, 3, 5, 9, 8, 6, 10, 2, 2, 7, 1}, 3, 5);
        MoETransformer full = new MoETransformer(cfg);
        float fullLoss;
        try (MemoryScope scope = MemoryScope.open()) {
            Tensor loss = full.loss(tokens, targets).total();
            fullLoss = loss.item();
            Autograd.backward(loss);
        }
        Distributed.run(2, Duration.ofSeconds(60), world -> {
            MoETransformer model = new MoETransformer(cfg);
            GradientSync sync = Parallelize.apply(model, DeviceMesh.create(world, MeshSizes.defaults().dpShard(1).tp(2)));
            int[][] seen = new int[1][];
            model.layers().get(1).wrapForward((x, body) -> {
                seen[0] = x.shape();
                return body.apply(x);
            });
            try (MemoryScope scope = MemoryScope.open()) {
                Tensor loss = model.loss(tokens, targets).total();
                assertEquals(fullLoss, loss.item(), 1e-5 * Math.abs(fullLoss));
                Autograd.backward(loss);
            }
            int mine = TensorParallel.rowStart(15, 2, world.rank() + 1) - TensorParallel.rowStart(15, 2, world.rank());
            assertArrayEquals(new int[] {1, mine, 16}, seen[0], "the middle block's input on rank " + world.rank());
            sync.synchronize();
            var fullParams = full.namedParameters();
            model.namedParameters().forEach((name, p) -> {
                if (!name.contains("norm")) return;
                assertTrue(GradCheck.relativeError(p.grad().toDoubleArray(), fullParams.get(name).grad().toDoubleArray()) <= 1e-5,
                        name + ": the tp ranks' partial norm gradients must sum to the whole one");
            });
            return null;
        });
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
