package moe4j.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Tensor parallelism and sharded data parallelism composed with expert parallelism train like one rank on
 * the global batch: after 10 AdamW steps every parameter agrees with the single-rank run (norm-wise
 * relative difference ≤ 1e-4), for both expert layouts; and a checkpoint written on one mesh resumes on
 * another.
 */
class ParallelMeshTrainingTest {
    /** One dense and one MoE block (with a shared expert), so every tensor-parallel split is exercised. */
    static TrainConfig.Builder tiny(Path dir, boolean packed) {
        TrainConfig.Builder b = TrainerTest.tiny(dir);
        b.model().moeFrequency(2).moeSharedExperts(1).moePackedExperts(packed);
        return b;
    }

    record Mesh(int dpReplicate, int dpShard, int ep, int tp) {
        TrainConfig.Builder on(TrainConfig.Builder b) {
            return b.dpReplicate(dpReplicate).dpShard(dpShard).ep(ep).tp(tp);
        }

        @Override
        public String toString() {
            return "dp_replicate " + dpReplicate + " × dp_shard " + dpShard + " × ep " + ep + " × tp " + tp;
        }
    }

    static final Mesh[] MESHES = {
        new Mesh(1, 1, 1, 2), // tp alone: one data rank, the experts still replicated over tp
        new Mesh(1, 1, 2, 2),
        new Mesh(1, 2, 1, 2),
        new Mesh(1, 2, 2, 1),
        new Mesh(1, 2, 2, 2),
        new Mesh(2, 2, 1, 1),
    };

    @Test
    void everyMeshTrainsLikeOneRankOnTheGlobalBatch(@TempDir Path dir) throws Exception {
        for (boolean packed : new boolean[] {false, true}) {
            Trainer.Summary single = TrainerTest.train(tiny(dir.resolve("one-" + packed), packed).ep(1).build(), false);
            for (Mesh mesh : MESHES) {
                Path out = dir.resolve(mesh.dpReplicate() + "-" + mesh.dpShard() + "-" + mesh.ep() + "-" + mesh.tp() + "-" + packed);
                Trainer.Summary parallel = TrainerTest.train(mesh.on(tiny(out, packed)).build(), false);
                try {
                    TrainerTest.assertSameWeights(single.lastCheckpoint(), parallel.lastCheckpoint(), 1e-4);
                } catch (AssertionError e) {
                    throw new AssertionError(mesh + (packed ? ", packed" : ", list") + ": " + e.getMessage(), e);
                }
                assertEquals(single.finalLoss(), parallel.finalLoss(), 1e-4 * single.finalLoss(), mesh + " final loss");
            }
        }
    }

    /** moe_dedup from the model config through the trainer: EP beside tp (sequence-parallel slices), and EP with sharding. */
    @Test
    void theDeduplicatingDispatchTrainsLikeOneRankOnTheGlobalBatch(@TempDir Path dir) throws Exception {
        Trainer.Summary single = TrainerTest.train(tiny(dir.resolve("one"), true).ep(1).build(), false);
        for (Mesh mesh : new Mesh[] {new Mesh(1, 1, 2, 2), new Mesh(1, 2, 2, 1)}) {
            TrainConfig.Builder b = mesh.on(tiny(dir.resolve(mesh.dpShard() + "-" + mesh.ep() + "-" + mesh.tp()), true));
            b.model().moeDedup(true);
            Trainer.Summary parallel = TrainerTest.train(b.build(), false);
            try {
                TrainerTest.assertSameWeights(single.lastCheckpoint(), parallel.lastCheckpoint(), 1e-4);
            } catch (AssertionError e) {
                throw new AssertionError(mesh + ", deduplicated: " + e.getMessage(), e);
            }
            assertEquals(single.finalLoss(), parallel.finalLoss(), 1e-4 * single.finalLoss(), mesh + " final loss");
        }
    }

