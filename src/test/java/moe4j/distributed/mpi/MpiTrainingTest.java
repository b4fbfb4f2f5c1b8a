package moe4j.distributed.mpi;

import static org.junit.jupiter.api.Assertions.assertEquals;
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


    @Test
    void mpiTrainingMatchesTheInJvmBackend(@TempDir Path dir) throws Exception {
        boolean mpirun = false;
        for (String d : System.getenv().getOrDefault("PATH", "").split(File.pathSeparator)) {
            if (!d.isEmpty() && Files.isExecutable(Path.of(d, "mpirun"))) mpirun = true;
        }
        Assumptions.assumeTrue(mpirun, "mpirun is not on the PATH: install Open MPI to test the MPI backend");
        Path config = dir.resolve("tiny.toml");
        Files.writeString(config, config());

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
}
