package moe4j.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import moe4j.autograd.GradCheck;
import moe4j.distributed.Distributed;
import moe4j.tensor.DType;
import moe4j.tensor.SafeTensors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class TrainerTest {
    /** A tiny model that trains in a fraction of a second per step. */
    static TrainConfig.Builder tiny(Path dir) {
        TrainConfig.Builder b = TrainConfig.defaults().steps(10).batchSize(8).seqLen(16).lr(3e-3).warmupSteps(2)
                .logEvery(1000).outputDir(dir.resolve("out")).checkpointDir(dir.resolve("ck"));
        b.model().dim(32).nLayers(2).nHeads(4).nKvHeads(2).maxSeqLen(32).numExperts(4).moeTopK(2)
                .ffnHidden(64).moeExpertFfnMultiplier(0.5).seed(3);
        return b;
    }

    static Trainer.Summary train(TrainConfig cfg, boolean resume) {
        return Distributed.run(cfg.worldSize(), Duration.ofSeconds(60), world -> Trainer.run(cfg, world, resume, new Trainer.Listener() {}))
                .get(0);
    }

    static void assertSameWeights(Path a, Path b, double tol) throws Exception {
        try (var x = SafeTensors.read(a.resolve("model.safetensors")); var y = SafeTensors.read(b.resolve("model.safetensors"))) {
            assertEquals(x.names(), y.names());
            for (String n : x.names()) {
                double[] u = x.tensorAs(n, DType.F32).toDoubleArray();
                double[] v = y.tensorAs(n, DType.F32).toDoubleArray();
                double err = GradCheck.relativeError(u, v);
                assertTrue(err <= tol, n + ": relative difference " + err + " > " + tol);
            }
        }
    }

    @Test
    void anyMeshTrainsLikeOneRankOnTheGlobalBatch(@TempDir Path dir) throws Exception {
        for (boolean packed : new boolean[] {false, true}) {
            TrainConfig.Builder one = tiny(dir.resolve("one-" + packed)).ep(1);
            one.model().moePackedExperts(packed);
            Trainer.Summary single = train(one.build(), false);
            TrainConfig.Builder mesh = tiny(dir.resolve("mesh-" + packed)).ep(2).dpShard(2);
            mesh.model().moePackedExperts(packed);
            Trainer.Summary parallel = train(mesh.build(), false);
            assertSameWeights(single.lastCheckpoint(), parallel.lastCheckpoint(), 1e-4);
            assertEquals(single.finalLoss(), parallel.finalLoss(), 1e-4 * single.finalLoss());
        }
    }

    /**
     * grad_accum 2 (two micro-batches of 4 sequences per step) against one pass over the batch of 8: the same
     * update, within float rounding (1e-5), on one rank and with ep 2, both routers. The load-balancing loss,
     * capacity drops and gradient scaling are off: they depend on the whole batch's counts, so with them a
     * micro-batch's gradient is not a share of the batch's (as in any framework).
     */
    @Test
    void gradientAccumulationTrainsLikeTheWholeBatch(@TempDir Path dir) throws Exception {
        for (String router : new String[] {"softmax_topk", "sigmoid_topk"}) {
            for (int ep : new int[] {1, 2}) {
                Trainer.Summary[] runs = new Trainer.Summary[2];
                for (int accum = 1; accum <= 2; accum++) {
                    TrainConfig.Builder b = tiny(dir.resolve(router + "-ep" + ep + "-a" + accum)).ep(ep).steps(4).gradAccum(accum);
                    b.model().moeRouter(router).moeAuxLossWeight(0).moeSequenceAuxLossWeight(0).moeGradientScale(false);
                    runs[accum - 1] = train(b.build(), false);
                }
                String what = router + " ep " + ep;
                for (int i = 0; i < 4; i++) {
                    double whole = runs[0].history().get(i).loss(), micro = runs[1].history().get(i).loss();
                    assertEquals(whole, micro, 1e-5 * whole, what + " step " + (i + 1));
                }
                assertSameWeights(runs[0].lastCheckpoint(), runs[1].lastCheckpoint(), 1e-5);
                assertEquals(runs[0].history().get(3).gradNorm(), runs[1].history().get(3).gradNorm(), 1e-4, what);
            }
        }
    }

    @Test
    void gradientAccumulationResumesAcrossMicroBatchCounts(@TempDir Path dir) throws Exception {
        // checkpoints count data in optimizer steps: a run saved with grad_accum 2 resumes with grad_accum 1 on the
        // batches the uninterrupted run would have seen next
        TrainConfig.Builder straight = tiny(dir.resolve("straight")).ep(1).steps(6).gradAccum(1);
        straight.model().moeAuxLossWeight(0).moeGradientScale(false);
        Trainer.Summary whole = train(straight.build(), false);
        TrainConfig.Builder first = tiny(dir.resolve("split")).ep(1).steps(6).checkpointEvery(3).gradAccum(2);
        first.model().moeAuxLossWeight(0).moeGradientScale(false);
        StopAt3.run(first.build());
        TrainConfig.Builder rest = tiny(dir.resolve("split")).ep(1).steps(6).checkpointEvery(3).gradAccum(1);
        rest.model().moeAuxLossWeight(0).moeGradientScale(false);
        Trainer.Summary resumed = train(rest.build(), true);
        assertEquals(4, resumed.firstStep());
        assertSameWeights(whole.lastCheckpoint(), resumed.lastCheckpoint(), 1e-5);
    }

    @Test
    void gradientAccumulationRefusesBatchesItCannotSplit(@TempDir Path dir) {
        var e = assertThrows(IllegalArgumentException.class, () -> tiny(dir).ep(2).gradAccum(3).build());
        assertTrue(e.getMessage().contains("grad_accum × data ranks (3 × 2 = 6)"), e.getMessage());
        var s = assertThrows(IllegalArgumentException.class, () -> tiny(dir).ep(1).dpShard(2).gradAccum(2).build());
        assertTrue(s.getMessage().contains("grad_accum > 1 with dp_shard > 1"), s.getMessage());
    }

    @Test
    void resumeGivesTheSameWeightsBitForBit(@TempDir Path dir) throws Exception {
        TrainConfig straight = tiny(dir.resolve("straight")).ep(2).steps(6).build();
        Path end = train(straight, false).lastCheckpoint();

        TrainConfig.Builder first = tiny(dir.resolve("resumed")).ep(2).steps(6).checkpointEvery(3);
        // stop after step 3 by running a 3-step prefix with the same schedule length: same LR at every step
        TrainConfig full = first.build();
        TrainConfig prefix = new TrainConfig(full.model(), 6, full.globalBatch(), full.gradAccum(), full.seqLen(), full.lr(), full.minLr(),
                full.warmupSteps(), full.weightDecay(), full.beta1(), full.beta2(), full.eps(), full.gradClip(), full.seed(),
                full.data(), full.ep(), full.dpShard(), full.dpReplicate(), full.tp(), full.backend(), full.device(), full.dtype(), full.checkpointDir(), 3,
                full.keepLast(), full.outputDir(), full.logEvery(), full.initFrom());
        StopAt3.run(prefix);
        Trainer.Summary resumed = train(full, true);
        assertEquals(4, resumed.firstStep());
        byte[] a = Files.readAllBytes(end.resolve("model.safetensors"));
        byte[] b = Files.readAllBytes(resumed.lastCheckpoint().resolve("model.safetensors"));
        assertArrayEquals(a, b, "weights after resume differ from an uninterrupted run");
        assertArrayEquals(Files.readAllBytes(end.resolve("optimizer.safetensors")),
                Files.readAllBytes(resumed.lastCheckpoint().resolve("optimizer.safetensors")));
    }

    /** Runs a config but aborts (like a crash) right after the checkpoint of step 3. */
    static final class StopAt3 {
        static void run(TrainConfig cfg) {
            RuntimeException stop = assertThrows(RuntimeException.class, () -> Distributed.run(cfg.worldSize(), Duration.ofSeconds(60),
                    world -> Trainer.run(cfg, world, false, new Trainer.Listener() {
                        @Override
                        public void onCheckpoint(int rank, Path checkpoint) {
                            throw new IllegalStateException("simulated crash after " + checkpoint.getFileName());
                        }
                    })));
            assertTrue(String.valueOf(stop.getMessage()).contains("simulated crash") || stop.getCause() != null, stop.toString());
        }
    }

    @Test
    void resumeAcceptsSettingsNewerThanTheCheckpointAndOtherExchangeSettings(@TempDir Path dir) throws Exception {
        TrainConfig.Builder b = tiny(dir).ep(2).steps(2);
        Path ck = train(b.build(), false).lastCheckpoint();
        // a checkpoint written before moe_wire and moe_dedup existed: its model settings lack both
        Path state = ck.resolve(Checkpoint.STATE_FILE);
        var json = com.google.gson.JsonParser.parseString(Files.readString(state)).getAsJsonObject();
        var config = com.google.gson.JsonParser.parseString(json.get("config").getAsString()).getAsJsonObject();
        config.getAsJsonObject("model").remove("moeWire");
        config.getAsJsonObject("model").remove("moeDedup");
        json.addProperty("config", config.toString());
        Files.writeString(state, json.toString());
        TrainConfig.Builder more = tiny(dir).ep(2).steps(3);
        more.model().moeDedup(true); // how rows travel may change between runs, like ep itself
        assertEquals(3, train(more.build(), true).firstStep());
        TrainConfig.Builder other = tiny(dir).ep(2).steps(4);
        other.model().dim(48);
        var e = assertThrows(RuntimeException.class, () -> train(other.build(), true));
        assertTrue(String.valueOf(e.getMessage()).contains("model.dim: checkpoint 32, now 48")
                || String.valueOf(e.getCause()).contains("model.dim: checkpoint 32, now 48"), e.toString());
    }

    @Test
    void checkpointsStoreTheRouterByItsConfigSpelling(@TempDir Path dir) {
        // checkpoints written while the router kind was a plain string hold "sigmoid_topk": they must still resume
        TrainConfig.Builder b = tiny(dir).steps(1);
        b.model().moeRouter("sigmoid_topk");
        Path ck = train(b.build(), false).lastCheckpoint();
        var stored = com.google.gson.JsonParser.parseString(Checkpoint.storedConfig(ck)).getAsJsonObject();
        assertEquals("sigmoid_topk", stored.getAsJsonObject("model").get("moeRouter").getAsString());
    }

    @Test
    void checkpointWrittenAtEpTwoLoadsAtEpOne(@TempDir Path dir) throws Exception {
        TrainConfig ep2 = tiny(dir.resolve("a")).ep(2).steps(3).build();
        Path ck = train(ep2, false).lastCheckpoint();
        // resume the same run on one rank for more steps: the EP-2 checkpoint loads into an unpartitioned model
        TrainConfig.Builder b = tiny(dir.resolve("a")).ep(1).steps(5);
        Trainer.Summary s = train(b.build(), true);
        assertEquals(4, s.firstStep());
        assertTrue(Files.exists(s.lastCheckpoint().resolve("model.safetensors")));
        assertNotEquals(ck, s.lastCheckpoint());
    }

    @Test
    void lossFallsWellBelowTheUnigramEntropy(@TempDir Path dir) {
        TrainConfig.Builder b = tiny(dir).ep(2).steps(60).batchSize(16).seqLen(32).lr(1e-2).warmupSteps(5).checkpointDir(null);
        b.model().dim(64).ffnHidden(128);
        Trainer.Summary s = train(b.build(), false);
        // synthetic data: unigram entropy ≈ 5.3 nats; a model that learned nothing stays there
        assertTrue(s.finalCrossEntropy() < 4.0, "cross-entropy after 60 steps: " + s.finalCrossEntropy());
        List<StepMetrics> h = s.history();
        assertTrue(h.get(h.size() - 1).loss() < h.get(0).loss() - 1.0);
    }

    @Test
    void configsThatDoNotAddUpAreClearErrors(@TempDir Path dir) {
        var e1 = assertThrows(IllegalArgumentException.class, () -> tiny(dir).ep(3).build());
        assertEquals("num_experts (4) must be divisible by ep (3)", e1.getMessage());
        TrainConfig.Builder dense = tiny(dir).ep(2);
        dense.model().numExperts(0);
        var e2 = assertThrows(IllegalArgumentException.class, dense::build);
        assertEquals("ep > 1 requires an MoE model (num_experts > 0)", e2.getMessage());
        var e3 = assertThrows(IllegalArgumentException.class, () -> tiny(dir).batchSize(6).ep(4).build());
        assertTrue(e3.getMessage().contains("batch_size (6) must be divisible"), e3.getMessage());
        TrainConfig.Builder k = tiny(dir);
        k.model().moeTopK(5);
        var e4 = assertThrows(IllegalArgumentException.class, k::build);
        assertEquals("moe_top_k (5) must be <= num_experts (4)", e4.getMessage());
        var e5 = assertThrows(IllegalArgumentException.class, () -> Distributed.run(3, w -> Trainer.run(tiny(dir).ep(2).build(), w, false, new Trainer.Listener() {})));
        assertTrue(String.valueOf(e5.getMessage()).contains("do not match world_size (3)") || e5.getCause().getMessage().contains("do not match world_size (3)"), e5.toString());
    }

    @Test
    void badDataAndCheckpointsAreClearErrors(@TempDir Path dir) throws Exception {
        // token ids beyond the model's vocabulary
        Path tokens = dir.resolve("t.u32");
        java.nio.ByteBuffer buf = java.nio.ByteBuffer.allocate(4 * 4000).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < 4000; i++) buf.putInt(i % 300);
        Files.write(tokens, buf.array());
        TrainConfig.Builder big = tiny(dir).ep(1).data("tokens:" + tokens);
        var e1 = assertThrows(RuntimeException.class, () -> train(big.build(), false));
        assertTrue(messages(e1).contains("vocab_size (256)"), messages(e1));

        // unreadable data
        var e2 = assertThrows(RuntimeException.class, () -> train(tiny(dir).ep(1).data("text:" + dir.resolve("missing.txt")).build(), false));
        assertTrue(messages(e2).contains("missing.txt"), messages(e2));

        // resume without a checkpoint
        var e3 = assertThrows(RuntimeException.class, () -> train(tiny(dir.resolve("empty")).ep(1).build(), true));
        assertTrue(messages(e3).contains("no checkpoint found"), messages(e3));

        // a truncated checkpoint file
        Path ck = train(tiny(dir.resolve("c")).ep(1).steps(2).build(), false).lastCheckpoint();
        Path weights = ck.resolve("model.safetensors");
        byte[] bytes = Files.readAllBytes(weights);
        Files.write(weights, java.util.Arrays.copyOf(bytes, bytes.length / 2));
        var e4 = assertThrows(RuntimeException.class, () -> train(tiny(dir.resolve("c")).ep(1).steps(4).build(), true));
        assertTrue(messages(e4).contains("corrupt"), messages(e4));
    }

    static String messages(Throwable t) {
        StringBuilder sb = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) sb.append(c.getMessage()).append(" | ");
        for (Throwable s : t.getSuppressed()) sb.append(messages(s));
        return sb.toString();
    }
}
