package moe4j.distributed.mpi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Runs {@link MpiCollectivesCheck} as a 4-process {@code mpirun} job through
 * {@code scripts/mpi-tests.sh}: the MPI backend cannot run inside this JVM, which no MPI launcher
 * started. Needs Open MPI ({@code mpirun}); CI installs it.
 */
class MpiCollectivesTest {
    private static final long JOB_LIMIT_SECONDS = 120;

    @BeforeAll
    static void needsMpirun() {
        boolean found = false;
        for (String dir : System.getenv().getOrDefault("PATH", "").split(File.pathSeparator)) {
            if (!dir.isEmpty() && Files.isExecutable(Path.of(dir, "mpirun"))) found = true;
        }
        Assumptions.assumeTrue(found, "mpirun is not on the PATH: install Open MPI (Debian: openmpi-bin libopenmpi-dev)"
                + " to test the MPI backend");
    }

    private record Job(int exitCode, String output) {}

    /** Runs the script with {@code mode}; the dependencies are not needed by the check, so no Maven runs inside. */
    private static Job runJob(String mode, String timeoutSeconds) throws IOException, InterruptedException {
        return runJob(List.of(mode), timeoutSeconds, "");
    }

    /**
     * Runs {@code moe4j args...} on every rank (the script's cli mode), with this JVM's classpath for the
     * command line's dependencies.
     */
    private static Job runCommand(String... args) throws IOException, InterruptedException {
        List<String> scriptArgs = new ArrayList<>(List.of("cli"));
        scriptArgs.addAll(List.of(args));
        return runJob(scriptArgs, "60", System.getProperty("java.class.path"));
    }

    private static Job runJob(List<String> scriptArgs, String timeoutSeconds, String depsClasspath)
            throws IOException, InterruptedException {
        String java = ProcessHandle.current().info().command().orElse("java");
        List<String> command = new ArrayList<>(List.of("scripts/mpi-tests.sh", "-np", "4"));
        command.addAll(scriptArgs);
        ProcessBuilder pb = new ProcessBuilder(command).redirectErrorStream(true);
        pb.environment().put("MOE4J_JAVA", java);
        pb.environment().put("MOE4J_DEPS_CLASSPATH", depsClasspath);
        pb.environment().put("MOE4J_COLLECTIVE_TIMEOUT", timeoutSeconds);
        Process process = pb.start();
        byte[] out;
        try (var in = process.getInputStream()) {
            out = in.readAllBytes(); // ends when the job (and its children) closed the pipe
        }
        if (!process.waitFor(JOB_LIMIT_SECONDS, TimeUnit.SECONDS)) {
            process.descendants().forEach(ProcessHandle::destroyForcibly);
            process.destroyForcibly();
            throw new AssertionError("the mpirun job did not end within " + JOB_LIMIT_SECONDS + " s:\n"
                    + new String(out, StandardCharsets.UTF_8));
        }
        return new Job(process.exitValue(), new String(out, StandardCharsets.UTF_8));
    }

    @Test
    void everyCollectiveMatchesTheLocalReferenceOnFourProcesses() throws Exception {
        Job job = runJob("check", "60");
        Matcher m = Pattern.compile("(\\d+) passed, (\\d+) failed").matcher(job.output());
        assertTrue(m.find(), "no summary line in:\n" + job.output());
        assertEquals("0", m.group(2), job.output());
        assertTrue(Integer.parseInt(m.group(1)) >= 30, "too few checks ran:\n" + job.output());
        for (String layout : List.of("list", "packed, shared", "list, shared, capacity 1.0")) {
            assertTrue(job.output().contains("PASS verify (" + layout + ") on MPI reports what P in-JVM ranks report"),
                    "the verifier did not run on MPI with " + layout + ":\n" + job.output());
        }
        assertEquals(0, job.exitCode(), job.output());
    }

