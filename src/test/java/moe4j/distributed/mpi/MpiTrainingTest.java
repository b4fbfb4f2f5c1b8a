package moe4j.distributed.mpi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import moe4j.distributed.Distributed;
import moe4j.train.TrainConfig;
import moe4j.train.Trainer;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code moe4j train --backend mpi} as a 4-process mpirun job (dp_shard 2 × ep 2) ends with the same loss
 * as the in-JVM backend on the same config and seed (≤ 1e-5 relative; in practice the same bits).
 */
public class MpiTrainingTest {
    /** A tiny run (seconds on 2 cores): dp_shard 2 × ep 2 = 4 ranks. */
    public static String config() {
        try (var in = MpiTrainingTest.class.getResourceAsStream("/moe4j/tiny-train.toml")) {
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }


    /** dp_shard 2 × ep 2: sharded gradients and optimizer state, and the EP all-to-alls, over MPI. */
    @Test
    void mpiTrainingMatchesTheInJvmBackend(@TempDir Path dir) throws Exception {
        trainOnBothBackends(dir, config());
    }

    /** ep 2 × tp 2: the tensor-parallel collectives (all-reduce, uneven all-gathers) over MPI. */
    @Test
    void mpiTensorParallelTrainingMatchesTheInJvmBackend(@TempDir Path dir) throws Exception {
        trainOnBothBackends(dir, config().replace("dp_shard = 2", "dp_shard = 1\ntp = 2"));
    }

    private static void trainOnBothBackends(Path dir, String toml) throws Exception {
        boolean mpirun = false;
        for (String d : System.getenv().getOrDefault("PATH", "").split(File.pathSeparator)) {
            if (!d.isEmpty() && Files.isExecutable(Path.of(d, "mpirun"))) mpirun = true;
        }
        Assumptions.assumeTrue(mpirun, "mpirun is not on the PATH: install Open MPI to test the MPI backend");
        Path config = dir.resolve("tiny.toml");
        Files.writeString(config, toml);

        TrainConfig local = TrainConfig.fromToml(config).backend("local").outputDir(dir.resolve("local")).build();
        double localLoss = Distributed.run(local.worldSize(), Duration.ofSeconds(60),
                world -> Trainer.run(local, world, false, new Trainer.Listener() {})).get(0).finalLoss();

        String java = ProcessHandle.current().info().command().orElse("java");
        List<String> cmd = new ArrayList<>(List.of("mpirun", "--oversubscribe", "-np", "4"));
        if ("root".equals(System.getProperty("user.name"))) cmd.add(1, "--allow-run-as-root");
        cmd.addAll(List.of(java, "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                "-XX:-TieredCompilation", "-Xmx512m", "-XX:+UseSerialGC", "-cp", System.getProperty("java.class.path"),
                "moe4j.cli.Main", "train", "--config", config.toString(), "--backend", "mpi", "--json",
                "--output-dir", dir.resolve("mpi").toString()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out;
        try (var in = p.getInputStream()) {
            out = new String(in.readAllBytes(), StandardCharsets.UTF_8);
        }
        if (!p.waitFor(120, TimeUnit.SECONDS)) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
            throw new AssertionError("mpirun job did not end in 120 s:\n" + out);
        }
        assertEquals(0, p.exitValue(), out);
        Matcher m = Pattern.compile("\"final_loss\":([0-9.eE+-]+)").matcher(out);
        assertTrue(m.find(), "no JSON summary in:\n" + out);
        double mpiLoss = Double.parseDouble(m.group(1));
        assertEquals(localLoss, mpiLoss, 1e-5 * Math.abs(localLoss), out);
    }

    /**
     * A rank of a training job that stops (SIGSTOP, as a hung node would) ends every rank at the configured
     * collective deadline, here 3 s, not the built-in 300 s default.
     */
    @Test
    void aStalledRankEndsTheTrainingJobAtTheConfiguredDeadline(@TempDir Path dir) throws Exception {
        boolean mpirun = false;
        for (String d : System.getenv().getOrDefault("PATH", "").split(File.pathSeparator)) {
            if (!d.isEmpty() && Files.isExecutable(Path.of(d, "mpirun"))) mpirun = true;
        }
        Assumptions.assumeTrue(mpirun, "mpirun is not on the PATH: install Open MPI to test the MPI backend");
        Path config = dir.resolve("tiny.toml");
        Files.writeString(config, config().replace("steps = 4", "steps = 100000"));
        String java = ProcessHandle.current().info().command().orElse("java");
        List<String> cmd = new ArrayList<>(List.of("mpirun", "--oversubscribe", "-np", "4", "-x", "MOE4J_COLLECTIVE_TIMEOUT"));
        if ("root".equals(System.getProperty("user.name"))) cmd.add(1, "--allow-run-as-root");
        cmd.addAll(List.of(java, "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                "-XX:-TieredCompilation", "-Xmx512m", "-XX:+UseSerialGC", "-cp", System.getProperty("java.class.path"),
                "moe4j.cli.Main", "train", "--config", config.toString(), "--backend", "mpi", "--output-dir", dir.resolve("out").toString()));
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
        pb.environment().put("MOE4J_COLLECTIVE_TIMEOUT", "3");
        Process p = pb.start();
        StringBuffer out = new StringBuffer();
        java.util.concurrent.CountDownLatch training = new java.util.concurrent.CountDownLatch(1);
        Thread reader = new Thread(() -> {
            try (var in = new java.io.BufferedReader(new java.io.InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
                for (String line; (line = in.readLine()) != null; ) {
                    out.append(line).append('\n');
                    if (line.trim().startsWith("2 ")) training.countDown(); // rank 0 logged step 2: every rank is in the loop
                }
            } catch (java.io.IOException e) {
                out.append(e);
            }
        });
        reader.start();
        try {
            assertTrue(training.await(120, TimeUnit.SECONDS), "training did not reach step 2:\n" + out);
            ProcessHandle rank1 = p.descendants().filter(h -> isRank(h, 1)).findFirst()
                    .orElseThrow(() -> new AssertionError("no process of world rank 1 among " + p.descendants().toList()));
            long stopped = System.nanoTime();
            assertEquals(0, new ProcessBuilder("kill", "-STOP", Long.toString(rank1.pid())).start().waitFor());
            // the others wait 3 s in their next collective, then end the job; 60 s leaves room for a loaded machine
            boolean ended = p.waitFor(60, TimeUnit.SECONDS);
            double seconds = (System.nanoTime() - stopped) * 1e-9;
            assertTrue(ended, "the job still ran 60 s after rank 1 stopped:\n" + out);
            reader.join(10_000);
            assertNotEquals(0, p.exitValue(), out.toString());
            assertTrue(out.toString().contains("did not complete within PT3S"), out.toString());
            assertTrue(seconds < 60, "took " + seconds + " s");
        } finally {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
        }
    }

    /** Whether {@code h} is the process of world rank {@code rank} (Open MPI puts it in the environment). */
    private static boolean isRank(ProcessHandle h, int rank) {
        try {
            String env = Files.readString(Path.of("/proc", Long.toString(h.pid()), "environ"), StandardCharsets.ISO_8859_1);
            return h.info().command().orElse("").endsWith("java") && env.contains("\0OMPI_COMM_WORLD_RANK=" + rank + "\0");
        } catch (java.io.IOException | RuntimeException gone) {
            return false;
        }
    }
}
