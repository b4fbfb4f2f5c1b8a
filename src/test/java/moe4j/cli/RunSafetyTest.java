package moe4j.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import moe4j.distributed.mpi.MpiTrainingTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code moe4j train} as an operator meets it: runs that must never mix in one folder or file, refusals
 * that come before anything is written, and every mistake as one sentence with exit code 2. Each case
 * runs the command in this JVM on a tiny model (2 ranks, a few steps).
 */
class RunSafetyTest {
    record Run(int exitCode, String out, String err) {
        /** What the user reads on stderr, minus the JVM's own logging lines. */
        String errors() {
            return err.lines().filter(l -> l.startsWith("moe4j")).reduce("", (a, b) -> a + b + "\n");
        }
    }

    /** Runs {@code moe4j args...} in this JVM, capturing what it prints. */
    static Run run(String... args) {
        PrintStream oldOut = System.out;
        PrintStream oldErr = System.err;
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream stderr = new ByteArrayOutputStream();
        // the streams first: picocli binds a command's error writer to System.err when it runs
        System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
        System.setErr(new PrintStream(stderr, true, StandardCharsets.UTF_8));
        var cmd = Main.commandLine();
        StringWriter err = new StringWriter();
        cmd.setErr(new PrintWriter(err, true));
        try {
            int code = cmd.execute(args);
            return new Run(code, out.toString(StandardCharsets.UTF_8), stderr.toString(StandardCharsets.UTF_8) + err);
        } finally {
            System.setOut(oldOut);
            System.setErr(oldErr);
        }
    }

    /** The tiny two-rank run: {@code train --config tiny.toml --backend local --steps N} plus {@code more}. */
    static String[] train(Path dir, int steps, String... more) throws Exception {
        Path config = dir.resolve("tiny.toml");
        if (!Files.exists(config)) Files.writeString(config, MpiTrainingTest.config().replace("dp_shard = 2", "dp_shard = 1"));
        List<String> args = new ArrayList<>(List.of("train", "--config", config.toString(), "--backend", "local",
                "--steps", Integer.toString(steps)));
        args.addAll(Arrays.asList(more));
        return args.toArray(String[]::new);
    }

    static Run succeeds(String... args) {
        Run r = run(args);
        assertEquals(0, r.exitCode(), r.out() + r.err());
        return r;
    }

    /** A refusal: exit code 2 and exactly one line that contains every one of {@code expected}, no stack trace. */
    static Run refused(Run r, String... expected) {
        assertEquals(2, r.exitCode(), r.out() + r.err());
        assertOneSentence(r);
        for (String e : expected) assertTrue(r.errors().contains(e), "expected '" + e + "' in: " + r.err());
        return r;
    }

    static void assertOneSentence(Run r) {
        assertEquals(1, r.errors().lines().count(), "one line of error:\n" + r.err());
        assertFalse(r.err().contains("\tat ") || r.err().contains("Exception"), "no stack trace:\n" + r.err());
    }

    static String read(Path p) throws Exception {
        return Files.readString(p, StandardCharsets.UTF_8);
    }

    static String runOf(Path checkpoint) throws Exception {
        return com.google.gson.JsonParser.parseString(read(checkpoint.resolve("state.json"))).getAsJsonObject().get("run").getAsString();
    }

    // ------------------------------------------------------------------ data loss

    @Test
    void aFreshRunIntoAUsedCheckpointFolderStopsBeforeWritingAndOverwriteReplacesTheOldRun(@TempDir Path dir) throws Exception {
        String ck = dir.resolve("ck").toString();
        succeeds(train(dir, 4, "--checkpoint-dir", ck, "--checkpoint-every", "2", "--output-dir", dir.resolve("a").toString()));
        String firstRun = runOf(dir.resolve("ck/step-00000004"));
        byte[] weights = Files.readAllBytes(dir.resolve("ck/step-00000002/model.safetensors"));

        // the same folder without --resume: the old run's checkpoints and `latest` stay as they were
        Run r = run(train(dir, 2, "--checkpoint-dir", ck, "--output-dir", dir.resolve("b").toString()));
        refused(r, "already holds another run's checkpoints", "--resume", "--overwrite", "--checkpoint-dir");
        assertEquals("step-00000004", read(dir.resolve("ck/latest")).strip());
        assertArrayEquals(weights, Files.readAllBytes(dir.resolve("ck/step-00000002/model.safetensors")));
        assertFalse(Files.exists(dir.resolve("b/metrics.jsonl")), "refused before step 1");

        // --overwrite: the folder then holds the new run alone
        succeeds(train(dir, 2, "--checkpoint-dir", ck, "--output-dir", dir.resolve("b").toString(), "--overwrite"));
        assertEquals("step-00000002", read(dir.resolve("ck/latest")).strip());
        assertFalse(Files.exists(dir.resolve("ck/step-00000004")), "the old run's checkpoints are gone");
        assertNotEquals(firstRun, runOf(dir.resolve("ck/step-00000002")));
    }