    @Test
    void verifyCommandOnFourProcessesPrintsOneReportAndExitsWithItsVerdict() throws Exception {
        Job job = runCommand("verify", "--backend", "mpi", "--ep", "4", "--shared", "--json");
        assertEquals(0, job.exitCode(), job.output());
        assertEquals(1, count(job.output(), "RESULT: PASS"), "rank 0 alone reports:\n" + job.output());
        assertTrue(job.output().contains("ranks    P=4 MPI processes (one rank each), 2 experts each, tokens per rank [16, 17, 18, 19]"),
                job.output());
        assertTrue(job.output().contains("\"ep\":4,\"backend\":\"mpi\""), job.output());
    }

    @Test
    void verifyCommandWithAnEpOtherThanTheJobSizeIsAUsageError() throws Exception {
        Job job = runCommand("verify", "--backend", "mpi", "--ep", "2");
        assertEquals(2, job.exitCode(), job.output());
        assertEquals(1, count(job.output(), "verify --backend mpi: the job has 4 processes but ep is 2: start one process per "
                + "EP rank (mpirun -np 2)"), "rank 0 alone says why:\n" + job.output());
    }

    @Test
    void trainWithAnEpThatDoesNotFillTheJobIsOneSentenceFromRankZero() throws Exception {
        Job job = runCommand("train", "--backend", "mpi", "--ep", "2");
        assertEquals(2, job.exitCode(), job.output());
        assertEquals(1, count(job.output(), "moe4j train: error: the MPI job has 4 processes but dp_replicate × dp_shard × ep = "
                + "1 × 1 × 2 = 2 ranks: start mpirun -np 2 or pass --ep 4"), "rank 0 alone says why:\n" + job.output());
        assertFalse(job.output().contains("Exception") || job.output().contains("\tat "), "no stack trace:\n" + job.output());

        // a mistake found before MPI starts (the same on every process), and one every rank agrees on after
        Path dir = Files.createTempDirectory("moe4j-mpi-train");
        Path config = dir.resolve("tiny.toml");
        Files.writeString(config, MpiTrainingTest.config());
        job = runCommand("train", "--backend", "mpi", "--config", config.toString(), "--lr", "Infinity");
        assertEquals(2, job.exitCode(), job.output());
        assertEquals(1, count(job.output(), "moe4j train: error: lr must be a finite number, got Infinity"), job.output());
        job = runCommand("train", "--backend", "mpi", "--config", config.toString(), "--resume", "--checkpoint-dir",
                dir.resolve("empty").toString(), "--output-dir", dir.resolve("out").toString());
        assertEquals(2, job.exitCode(), job.output());
        assertEquals(1, count(job.output(), "moe4j train: error: --resume: no checkpoint found in " + dir.resolve("empty")), job.output());
        assertFalse(job.output().contains("ABORTING"), "every rank ends cleanly:\n" + job.output());
    }

    private static int count(String text, String what) {
        int n = 0;
        for (int at = text.indexOf(what); at >= 0; at = text.indexOf(what, at + 1)) n++;
        return n;
    }

    @Test
    void aRankThatStopsTakingPartEndsTheJobAtTheDeadline() throws Exception {
        long t0 = System.nanoTime();
        Job job = runJob("stall", "3");
        double seconds = (System.nanoTime() - t0) * 1e-9;
        assertNotEquals(0, job.exitCode(), job.output());
        assertTrue(job.output().contains("collective allToAllSingle #2 did not complete within PT3S"), job.output());
        assertTrue(job.output().contains("group 'world'"), job.output());
        // the deadline is 3 s; JVM start-up and mpirun's teardown take the rest
        assertTrue(seconds < JOB_LIMIT_SECONDS, "took " + seconds + " s");
    }

    @Test
    void aRankThatThrowsAbortsTheJob() throws Exception {
        Job job = runJob("throw", "60");
        assertNotEquals(0, job.exitCode(), job.output());
        assertTrue(job.output().contains("world rank 1 of 4 failed: java.lang.IllegalStateException: rank 1 fails on purpose"),
                job.output());
    }
}