    @Test
    void aShardedRunWithTiedEmbeddingsTrainsLikeOneRank(@TempDir Path dir) throws Exception {
        // the embedding is used again by the output: it stays whole for the step, the blocks one at a time
        TrainConfig.Builder one = tiny(dir.resolve("one"), false).ep(1);
        one.model().tieEmbeddings(true).nLayers(3);
        TrainConfig.Builder sharded = tiny(dir.resolve("sharded"), false).dpShard(2).ep(2);
        sharded.model().tieEmbeddings(true).nLayers(3);
        Trainer.Summary single = TrainerTest.train(one.build(), false);
        Trainer.Footprint[] footprint = new Trainer.Footprint[1];
        TrainConfig cfg = sharded.build();
        Trainer.Summary parallel = moe4j.distributed.Distributed.run(cfg.worldSize(), java.time.Duration.ofSeconds(60),
                world -> Trainer.run(cfg, world, false, new Trainer.Listener() {
                    @Override
                    public void onStart(TrainConfig config, int rank, long firstStep, long parameters, double unigramEntropy, Trainer.Start start) {
                        if (rank == 0) footprint[0] = start.footprint();
                    }
                })).get(0);
        TrainerTest.assertSameWeights(single.lastCheckpoint(), parallel.lastCheckpoint(), 1e-4);
        assertEquals(single.finalLoss(), parallel.finalLoss(), 1e-4 * single.finalLoss());
        assertTrue(footprint[0].gatheredPeakBytes() < footprint[0].wholeParameterBytes(),
                footprint[0].gatheredPeakBytes() + " of " + footprint[0].wholeParameterBytes() + " bytes gathered at once");
        // what the startup line promised is what the steps held
        assertEquals(footprint[0].gatheredPeakBytes(), parallel.gatheredPeakBytes());
    }

    @Test
    void aCheckpointWrittenOnOneMeshResumesOnAnother(@TempDir Path dir) throws Exception {
        Trainer.Summary straight = TrainerTest.train(tiny(dir.resolve("straight"), true).ep(1).steps(6).build(), false);
        Mesh[][] moves = {
            {new Mesh(1, 2, 2, 2), new Mesh(1, 2, 1, 1)},
            {new Mesh(1, 1, 2, 2), new Mesh(2, 2, 1, 1)},
            // written one tensor at a time by a sharded run, read by a tensor-parallel one and by one rank
            {new Mesh(1, 2, 2, 1), new Mesh(1, 1, 2, 2)},
            {new Mesh(1, 2, 2, 1), new Mesh(1, 1, 1, 1)},
        };
        for (Mesh[] move : moves) {
            Path run = dir.resolve("moved-" + move[0] + " to " + move[1]);
            // stops (like a crash) right after the checkpoint of step 3
            TrainerTest.StopAt3.run(move[0].on(tiny(run, true)).steps(6).checkpointEvery(3).build());
            Trainer.Summary resumed = TrainerTest.train(move[1].on(tiny(run, true)).steps(6).checkpointEvery(3).build(), true);
            assertEquals(4, resumed.firstStep(), move[0] + " → " + move[1]);
            assertTrue(Files.exists(resumed.lastCheckpoint().resolve("optimizer.safetensors")));
            try {
                TrainerTest.assertSameWeights(straight.lastCheckpoint(), resumed.lastCheckpoint(), 1e-4);
            } catch (AssertionError e) {
                throw new AssertionError(move[0] + " → " + move[1] + ": " + e.getMessage(), e);
            }
        }
    }

