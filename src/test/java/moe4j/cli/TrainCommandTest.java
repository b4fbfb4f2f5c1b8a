package moe4j.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import moe4j.distributed.mpi.MpiTrainingTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The train command end to end on a tiny config: outputs, resume after an interruption, bad resumes. */
class TrainCommandTest {
    /** Runs the command in this JVM; returns its exit code and what it wrote to stderr. */
    static Object[] run(String... args) {
        var cmd = Main.commandLine();
        java.io.StringWriter err = new java.io.StringWriter();
        cmd.setErr(new java.io.PrintWriter(err, true));
        PrintStream old = System.out;
        System.setOut(new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8));
        try {
            return new Object[] {cmd.execute(args), err.toString()};
        } finally {
            System.setOut(old);
        }
    }

    static void assertSucceeds(String... args) {
        Object[] r = run(args);
        assertEquals(0, r[0], (String) r[1]);
    }

    @Test
    void resumeAfterAnInterruptionKeepsOneMetricsLinePerStep(@TempDir Path dir) throws Exception {
        Path config = dir.resolve("tiny.toml");
        Files.writeString(config, MpiTrainingTest.config().replace("steps = 4", "steps = 5").replace("dp_shard = 2", "dp_shard = 1"));
        String[] common = {"train", "--config", config.toString(), "--backend", "local", "--checkpoint-dir", dir.resolve("ck").toString(),
                "--checkpoint-every", "2", "--output-dir", dir.resolve("out").toString()};
        assertSucceeds(common);
        assertTrue(Files.exists(dir.resolve("out/training.png")));
        // as if the run had been interrupted after step 5 but before its checkpoint: latest names step 4
        Files.writeString(dir.resolve("ck/latest"), "step-00000004\n");
        String[] resume = java.util.stream.Stream.concat(java.util.Arrays.stream(common), java.util.stream.Stream.of("--resume"))
                .toArray(String[]::new);
        assertSucceeds(resume);
        List<String> lines = Files.readAllLines(dir.resolve("out/metrics.jsonl"));
        assertEquals(5, lines.size(), String.join("\n", lines));
        for (int i = 0; i < 5; i++) assertTrue(lines.get(i).startsWith("{\"step\":" + (i + 1) + ","), lines.get(i));

        // resuming with another batch size is another run: refused, naming the setting
        String[] other = java.util.stream.Stream.concat(java.util.Arrays.stream(resume), java.util.stream.Stream.of("--batch-size", "4"))
                .toArray(String[]::new);
        Object[] refused = run(other);
        assertEquals(2, refused[0], (String) refused[1]);
        assertTrue(((String) refused[1]).contains("globalBatch: checkpoint 8, now 4"), (String) refused[1]);
    }

    @Test
    void tpAndDpShardFromTheCommandLineAndTheTomlShowInTheStartupLine(@TempDir Path dir) throws Exception {
        Path config = dir.resolve("tiny.toml");
        // the TOML asks for dp_shard 2 × ep 2; the command line adds tp 2 and keeps ep 1: dp_shard 2 × tp 2
        Files.writeString(config, MpiTrainingTest.config().replace("steps = 4", "steps = 2").replace("ep = 2", "ep = 1\ntp = 1"));
        var cmd = Main.commandLine();
        java.io.StringWriter err = new java.io.StringWriter();
        cmd.setErr(new java.io.PrintWriter(err, true));
        PrintStream old = System.out;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        System.setOut(new PrintStream(captured, true, StandardCharsets.UTF_8));
        int code;
        try {
            code = cmd.execute("train", "--config", config.toString(), "--backend", "local", "--tp", "2",
                    "--output-dir", dir.resolve("out").toString());
        } finally {
            System.setOut(old);
        }
        String out = captured.toString(StandardCharsets.UTF_8);
        assertEquals(0, code, err.toString());
        assertTrue(out.contains("ranks: 4 (local backend) = dp_replicate 1 × dp_shard 2 × ep 1 × tp 2 (parameters, gradients and optimizer"
                + " state sharded over dp_shard)"), out);
        assertTrue(out.contains("per rank: parameters + gradients + AdamW state"), out);
        var toml = moe4j.train.TrainConfig.fromToml(config).build();
        assertEquals(1, toml.tp());
        assertEquals(2, toml.dpShard());
    }

    @Test
    void initFromAHuggingFaceFolderOnATwoByTwoMeshSavesItsLayout(@TempDir Path dir) throws Exception {
        Path folder = Path.of(TrainCommandTest.class.getResource("/moe4j/hf/qwen2_moe").toURI());
        assertSucceeds("train", "--init-from", folder.toString(), "--backend", "local", "--ep", "2", "--dp-shard", "2",
                "--steps", "2", "--batch-size", "4", "--seq-len", "16", "--output-dir", dir.resolve("out").toString());
        Path saved = dir.resolve("out/hf");
        for (String f : new String[] {"config.json", "model.safetensors", "tokenizer.json"}) assertTrue(Files.isRegularFile(saved.resolve(f)), f);
        var model = moe4j.hf.HfCheckpoint.load(saved);
        assertEquals(8, model.moeLayers().get(0).numExperts(), "every expert gathered into the saved folder");

        Object[] missing = run("train", "--init-from", dir.resolve("nope").toString(), "--steps", "1");
        assertEquals(2, missing[0], (String) missing[1]);
        assertTrue(((String) missing[1]).contains("has no config.json"), (String) missing[1]);
    }

    @Test
    void deviceAndDtypeMistakesAreOneSentenceAndExitCodeTwo() {
        String[][] cases = {
                {"--dtype", "bf16", "dtype bf16 needs device cuda: the cpu device computes in f32"},
                {"--device", "tpu", "unknown device 'tpu': valid devices are [cpu, cuda]"},
                {"--dtype", "fp8", "unknown dtype 'fp8': valid dtypes are [f32, bf16]"},
                {"--backend", "nccl", "backend nccl moves GPU tensors: it needs device cuda"},
        };
        for (String[] c : cases) {
            Object[] r = run("train", c[0], c[1], "--steps", "1");
            assertEquals(2, r[0], String.join(" ", c) + ": " + r[1]);
            String err = (String) r[1];
            assertTrue(err.contains(c[2]), err);
            assertFalse(err.contains("\tat "), "no stack trace: " + err);
        }
        // several ranks on GPUs move their tensors with NCCL, never through the host backends
        Object[] r = run("train", "--device", "cuda", "--backend", "local", "--ep", "2", "--steps", "1");
        assertEquals(2, r[0], (String) r[1]);
        assertTrue(((String) r[1]).contains("device cuda with 2 ranks needs backend nccl (or auto), not local"), (String) r[1]);
    }
}