    @Test
    void resumingIntoAnOutputFolderOfAnotherRunNeverMixesTheirMetrics(@TempDir Path dir) throws Exception {
        String out = dir.resolve("out").toString();
        // run A stops after step 2 (as if interrupted: its 4-step run wrote checkpoints 2 and 4; latest set back to 2)
        succeeds(train(dir, 4, "--checkpoint-dir", dir.resolve("ckA").toString(), "--checkpoint-every", "2", "--output-dir", out));
        Files.writeString(dir.resolve("ckA/latest"), "step-00000002\n");
        String runA = runOf(dir.resolve("ckA/step-00000002"));
        // run B then uses the same output folder
        succeeds(train(dir, 2, "--checkpoint-dir", dir.resolve("ckB").toString(), "--output-dir", out));
        String metricsB = read(dir.resolve("out/metrics.jsonl"));
        String runB = runOf(dir.resolve("ckB/step-00000002"));
        assertTrue(metricsB.contains("\"run\":\"" + runB + "\""), "every line names its run:\n" + metricsB);

        Run r = run(train(dir, 4, "--checkpoint-dir", dir.resolve("ckA").toString(), "--output-dir", out, "--resume"));
        refused(r, "metrics of another run", runB, "--output-dir", "--overwrite");
        assertEquals(metricsB, read(dir.resolve("out/metrics.jsonl")), "the file is left as it was");
        assertEquals("step-00000002", read(dir.resolve("ckA/latest")).strip(), "no step ran");

        // --overwrite: the file holds run A's resumed steps alone
        succeeds(train(dir, 4, "--checkpoint-dir", dir.resolve("ckA").toString(), "--output-dir", out, "--resume", "--overwrite"));
        List<String> lines = Files.readAllLines(dir.resolve("out/metrics.jsonl"));
        assertEquals(2, lines.size(), String.join("\n", lines));
        for (int i = 0; i < 2; i++) {
            assertTrue(lines.get(i).startsWith("{\"step\":" + (i + 3) + ","), lines.get(i));
            assertTrue(lines.get(i).contains("\"run\":\"" + runA + "\""), lines.get(i));
        }
    }

    // ------------------------------------------------------------------ hang: the deadline setting

    @Test
    void trainReadsTheCollectiveDeadlineSettingOfEveryOtherCommand(@TempDir Path dir) throws Exception {
        String old = System.getProperty("moe4j.collective.timeout");
        System.setProperty("moe4j.collective.timeout", "soon");
        try {
            refused(run(train(dir, 1, "--output-dir", dir.resolve("out").toString())), "collective timeout 'soon'",
                    "MOE4J_COLLECTIVE_TIMEOUT");
        } finally {
            if (old == null) System.clearProperty("moe4j.collective.timeout");
            else System.setProperty("moe4j.collective.timeout", old);
        }
    }

    // ------------------------------------------------------------------ sentences instead of stack traces

    @Test
    void aBatchThatCannotFitIsRefusedBeforeAllocatingWithTheMemoryItNeeds(@TempDir Path dir) throws Exception {
        Run r = run(train(dir, 1, "--batch-size", "10000000", "--output-dir", dir.resolve("out").toString()));
        refused(r, "batch_size 10000000 × seq_len 16 needs at least", "GiB of memory", "--batch-size");
        // the default run is far from that limit
        assertNull(TrainCommand.memoryRefusal(moe4j.train.TrainConfig.defaults().build(), 4));
    }

    // ------------------------------------------------------------------ validation

    @Test
    void configNumbersAreCheckedByKey(@TempDir Path dir) throws Exception {
        Path bad = dir.resolve("bad.toml");
        Files.writeString(bad, MpiTrainingTest.config().replace("num_experts = 4", "num_experts = 2.5"));
        refused(run("train", "--config", bad.toString()), "num_experts must be an integer, got 2.5");
        Files.writeString(bad, MpiTrainingTest.config().replace("batch_size = 8", "batch_size = 3000000000"));
        refused(run("train", "--config", bad.toString()), "batch_size = 3000000000 is out of range");
        Files.writeString(bad, MpiTrainingTest.config().replace("steps = 4", "steps = 99999999999999999999"));
        refused(run("train", "--config", bad.toString()), "steps = 99999999999999999999 is out of range");
        Files.writeString(bad, MpiTrainingTest.config().replace("[model]", "[model\n"));
        refused(run("train", "--config", bad.toString()), "cannot read config");
    }

    @Test
    void aNonFiniteLearningRateIsRefusedAndDivergenceSaysWhetherACheckpointExists(@TempDir Path dir) throws Exception {
        refused(run(train(dir, 1, "--lr", "Infinity")), "lr must be a finite number, got Infinity");
        refused(run(train(dir, 1, "--lr", "NaN")), "lr must be a finite number, got NaN");
        // a finite lr so large that the second step's loss is no longer finite, with no checkpoint folder
        Run r = run(train(dir, 4, "--lr", "1e30", "--output-dir", dir.resolve("out").toString()));
        assertEquals(1, r.exitCode(), r.out() + r.err());
        assertOneSentence(r);
        assertTrue(r.errors().contains("training diverged at step"), r.err());
        assertTrue(r.errors().contains("no checkpoints were written"), r.err());
        assertFalse(r.errors().contains("intact"), r.err());
    }

