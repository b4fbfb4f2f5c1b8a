package moe4j.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class MetricsLogTest {
    static StepMetrics step(long s) {
        return new StepMetrics(s, 5.0 - s, 4.0, 0.1, 0.01, 1e-3, 1.5, 1000, 0.1, new double[][] {{0.5, 0.5}});
    }

    static void write(Path file, String run, long... steps) {
        try (MetricsLog log = new MetricsLog(file, 1, run, false)) {
            for (long s : steps) log.write(step(s));
        }
    }

    @Test
    void aResumedRunKeepsItsOwnEarlierStepsAndRefusesAnotherRunsFile(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("out/metrics.jsonl");
        write(file, "run-a", 1, 2, 3, 4);
        Files.writeString(file, Files.readString(file) + "{\"step\":5,\"lo"); // a line cut short by a crash
        try (MetricsLog resumed = new MetricsLog(file, 3, "run-a", false)) {
            assertEquals(List.of(1L, 2L), resumed.earlierSteps().stream().map(StepMetrics::step).toList());
            resumed.write(step(3));
        }
        List<String> lines = Files.readAllLines(file);
        assertEquals(3, lines.size(), String.join("\n", lines));
        for (String l : lines) assertTrue(l.endsWith(",\"run\":\"run-a\"}"), l);

        String before = Files.readString(file);
        var e = assertThrows(IllegalArgumentException.class, () -> new MetricsLog(file, 3, "run-b", false));
        assertTrue(e.getMessage().contains("holds metrics of another run (run-a; this run is run-b)"), e.getMessage());
        assertEquals(before, Files.readString(file), "a refusal leaves the file as it was");

        // lines written before runs were recorded belong to no known run either
        Files.writeString(file, before.replace(",\"run\":\"run-a\"", ""));
        var legacy = assertThrows(IllegalArgumentException.class, () -> new MetricsLog(file, 3, "run-a", false));
        assertTrue(legacy.getMessage().contains("one that recorded no run identity"), legacy.getMessage());

        try (MetricsLog replaced = new MetricsLog(file, 3, "run-b", true)) {
            assertTrue(replaced.earlierSteps().isEmpty());
            replaced.write(step(3));
        }
        assertEquals(1, Files.readAllLines(file).size());
    }

    @Test
    void aFreshRunStartsAnEmptyFile(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("metrics.jsonl");
        write(file, "run-a", 1, 2);
        try (MetricsLog fresh = new MetricsLog(file, 1, "run-b", false)) {
            assertTrue(fresh.earlierSteps().isEmpty());
        }
        assertEquals("", Files.readString(file));
    }
}
