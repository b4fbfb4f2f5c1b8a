package moe4j.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.Distributed;
import moe4j.distributed.MeshSizes;
import moe4j.nn.MoEConfig;
import moe4j.nn.MoEMLP;
import moe4j.nn.Module;
import moe4j.nn.RouterKind;
import moe4j.parallel.ExpertParallel;
import moe4j.tensor.Rng;
import moe4j.tensor.SafeTensors;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class CheckpointTest {
    static final class Stack extends Module {
        Stack(boolean packed) {
            MoEConfig c = MoEConfig.builder(6, 5, 8, 2).packed(packed).router(RouterKind.SIGMOID_TOPK).seed(1).build();
            registerModule("layers.0.moe", MoEMLP.build(c));
            registerModule("layers.1.moe", MoEMLP.build(c.toBuilder().seed(2).build()));
        }
    }

    /** Fills every parameter and moment with values that depend only on the global name and position. */
    static void fill(Module model, AdamW opt) {
        Map<String, Tensor> names = new TreeMap<>(model.namedParameters());
        names.forEach((name, t) -> {
            Rng rng = new Rng(name.hashCode());
            for (long i = 0; i < t.numel(); i++) t.set(i, (float) rng.nextGaussian());
            opt.expAvg().get(name).fill(0.5f);
            opt.expAvgSq().get(name).fill(0.25f);
        });
    }

    static AdamW adam(Module m) {
        return new AdamW(m.namedParameters(), Set.of(), 0.9, 0.95, 1e-8, 0.1);
    }

    @Test
    void writtenAtEpFourLoadsAtEpTwoAndOne(@TempDir Path dir) throws Exception {
        for (boolean packed : new boolean[] {false, true}) {
            Path ckDir = dir.resolve("packed-" + packed);
            // reference: the unpartitioned model with the same deterministic contents
            Stack full = new Stack(packed);
            AdamW fullOpt = adam(full);
            Distributed.run(4, world -> {
                Stack model = new Stack(packed);
                ExpertParallel.apply(model, DeviceMesh.create(world, MeshSizes.defaults().ep(4)));
                AdamW opt = adam(model);
                // contents: copy the full model's values into this rank's slice via a global dict
                Map<String, Tensor> global = new TreeMap<>(full.namedParameters());
                moe4j.parallel.GlobalStateDict.scatter(model, global, model.namedParameters(), "test");
                for (var e : opt.expAvg().entrySet()) e.getValue().fill(0.5f);
                for (var e : opt.expAvgSq().entrySet()) e.getValue().fill(0.25f);
                var routers = Checkpoint.routerState(model);
                Checkpoint.save(ckDir, model, opt, new Checkpoint.TrainState(7, 7, 42, "run-a", "{}", routers[0], routers[1]), world, 0);
                return null;
            });
            Path latest = Checkpoint.latest(ckDir);
            assertEquals("step-00000007", latest.getFileName().toString());
            try (var st = SafeTensors.read(latest.resolve("model.safetensors"))) {
                assertEquals(new TreeMap<>(full.namedParameters()).keySet(), new java.util.TreeSet<>(st.names()),
                        "experts stored under global names, like the unpartitioned model");
                for (String n : st.names()) {
                    assertArrayEquals(full.namedParameters().get(n).toFloatArray(), st.tensorAs(n, moe4j.tensor.DType.F32).toFloatArray(), n);
                }
            }
            for (int p : new int[] {2, 1}) {
                List<Boolean> ok = Distributed.run(p, world -> {
                    Stack model = new Stack(packed);
                    if (p > 1) ExpertParallel.apply(model, DeviceMesh.create(world, MeshSizes.defaults().ep(p)));
                    for (Tensor t : model.parameters()) t.fill(0f);
                    AdamW opt = adam(model);
                    Checkpoint.TrainState s = Checkpoint.load(latest, model, opt);
                    assertEquals(7, s.step());
                    assertEquals(42, s.rngState());
                    Map<String, Tensor> expectedGlobal = full.namedParameters();
                    for (var e : model.namedParameters().entrySet()) {
                        Tensor expected = expectedGlobal.get(e.getKey());
                        if (e.getKey().endsWith("_w") && p > 1) {
                            MoEMLP moe = (MoEMLP) model.namedModules().get(e.getKey().substring(0, e.getKey().lastIndexOf('.')));
                            expected = expected.rows(moe.localExpertStart(), moe.localExpertStart() + moe.numLocalExperts());
                        }
                        assertArrayEquals(expected.toFloatArray(), e.getValue().toFloatArray(), e.getKey());
                        assertEquals(0.5f, opt.expAvg().get(e.getKey()).get(0));
                    }
                    return true;
                });
                assertEquals(p, ok.size());
            }
        }
    }

    @Test
    void corruptionAndMismatchAreClearErrors(@TempDir Path dir) throws Exception {
        Stack model = new Stack(true);
        AdamW opt = adam(model);
        fill(model, opt);
        var routers = Checkpoint.routerState(model);
        Path ck = Checkpoint.save(dir, model, opt, new Checkpoint.TrainState(3, 3, 1, "run-a", "{}", routers[0], routers[1]), null, 0);
        assertFalse(Files.list(dir).anyMatch(p -> p.getFileName().toString().contains(".tmp")), "no temporary files left");

        // a flipped byte in the weights
        Path weights = ck.resolve("model.safetensors");
        byte[] bytes = Files.readAllBytes(weights);
        bytes[bytes.length - 1] ^= 1;
        Files.write(weights, bytes);
        var e = assertThrows(IllegalArgumentException.class, () -> Checkpoint.load(ck, new Stack(true), adam(new Stack(true))));
        assertTrue(e.getMessage().contains("corrupt") && e.getMessage().contains("model.safetensors"), e.getMessage());

        // a model that does not match (list layout instead of packed)
        Path ck2 = Checkpoint.save(dir.resolve("b"), model, opt, new Checkpoint.TrainState(4, 4, 1, "run-a", "{}", routers[0], routers[1]), null, 0);
        var e2 = assertThrows(IllegalArgumentException.class, () -> Checkpoint.load(ck2, new Stack(false), null));
        assertTrue(e2.getMessage().contains("does not match the model"), e2.getMessage());

        // not a checkpoint at all
        var e3 = assertThrows(IllegalArgumentException.class, () -> Checkpoint.load(dir.resolve("nothing"), model, null));
        assertTrue(e3.getMessage().contains("not a checkpoint"), e3.getMessage());

        // a failed load changes nothing
        Stack fresh = new Stack(true);
        float before = fresh.parameters().get(0).get(0);
        assertThrows(IllegalArgumentException.class, () -> Checkpoint.load(ck, fresh, null));
        assertEquals(before, fresh.parameters().get(0).get(0));
    }

    static Checkpoint.TrainState state(long step, String run, Module model) {
        var routers = Checkpoint.routerState(model);
        return new Checkpoint.TrainState(step, step, 1, run, "{}", routers[0], routers[1]);
    }

    @Test
    void aFailedWriteEndsEveryRankWithTheWritersReason(@TempDir Path dir) throws Exception {
        Files.writeString(dir.resolve("file"), "in the way");
        Path ckDir = dir.resolve("file/ck");
        List<String> messages = Distributed.run(2, world -> {
            Stack model = new Stack(false);
            ExpertParallel.apply(model, DeviceMesh.create(world, MeshSizes.defaults().ep(2)));
            var e = assertThrows(moe4j.distributed.AgreedFailure.class,
                    () -> Checkpoint.save(ckDir, model, adam(model), state(1, "run-a", model), world, 0));
            assertFalse(e.userError());
            return e.getMessage(); // kept, not thrown: a rank that throws would break the other's groups
        });
        // rank 1 did not write, yet reports rank 0's reason, not a bare "rank 0 failed"
        String expected = "writing checkpoint " + ckDir.resolve("step-00000001") + " failed: ";
        for (String m : messages) assertTrue(m.startsWith(expected) && m.endsWith("Not a directory"), m);
        assertEquals(messages.get(0), messages.get(1));
    }

    @Test
    void aCheckpointOfAnotherRunIsNeverReplaced(@TempDir Path dir) throws Exception {
        Stack model = new Stack(false);
        AdamW opt = adam(model);
        Path ck = Checkpoint.save(dir, model, opt, state(3, "run-a", model), null, 0);
        byte[] before = Files.readAllBytes(ck.resolve("state.json"));
        var e = assertThrows(RuntimeException.class, () -> Checkpoint.save(dir, model, opt, state(3, "run-b", model), null, 0));
        assertTrue(e.getMessage().contains("belongs to another run (run-a, this run is run-b)"), e.getMessage());
        assertArrayEquals(before, Files.readAllBytes(ck.resolve("state.json")));
        // the same run may replace its own checkpoint of a step (a resumed run passing it again)
        Checkpoint.save(dir, model, opt, state(3, "run-a", model), null, 0);
    }

    @Test
    void pruningKeepsTheNewestUpToLatestAndLeavesLaterStepsAlone(@TempDir Path dir) throws Exception {
        for (int s = 1; s <= 6; s++) Files.createDirectories(dir.resolve(String.format("step-%08d", s)));
        Files.createDirectories(dir.resolve("step-00000007.tmp-1")); // not a checkpoint: untouched by pruning
        Files.writeString(dir.resolve("latest"), "step-00000003\n");
        Checkpoint.prune(dir, 2);
        assertEquals(List.of("latest", "step-00000002", "step-00000003", "step-00000004", "step-00000005", "step-00000006",
                "step-00000007.tmp-1"), names(dir));
        Checkpoint.prune(dir, 1);
        assertEquals(List.of("latest", "step-00000003", "step-00000004", "step-00000005", "step-00000006", "step-00000007.tmp-1"),
                names(dir));
    }

    static List<String> names(Path dir) throws Exception {
        try (var s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    @Test
    void resumeFallsBackToTheNewestIntactCheckpoint(@TempDir Path dir) throws Exception {
        Stack model = new Stack(false);
        AdamW opt = adam(model);
        for (int s = 1; s <= 3; s++) Checkpoint.save(dir, model, opt, state(s, "run-a", model), null, 0);
        assertEquals(new Checkpoint.ResumePoint(dir.resolve("step-00000003"), 3, "run-a", List.of()), Checkpoint.resumeFrom(dir));

        Files.write(dir.resolve("step-00000003/optimizer.safetensors"), new byte[] {0});
        Checkpoint.ResumePoint p = Checkpoint.resumeFrom(dir);
        assertEquals(dir.resolve("step-00000002"), p.checkpoint());
        assertEquals(1, p.skipped().size(), p.skipped().toString());
        assertTrue(p.skipped().get(0).contains("step-00000003/optimizer.safetensors is corrupt"), p.skipped().toString());

        // a pointer to a checkpoint that is gone
        Files.writeString(dir.resolve("latest"), "step-00000009\n");
        p = Checkpoint.resumeFrom(dir);
        assertEquals(dir.resolve("step-00000002"), p.checkpoint());
        assertTrue(p.skipped().get(0).contains("names " + dir.resolve("step-00000009") + ", which does not exist"), p.skipped().toString());

        Files.delete(dir.resolve("step-00000001/state.json"));
        Files.delete(dir.resolve("step-00000002/model.safetensors"));
        var none = assertThrows(IllegalArgumentException.class, () -> Checkpoint.resumeFrom(dir));
        assertTrue(none.getMessage().startsWith("--resume: no intact checkpoint in " + dir), none.getMessage());
        assertTrue(none.getMessage().contains("is missing model.safetensors") && none.getMessage().contains("not a checkpoint"),
                none.getMessage());
    }
}
