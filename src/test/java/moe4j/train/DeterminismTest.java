package moe4j.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Same seed, same config, same bits: two runs in one JVM (the second with every kernel already
 * JIT-compiled, the first partly interpreted) write byte-identical checkpoints. This caught the Vector
 * API's EXP and lane reductions, whose results may differ between interpreted and compiled code.
 */
class DeterminismTest {
    @Test
    void twoIdenticalRunsAreBitIdentical(@TempDir Path dir) throws Exception {
        for (int ep : new int[] {1, 2}) {
            Path a = TrainerTest.train(TrainerTest.tiny(dir.resolve("a" + ep)).ep(ep).steps(4).build(), false).lastCheckpoint();
            Path b = TrainerTest.train(TrainerTest.tiny(dir.resolve("b" + ep)).ep(ep).steps(4).build(), false).lastCheckpoint();
            assertArrayEquals(Files.readAllBytes(a.resolve("model.safetensors")), Files.readAllBytes(b.resolve("model.safetensors")), "ep " + ep);
        }
    }
}
