package moe4j.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class DeterminismProbeTest {
    @Test
    void twoIdenticalRunsAreBitIdentical(@TempDir Path tmp) throws Exception {
        Path dir = Path.of("/tmp/probe");
        for (int ep : new int[] {1, 2}) {
            Path a = TrainerTest.train(TrainerTest.tiny(dir.resolve("a" + ep)).ep(ep).steps(4).build(), false).lastCheckpoint();
            Path b = TrainerTest.train(TrainerTest.tiny(dir.resolve("b" + ep)).ep(ep).steps(4).build(), false).lastCheckpoint();
            assertArrayEquals(Files.readAllBytes(a.resolve("model.safetensors")), Files.readAllBytes(b.resolve("model.safetensors")), "ep " + ep);
        }
    }
}