    @Test
    void anUnwritableCheckpointFolderIsFoundBeforeStepOne(@TempDir Path dir) throws Exception {
        Files.writeString(dir.resolve("file"), "not a folder");
        String ck = dir.resolve("file/ck").toString();
        Run r = run(train(dir, 3, "--checkpoint-dir", ck, "--checkpoint-every", "0", "--output-dir", dir.resolve("out").toString()));
        refused(r, "cannot write to checkpoint folder " + ck);
        assertFalse(r.out().contains("\n      1 "), "no step ran:\n" + r.out());
        refused(run(train(dir, 3, "--output-dir", dir.resolve("file/out").toString())), "cannot write metrics file", "--output-dir");
    }

    @Test
    void aCorruptLatestCheckpointFallsBackToTheNewestIntactOneWithAWarning(@TempDir Path dir) throws Exception {
        String ck = dir.resolve("ck").toString();
        String out = dir.resolve("out").toString();
        succeeds(train(dir, 4, "--checkpoint-dir", ck, "--checkpoint-every", "2", "--output-dir", out));
        Path weights = dir.resolve("ck/step-00000004/model.safetensors");
        byte[] bytes = Files.readAllBytes(weights);
        bytes[bytes.length - 1] ^= 1;
        Files.write(weights, bytes);
        Run r = succeeds(train(dir, 5, "--checkpoint-dir", ck, "--output-dir", out, "--resume"));
        assertTrue(r.err().contains("moe4j train: warning: passed over a damaged checkpoint: checkpoint file") && r.err().contains("is corrupt"),
                r.err());
        assertTrue(r.err().contains("resuming from the newest intact checkpoint, " + dir.resolve("ck/step-00000002")), r.err());
        assertTrue(r.out().contains("resuming at step 3"), r.out());
        List<String> lines = Files.readAllLines(dir.resolve("out/metrics.jsonl"));
        assertEquals(5, lines.size(), String.join("\n", lines));

        // nothing intact at all: a sentence that lists why
        for (String step : List.of("step-00000002", "step-00000004", "step-00000005")) {
            Files.write(dir.resolve("ck/" + step + "/optimizer.safetensors"), new byte[] {1});
        }
        refused(run(train(dir, 8, "--checkpoint-dir", ck, "--output-dir", out, "--resume")), "no intact checkpoint in " + ck);
    }

    @Test
    void resumingAFinishedRunSaysSo(@TempDir Path dir) throws Exception {
        String ck = dir.resolve("ck").toString();
        succeeds(train(dir, 2, "--checkpoint-dir", ck, "--output-dir", dir.resolve("out").toString()));
        refused(run(train(dir, 2, "--checkpoint-dir", ck, "--output-dir", dir.resolve("out").toString(), "--resume")),
                "already finished", "step 2", "--steps N with N > 2");
    }

    @Test
    void keepLastPrunesOldCheckpointsButNeverTheLatest(@TempDir Path dir) throws Exception {
        succeeds(train(dir, 5, "--checkpoint-dir", dir.resolve("two").toString(), "--checkpoint-every", "1", "--keep-last", "2",
                "--output-dir", dir.resolve("out").toString()));
        assertEquals(List.of("latest", "step-00000004", "step-00000005"), names(dir.resolve("two")));
        succeeds(train(dir, 5, "--checkpoint-dir", dir.resolve("default").toString(), "--checkpoint-every", "1",
                "--output-dir", dir.resolve("out").toString()));
        assertEquals(List.of("latest", "step-00000003", "step-00000004", "step-00000005"), names(dir.resolve("default")));
        refused(run(train(dir, 1, "--keep-last", "-1")), "keep_last must be >= 0");
    }

    static List<String> names(Path dir) throws Exception {
        try (var s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    // ------------------------------------------------------------------ exit codes and sentences

    @Test
    void everyMistakeIsOneSentenceWithExitCodeTwo(@TempDir Path dir) throws Exception {
        refused(run("train", "--ep", "0"), "ep must be >= 1, got 0");
        refused(run("train", "--no-such-option"), "Unknown option: '--no-such-option'", "(see moe4j train --help)");
        refused(run("train", "--steps", "many"), "'many' is not a long");
        refused(run("verify", "--top-k", "9", "--experts", "4"), "--top-k (9) must be <= --experts (4)");
        refused(run("verify", "--top-k", "0"), "--top-k must be >= 1, got 0");
        assertFalse(run("verify", "--top-k", "9").err().contains("moe_top_k"));
        // a data file is input too: found by every rank before step 1
        refused(run(train(dir, 1, "--data", "text:" + dir.resolve("missing.txt"), "--output-dir", dir.resolve("out").toString())),
                "missing.txt");
        // --debug adds the stack trace
        Run debug = run("train", "--ep", "0", "--debug");
        assertEquals(2, debug.exitCode());
        assertTrue(debug.err().contains("\tat "), debug.err());
    }
}