    @Test
    void aShardedSaveHoldsOneParameterAtATimeNotTheModel(@TempDir Path dir) throws Exception {
        // four blocks, so that the model is several times its largest tensor
        for (Mesh mesh : new Mesh[] {new Mesh(1, 2, 2, 1), new Mesh(1, 2, 1, 2)}) {
            TrainConfig.Builder b = mesh.on(tiny(dir.resolve(mesh.toString()), false)).steps(2);
            b.model().nLayers(4);
            TrainConfig cfg = b.build();
            java.util.List<Long> peaks = moe4j.distributed.Distributed.run(cfg.worldSize(), java.time.Duration.ofSeconds(60), world -> {
                Trainer.run(cfg, world, false, new Trainer.Listener() {});
                return Checkpoint.lastSavePeakBytes(); // this rank's, for the checkpoint of the last step
            });
            Path ck = cfg.checkpointDir().resolve("step-00000002");
            long largest = 0;
            long total = 0;
            try (var weights = moe4j.tensor.SafeTensors.read(ck.resolve("model.safetensors"))) {
                for (String name : weights.names()) largest = Math.max(largest, weights.tensor(name).numel() * Float.BYTES);
            }
            total += Files.size(ck.resolve("model.safetensors")) + Files.size(ck.resolve("optimizer.safetensors"));
            long writer = peaks.get(0);
            System.out.printf("%s: the writer held at most %,d bytes at once while saving (largest tensor %,d, checkpoint %,d)%n",
                    mesh, writer, largest, total);
            // one parameter's assembled copies: its whole tensor from the shard pieces, its tp blocks and the
            // tensor they make, its experts from the EP group; at tp, ep <= 2 that is at most three times the
            // largest tensor, and far from the model and its optimizer state
            assertTrue(writer > 0, "the save assembled nothing on the writer");
            assertTrue(writer <= 3 * largest, writer + " bytes held, largest tensor " + largest);
            assertTrue(writer < total / 8, writer + " bytes held, checkpoint " + total);
        }
    }

    @Test
    void aConfigThatCannotBeSplitOverTpIsRefusedBeforeAnyRankStarts(@TempDir Path dir) {
        var heads = assertThrows(IllegalArgumentException.class, () -> tiny(dir, false).tp(4).ep(1).build());
        assertEquals("n_heads (4) and n_kv_heads (2) must be divisible by tp (4)", heads.getMessage());
        TrainConfig.Builder tied = tiny(dir, false).tp(2).ep(1);
        tied.model().tieEmbeddings(true);
        assertEquals("tensor parallelism needs untied embeddings (tie_embeddings = false)",
                assertThrows(IllegalArgumentException.class, tied::build).getMessage());
        TrainConfig.Builder vocab = tiny(dir, false).tp(2).ep(1);
        vocab.model().vocabSize(255);
        assertEquals("vocab_size (255) must be divisible by tp (2)", assertThrows(IllegalArgumentException.class, vocab::build).getMessage());
        TrainConfig.Builder scaled = tiny(dir, false).tp(2).ep(1);
        scaled.model().moeGradientScale(true);
        assertTrue(assertThrows(IllegalArgumentException.class, scaled::build).getMessage().startsWith("gradient scaling (moe_gradient_scale)"));
        assertEquals("tp must be >= 1, got 0", assertThrows(IllegalArgumentException.class, () -> tiny(dir, false).tp(0).build()).getMessage());
    }

    @Test
    void aShardedTensorParallelRunResumesBitForBit(@TempDir Path dir) throws Exception {
        Mesh mesh = new Mesh(1, 2, 1, 2);
        Path end = TrainerTest.train(mesh.on(tiny(dir.resolve("straight"), false)).steps(6).build(), false).lastCheckpoint();
        Path run = dir.resolve("resumed");
        TrainerTest.StopAt3.run(mesh.on(tiny(run, false)).steps(6).checkpointEvery(3).build());
        Trainer.Summary resumed = TrainerTest.train(mesh.on(tiny(run, false)).steps(6).checkpointEvery(3).build(), true);
        assertEquals(4, resumed.firstStep());
        for (String file : new String[] {"model.safetensors", "optimizer.safetensors"}) {
            assertArrayEquals(Files.readAllBytes(end.resolve(file)), Files.readAllBytes(resumed.lastCheckpoint().resolve(file)),
                    file + " after resume differs from an uninterrupted run");
        }
    }
}
