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
                    long peakGathered, long expectedPeak, long wholeModel, long plannedPeak, Map<String, double[]> pieces,
                    Map<String, double[]> replicatedGrads, int rank, int size) {}

    /**
     * The module a parameter is gathered with: the embedding, a block, the output, or "" for the rest (the
     * final norm; the embedding too when the output reuses it), which is gathered once for the whole step.
     */
    static String unitOf(String name, boolean tied) {
        if (name.startsWith("layers.")) return name.substring(0, name.indexOf('.', "layers.".length()));
        if (name.startsWith("output.")) return "output";
        if (name.startsWith("tok_embeddings.") && !tied) return "tok_embeddings";
        return "";
    }

    @Test
    void eachRankKeepsItsPieceAndMovesExactlyTheAnalyticBytes() {
        measure(false);
    }

    @Test
    void withTiedEmbeddingsTheEmbeddingStaysGatheredForTheStep() {
        measure(true);
    }

    private void measure(boolean tied) {
        int n = 4;
        // four blocks, so that one module and its neighbour are visibly less than the whole model
        ModelConfig config = config().toBuilder().nLayers(4).tieEmbeddings(tied).build();
        List<Measured> results = Distributed.run(n, Duration.ofSeconds(60), world -> {
            CountingGroup counting = new CountingGroup(world);
            MoETransformer model = new MoETransformer(config);
            GradientSync sync = Parallelize.apply(model, DeviceMesh.create(counting, MeshSizes.defaults().dpShard(n)));
            // the same rank's data through an unsharded model: the reference for its pieces
            MoETransformer plain = new MoETransformer(config);
            for (var moe : plain.moeLayers()) moe.router().setStatisticsGroup(world); // load statistics over the whole batch, as sharded
            assertTrue(sync.isSharded());
            // the schedule, counted from the unsharded model's shapes: the last module (the output, or the last
            // block when the embedding is tied) and the rest are gathered once, every other module twice (forward,
            // backward); the peak holds the rest and the largest two neighbouring modules
            List<String> order = new java.util.ArrayList<>();
            Map<String, Long> unitBytes = new java.util.LinkedHashMap<>();
            plain.namedParameters().forEach((name, p) -> {
                String unit = unitOf(name, tied);
                if (!unit.isEmpty() && !order.contains(unit)) order.add(unit);
                unitBytes.merge(unit, p.numel() * Float.BYTES, Long::sum);
            });
            String last = order.get(order.size() - 1);
            long pair = 0;
            for (int i = 0; i + 1 < order.size(); i++) pair = Math.max(pair, unitBytes.get(order.get(i)) + unitBytes.get(order.get(i + 1)));
            long expectedPeak = unitBytes.getOrDefault("", 0L) + pair;
            long analytic = 0;
            long wholeModel = 0;
            for (var e : plain.namedParameters().entrySet()) { // the same shapes as the sharded model's whole parameters
                Tensor p = e.getValue();
                String unit = unitOf(e.getKey(), tied);
                int gathers = unit.isEmpty() || unit.equals(last) ? 1 : 2;
                long piece = (p.numel() + n - 1) / n;
                long start = Math.min(p.numel(), world.rank() * piece);
                long end = Math.min(p.numel(), start + piece);
                analytic += (n - 1) * piece * 4; // reduce-scatter: one padded piece to each other rank
                analytic += gathers * (n - 1) * (end - start) * 4; // all-gather: my piece to each other rank, per gather
                wholeModel += p.numel() * Float.BYTES;
            }
            long gather0 = counting.gatherBytes.get();
            long scatter0 = counting.reduceScatterBytes.get();
            long stateBetweenSteps = sync.trainingStateBytes();
            sync.resetPeakGatheredParameterBytes();
            Map<String, double[]> pieces = new java.util.TreeMap<>();
            Map<String, double[]> reference = new java.util.TreeMap<>();
            try (MemoryScope scope = MemoryScope.open()) {
                Tensor tokens = ids(1 + world.rank(), 2, 23);
                Tensor targets = ids(100 + world.rank(), 2, 23);
                // no gathering beforehand: each module gathers its own parameters
                Autograd.backward(model.loss(tokens, targets).total());
                sync.synchronize();
                sync.optimizerParameters().forEach((name, piece) -> pieces.put(name, piece.grad().toDoubleArray()));
                // released again: the whole parameters have no memory, and reading one fails
                for (Tensor p : model.parameters()) assertFalse(p.hasStorage());
                assertThrows(IllegalStateException.class, () -> model.parameters().get(0).toFloatArray());
                // what the rank holds, counted from the tensors themselves: pieces, their gradients, and the two
                // AdamW moments an optimizer makes per piece
                long held = 0;
                for (Tensor piece : sync.optimizerParameters().values()) held += 3 * piece.numel() + piece.grad().numel();
                assertTrue(Math.abs(held * Float.BYTES - stateBetweenSteps) <= (long) model.parameters().size() * Float.BYTES,
                        "held " + held * Float.BYTES + " bytes, reported " + stateBetweenSteps);
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
                    stateBetweenSteps, replicated, sync.peakGatheredParameterBytes(), expectedPeak, wholeModel,
                    sync.plannedPeakGatheredParameterBytes(), pieces, reference, world.rank(), n);
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
            // whole parameters exist one module (and the next, prefetched) at a time, not the whole model
            assertEquals(m.expectedPeak(), m.peakGathered(), "rank " + m.rank() + ": peak of gathered parameter bytes");
            assertEquals(m.expectedPeak(), m.plannedPeak(), "rank " + m.rank() + ": the peak the trainer prints");
            assertTrue(m.peakGathered() < m.wholeModel(), m.peakGathered() + " of " + m.wholeModel());
        }
        for (Measured m : results) {
            double share = (double) m.stateBytes() / m.replicatedStateBytes();
            System.out.printf("dp_shard %d%s, rank %d: parameter+gradient+optimizer bytes kept between steps %,d sharded vs %,d"
                    + " replicated (%.4f, 1/N = %.4f); bytes sent per step %,d (analytic %,d); whole parameters gathered at"
                    + " once: peak %,d of %,d%n", m.size(), tied ? " (tied embeddings)" : "", m.rank(), m.stateBytes(),
                    m.replicatedStateBytes(), share, 1.0 / m.size(), m.gatherBytes() + m.reduceScatterBytes(), m.analyticBytes(),
                    m.peakGathered(), m.wholeModel());
            // 1/N, plus at most one padding element per tensor in the gradient piece
            assertTrue(share <= 1.0 / m.size() + 0.01, "rank " + m.rank() + " keeps " + share + " of the replicated state");
        }
    }

    @Test
    void twoForwardsBeforeOneBackwardAreRefusedNotMisreduced() {
        var e = assertThrows(RuntimeException.class, () -> Distributed.run(2, Duration.ofSeconds(60), world -> {
            MoETransformer model = new MoETransformer(config());
            Parallelize.apply(model, DeviceMesh.create(world, MeshSizes.defaults().dpShard(2)));
            try (MemoryScope scope = MemoryScope.open()) {
                Tensor a = model.loss(ids(1, 2, 23), ids(2, 2, 23)).total();
                Tensor b = model.loss(ids(3, 2, 23), ids(4, 2, 23)).total();
                Autograd.backward(moe4j.ops.Ops.add(a, b));
            }
            return null;
        }));
        Throwable cause = e;
        while (cause != null && !(cause instanceof IllegalStateException ise && ise.getMessage().contains("one forward per backward"))) {
            cause = cause.getCause();
        }
        assertNotNull(cause, "expected the refusal, got " + e);
    }
}
