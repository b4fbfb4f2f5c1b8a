package moe4j.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ConfigFileTest {
    @Test
    void theShippedDefaultConfigIsTheBuiltInDefault() {
        TrainConfig fromFile = TrainConfig.fromToml(Path.of("configs/default.toml")).build();
        assertEquals(TrainConfig.defaults().build(), fromFile);
    }

    @Test
    void unknownKeysAndSectionsNameTheValidOnes(@TempDir Path dir) throws Exception {
        Path f = dir.resolve("bad.toml");
        Files.writeString(f, "[train]\nstepz = 3\n");
        var e = assertThrows(IllegalArgumentException.class, () -> TrainConfig.fromToml(f));
        assertTrue(e.getMessage().contains("unknown key 'stepz' in [train]") && e.getMessage().contains("steps"), e.getMessage());
        Files.writeString(f, "[optim]\nlr = 3\n");
        var e2 = assertThrows(IllegalArgumentException.class, () -> TrainConfig.fromToml(f));
        assertTrue(e2.getMessage().contains("unknown section [optim]"), e2.getMessage());
        Files.writeString(f, "[model]\nnum_experts = 6\n[parallel]\nep = 4\n");
        var e3 = assertThrows(IllegalArgumentException.class, () -> TrainConfig.fromToml(f).build());
        assertEquals("num_experts (6) must be divisible by ep (4)", e3.getMessage());
        Files.writeString(f, "[model\n");
        var e4 = assertThrows(IllegalArgumentException.class, () -> TrainConfig.fromToml(f));
        assertTrue(e4.getMessage().contains("cannot read config"), e4.getMessage());
    }
}
