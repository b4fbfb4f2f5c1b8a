package moe4j.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class GemmTuningTest {
    private static CpuFacts cpu(String vendor, int family, long l2) {
        return new CpuFacts(vendor, family, 0, "test", Set.of("avx512f"), 48 << 10, l2, 2);
    }

    @Test
    void zen4KeepsTheBlockingItWasMeasuredWith() {
        GemmTuning t = GemmTuning.forCpu(cpu("AuthenticAMD", 25, 1 << 20), 16);
        assertEquals(GemmTuning.Tile.ROWS8_BY_3_VECTORS, t.tile());
        assertEquals(8, t.mr());
        assertEquals(48, t.nr());
        assertEquals(256, t.kc());
        assertEquals(512, t.mc());
        assertEquals(768, t.nc());
        assertEquals(320, t.directBMaxRows());
    }

    @Test
    void fullWidthFmaMachinesGetTheTileWithoutSpill() {
        GemmTuning intel = GemmTuning.forCpu(cpu("GenuineIntel", 6, 1280 << 10), 16);
        assertEquals(GemmTuning.Tile.ROWS12_BY_2_VECTORS, intel.tile());
        assertEquals(516, intel.mc()); // 43 strips: a 512-row product is one row block
        assertEquals(960, intel.nc()); // 30 strips of 32 KiB in three quarters of 1.25 MiB
        assertEquals(0, intel.directBMaxRows());
        assertEquals(GemmTuning.Tile.ROWS12_BY_2_VECTORS, GemmTuning.forCpu(cpu("AuthenticAMD", 26, 1 << 20), 16).tile());
        // unknown L2: blocked as for 1 MiB
        assertEquals(768, GemmTuning.forCpu(cpu("", -1, 0), 16).nc());
        // narrower vectors keep the long-standing tile
        assertEquals(GemmTuning.Tile.ROWS8_BY_3_VECTORS, GemmTuning.forCpu(cpu("GenuineIntel", 6, 1 << 20), 8).tile());
    }

    @Test
    void badTileNameIsAClearError() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> GemmTuning.Tile.byLabel("9x9"));
        assertTrue(e.getMessage().contains("'9x9'") && e.getMessage().contains("8x3 or 12x2"), e.getMessage());
    }

    @Test
    void cpuFactsReadCpuinfoAndCacheSizes(@TempDir Path dir) throws IOException {
        Path cpuinfo = dir.resolve("cpuinfo");
        Files.writeString(cpuinfo, """
                processor\t: 0
                vendor_id\t: AuthenticAMD
                cpu family\t: 26
                model\t\t: 2
                model name\t: AMD EPYC Test
                flags\t\t: fpu avx2 avx512f avx512_bf16

                processor\t: 1
                vendor_id\t: SomethingElse
                """);
        Path cache = dir.resolve("cache");
        writeCache(cache, 0, "1", "Data", "48K");
        writeCache(cache, 1, "1", "Instruction", "32K");
        writeCache(cache, 2, "2", "Unified", "1024K");
        writeCache(cache, 3, "3", "Unified", "32768K");
        CpuFacts f = CpuFacts.read(cpuinfo, cache);
        assertEquals("AuthenticAMD", f.vendor());
        assertEquals(26, f.family());
        assertEquals(2, f.model());
        assertEquals("AMD EPYC Test", f.modelName());
        assertTrue(f.flags().contains("avx512_bf16"));
        assertEquals(48 << 10, f.l1dBytes());
        assertEquals(1 << 20, f.l2Bytes());
        // nothing readable: unknowns, not an exception
        CpuFacts none = CpuFacts.read(dir.resolve("missing"), dir.resolve("missing-too"));
        assertEquals("", none.vendor());
        assertEquals(-1, none.family());
        assertEquals(0, none.l2Bytes());
        assertEquals(2 << 20, CpuFacts.parseSize("2M"));
        assertEquals(0, CpuFacts.parseSize("lots"));
    }

    private static void writeCache(Path cache, int index, String level, String type, String size) throws IOException {
        Path d = Files.createDirectories(cache.resolve("index" + index));
        Files.writeString(d.resolve("level"), level + "\n");
        Files.writeString(d.resolve("type"), type + "\n");
        Files.writeString(d.resolve("size"), size + "\n");
    }
}
