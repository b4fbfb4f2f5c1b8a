package moe4j.hf;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import moe4j.autograd.Autograd;
import moe4j.data.Batch;
import moe4j.data.DataLoader;
import moe4j.data.Datasets;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.MeshSizes;
import moe4j.distributed.Distributed;
import moe4j.nn.MoETransformer;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;
import moe4j.train.TrainConfig;
import moe4j.train.Trainer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Saving in the Hugging Face layout: what moe4j writes reads back into the same model (the RoPE row order
 * and the expert names undone exactly), from one rank or gathered from expert-parallel ranks; and
 * {@code train --init-from} starts from the folder's weights (its first loss is the loaded model's loss on
 * the first batch) and leaves a loadable folder of the trained model.
 */
class HfSaveTest {
    @ParameterizedTest
    @ValueSource(strings = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe"})
    void savedFolderReadsBackBitForBit(String family, @TempDir Path dir) throws Exception {
        Path src = HfFixtures.dir(family);
        MoETransformer original = HfCheckpoint.load(src);
        HfCheckpoint.save(original, HfConfig.read(src), dir, src, null);
        assertTrue(Files.isRegularFile(dir.resolve("tokenizer.json")));
        MoETransformer reread = HfCheckpoint.load(dir);
        var a = original.namedParameters();
        var b = reread.namedParameters();
        assertEquals(a.keySet(), b.keySet());
        for (String name : a.keySet()) assertArrayEquals(a.get(name).toFloatArray(), b.get(name).toFloatArray(), name);
        // and the saved tensors carry transformers' values: same bytes as the source file for an fp32 source
        try (HfWeightFiles saved = new HfWeightFiles(dir); HfWeightFiles source = new HfWeightFiles(src)) {
            for (String name : source.names()) {
                if (family.equals("qwen3_moe") && name.equals("lm_head.weight")) continue; // tied: not stored by moe4j
                assertTrue(saved.contains(name), "saved folder lacks " + name);
                try (MemoryScope scope = MemoryScope.open()) {
                    assertArrayEquals(source.f32(name).toFloatArray(), saved.f32(name).toFloatArray(), name);
                }
            }
        }
    }

    @Test
    void expertParallelRanksSaveTheWholeModel(@TempDir Path dir) {
        Path src = HfFixtures.dir("qwen2_moe");
        HfConfig config = HfConfig.read(src);
        try (HfWeightFiles files = new HfWeightFiles(src)) {
            Distributed.run(4, Duration.ofSeconds(60), world -> {
                MoETransformer model = HfCheckpoint.load(config, files, DeviceMesh.create(world, MeshSizes.defaults().ep(4)));
                HfCheckpoint.save(model, config, dir, src, world);
                return null;
            });
        }
        MoETransformer reread = HfCheckpoint.load(dir);
        Tensor ids = HfFixtures.expected("qwen2_moe", "input_ids");
        float[] expected = HfFixtures.expected("qwen2_moe", "logits").toFloatArray();
        assertTrue(HfFixtures.maxAbsDiff(HfForwardTest.logits(reread, ids), expected) <= HfForwardTest.TOLERANCE);
    }

    @Test
    void trainInitFromStartsAtTheFolderAndSavesTheResult(@TempDir Path dir) {
        Path src = HfFixtures.dir("qwen2_moe");
        TrainConfig cfg = TrainConfig.defaults().initFrom(src).ep(2).dpShard(1).steps(5).batchSize(4).seqLen(16)
                .lr(1e-3).data("synthetic").seed(3).outputDir(dir.resolve("out")).checkpointDir(dir.resolve("ck")).checkpointEvery(2)
                .keepLast(2).build();
        List<Trainer.Summary> ranks = Distributed.run(2, Duration.ofSeconds(120), world -> Trainer.run(cfg, world, false, new Trainer.Listener() {}));
        double firstCe = ranks.get(0).history().get(0).crossEntropy();

        // the loaded model's cross-entropy on the same first batch (the whole global batch, mean over tokens)
        MoETransformer loaded = HfCheckpoint.load(src);
        DataLoader loader = new DataLoader(Datasets.open(cfg.data(), cfg.seed()), cfg.globalBatch(), cfg.seqLen());
        double expectedCe;
        try (MemoryScope scope = MemoryScope.open()) {
            Batch batch = loader.next();
            expectedCe = Autograd.noGrad(() -> loaded.loss(batch.inputs(), batch.targets()).crossEntropy()).item();
        }
        assertEquals(expectedCe, firstCe, 1e-4, "step 1 runs the folder's model");

        Path saved = dir.resolve("out").resolve("hf");
        assertTrue(Files.isRegularFile(saved.resolve("model.safetensors")));
        // checkpoints of steps 2, 4 and 5, the newest two kept: the Hugging Face copies follow them
        assertTrue(Files.isDirectory(dir.resolve("ck").resolve("hf-step-000004")));
        assertTrue(Files.isDirectory(dir.resolve("ck").resolve("hf-step-000005")));
        assertFalse(Files.exists(dir.resolve("ck").resolve("step-00000002")));
        assertFalse(Files.exists(dir.resolve("ck").resolve("hf-step-000002")), "the copy of a pruned checkpoint is pruned with it");
        MoETransformer trained = HfCheckpoint.load(saved);
        Tensor ids = HfFixtures.expected("qwen2_moe", "input_ids");
        double moved = HfFixtures.maxAbsDiff(HfForwardTest.logits(trained, ids), HfForwardTest.logits(loaded, ids));
        assertTrue(moved > 1e-3, "training changed the saved model, max logit change " + moved);
    }

    @Test
    void aShardedRunWritesTheSameHuggingFaceFolderAsOneRank(@TempDir Path dir) throws Exception {
        // the sharded copy is assembled one tensor at a time from the pieces and experts of four ranks
        Path src = HfFixtures.dir("qwen2_moe");
        Path[] saved = new Path[2];
        int i = 0;
        for (int[] mesh : new int[][] {{1, 1}, {2, 2}}) {
            Path out = dir.resolve("out-" + mesh[0] + "x" + mesh[1]);
            TrainConfig cfg = TrainConfig.defaults().initFrom(src).dpShard(mesh[0]).ep(mesh[1]).steps(2).batchSize(4).seqLen(16)
                    .lr(1e-3).data("synthetic").seed(3).outputDir(out).build();
            Distributed.run(cfg.worldSize(), Duration.ofSeconds(120), world -> Trainer.run(cfg, world, false, new Trainer.Listener() {}));
            saved[i++] = out.resolve("hf");
        }
        try (var one = moe4j.tensor.SafeTensors.read(saved[0].resolve("model.safetensors"));
             var sharded = moe4j.tensor.SafeTensors.read(saved[1].resolve("model.safetensors"))) {
            assertEquals(one.names(), sharded.names());
            for (String n : one.names()) {
                double err = moe4j.autograd.GradCheck.relativeError(one.tensor(n).toDoubleArray(), sharded.tensor(n).toDoubleArray());
                assertTrue(err <= 1e-4, n + ": relative difference " + err);
            }
        }
    }
}
