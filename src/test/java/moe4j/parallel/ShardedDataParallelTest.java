package moe4j.parallel;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import moe4j.autograd.Autograd;
import moe4j.autograd.GradCheck;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.Distributed;
import moe4j.distributed.MeshSizes;
import moe4j.nn.MoETransformer;
import moe4j.nn.ModelConfig;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

/**
 * Sharding over dp_shard: each rank keeps 1/N of every gradient and of the optimizer state, the traffic of a
 * step is exactly one reduce-scatter and one all-gather of every parameter, and the reduce-scattered pieces
 * are the pieces of the gradient the unsharded synchronisation produces.
 */
class ShardedDataParallelTest {
    static ModelConfig config() {
        // 23 = an odd vocabulary, so some tensors do not divide by the shard count and the last piece is padded
        return ModelConfig.builder().dim(16).nLayers(2).nHeads(4).nKvHeads(2).vocabSize(23).maxSeqLen(8).ffnHidden(24)
                .numExperts(4).moeTopK(2).moeFrequency(2).initStd(0.2).seed(5).build();
    }

    static Tensor ids(long seed, int rows, int vocab) {
        Rng rng = new Rng(seed);
        int[] v = new int[rows * 6];
        for (int i = 0; i < v.length; i++) v[i] = rng.nextInt(vocab);
        return Tensor.ofInts(v, rows, 6);
    }

    record Measured(long gatherBytes, long reduceScatterBytes, long analyticBytes, long stateBytes, long replicatedStateBytes,
                    Map<String, double[]> pieces, Map<String, double[]> replicatedGrads, int rank, int size) {}

    @Test
    void eachRankKeepsItsPieceAndMovesExactlyTheAnalyticBytes() {
        int n = 4;
        List<Measured> results = Distributed.run(n, Duration.ofSeconds(60), world -> {
            CountingGroup counting = new CountingGroup(world);
            MoETransformer model = new MoETransformer(config());
            GradientSync sync = Parallelize.apply(model, DeviceMesh.create(counting, MeshSizes.defaults().dpShard(n)));
            // the same rank's data through an unsharded model: the reference for its pieces
            MoETransformer plain = new MoETransformer(config());
            for (var moe : plain.moeLayers()) moe.router().setStatisticsGroup(world); // load statistics over the whole batch, as sharded
            assertTrue(sync.isSharded());
            long analytic = 0;
            for (Tensor p : plain.parameters()) { // the same shapes as the sharded model's whole parameters
                long piece = (p.numel() + n - 1) / n;
                long start = Math.min(p.numel(), world.rank() * piece);
                long end = Math.min(p.numel(), start + piece);
                analytic += (n - 1) * piece * 4; // reduce-scatter: one padded piece to each other rank
                analytic += (n - 1) * (end - start) * 4; // all-gather: my piece to each other rank
            }
            long gather0 = counting.gatherBytes.get();
            long scatter0 = counting.reduceScatterBytes.get();
            long stateBetweenSteps = sync.trainingStateBytes();
            Map<String, double[]> pieces = new java.util.TreeMap<>();
            Map<String, double[]> reference = new java.util.TreeMap<>();
            try (MemoryScope scope = MemoryScope.open()) {
                Tensor tokens = ids(1 + world.rank(), 2, 23);
                Tensor targets = ids(100 + world.rank(), 2, 23);
                sync.gatherParameters();
                Autograd.backward(model.loss(tokens, targets).total());
                sync.synchronize();
                sync.optimizerParameters().forEach((name, piece) -> pieces.put(name, piece.grad().toDoubleArray()));
                // released again: a forward without gathering first fails on the empty parameters
                assertEquals(0, model.parameterCount());
                // what the rank holds, counted from the tensors themselves: whole parameters (none), pieces,
                // their gradients, and the two AdamW moments an optimizer makes per piece
                long held = 0;
                for (Tensor p : model.parameters()) held += p.numel();
                for (Tensor piece : sync.optimizerParameters().values()) held += 3 * piece.numel() + piece.grad().numel();
                assertTrue(Math.abs(held * Float.BYTES - stateBetweenSteps) <= (long) model.parameters().size() * Float.BYTES,
                        "held " + held * Float.BYTES + " bytes, reported " + stateBetweenSteps);
                assertThrows(IllegalArgumentException.class, () -> model.forward(tokens));
                Autograd.backward(plain.loss(tokens, targets).total());
                for (var e : plain.namedParameters().entrySet()) {
                    Tensor g = e.getValue().grad();
                    world.allReduce(g, moe4j.distributed.ReduceOp.AVG);
                    reference.put(e.getKey(), g.toDoubleArray());
                }
            }
            long replicated = 0;
            for (Tensor p : plain.parameters()) replicated += 4 * p.numel() * Float.BYTES;
            return new Measured(counting.gatherBytes.get() - gather0, counting.reduceScatterBytes.get() - scatter0, analytic,
                    stateBetweenSteps, replicated, pieces, reference, world.rank(), n);
        });
        for (Measured m : results) {
            assertEquals(m.analyticBytes(), m.gatherBytes() + m.reduceScatterBytes(), "rank " + m.rank() + ": bytes moved per step");
            // every gradient piece is this rank's slice of the averaged full gradient
            m.pieces().forEach((name, piece) -> {
                double[] full = m.replicatedGrads().get(name);
                int len = (full.length + m.size() - 1) / m.size();
                int start = Math.min(full.length, m.rank() * len);
                double[] slice = java.util.Arrays.copyOfRange(full, start, Math.min(full.length, start + len));
                assertEquals(slice.length, piece.length, name);
                assertTrue(GradCheck.relativeError(piece, slice) <= 1e-5, name + ": piece differs from the averaged gradient");
            });
        }
        for (Measured m : results) {
            double share = (double) m.stateBytes() / m.replicatedStateBytes();
            System.out.printf("dp_shard %d, rank %d: parameter+gradient+optimizer bytes kept between steps %,d sharded vs %,d"
                    + " replicated (%.4f, 1/N = %.4f); bytes sent per step %,d (analytic %,d)%n", m.size(), m.rank(), m.stateBytes(),
                    m.replicatedStateBytes(), share, 1.0 / m.size(), m.gatherBytes() + m.reduceScatterBytes(), m.analyticBytes());
            // 1/N, plus at most one padding element per tensor in the gradient piece
            assertTrue(share <= 1.0 / m.size() + 0.01, "rank " + m.rank() + " keeps " + share + " of the replicated state");
        }
    }
}
