package moe4j.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class Fp32PeakTest {
    @Test
    void probeMeasuresAPlausibleFmaRate() {
        double gflops = Fp32Peak.measureGflopsPerCore();
        // at least one 128-bit FMA per cycle at 0.5 GHz; at most 4 of the widest vectors at 8 GHz
        double lanes = GemmBlocked.L;
        assertTrue(gflops > 4 && gflops < 4 * lanes * 2 * 8, "probe read " + gflops + " GFLOP/s per core");
    }

    @Test
    void cacheKeepsOneFigurePerCpuAndSurvivesGarbage(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("sub").resolve("fp32-peak.properties");
        assertNull(Fp32Peak.read(file, "cpu-a"));
        Fp32Peak.write(file, "cpu-a", 151.26);
        Fp32Peak.write(file, "cpu-b", 98.0);
        assertEquals(151.3, Fp32Peak.read(file, "cpu-a"));
        assertEquals(98.0, Fp32Peak.read(file, "cpu-b"));
        Files.writeString(file, "cpu-a=not a number\ncpu-b=-3\n");
        assertNull(Fp32Peak.read(file, "cpu-a"));
        assertNull(Fp32Peak.read(file, "cpu-b"));
    }

    @Test
    void cacheKeyNamesTheCpuAndVectorWidth() {
        CpuFacts cpu = new CpuFacts("GenuineIntel", 6, 106, "Intel(R) Xeon(R) Processor @ 2.80GHz", java.util.Set.of(), 0, 0, 2);
        String key = Fp32Peak.cacheKey(cpu);
        assertTrue(key.startsWith("GenuineIntel-6-106-Intel_R_Xeon_R_Processor_2.80GHz-"), key);
        assertTrue(key.endsWith(GemmBlocked.S.vectorBitSize() + "bit"), key);
    }
}
