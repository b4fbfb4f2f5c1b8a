package moe4j.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The attention kernels' index arithmetic checked without a GPU: {@code attention.cu} is compiled as C++
 * by the host compiler against an emulation of the CUDA builtins it uses ({@code emulation/host_emulation.h}:
 * a thread per CUDA thread, warp collectives through barriers, mma.sync and ldmatrix written out from the
 * PTX ISA's fragment layouts in place of the module's inline PTX section), run on random inputs, and
 * compared with a float64 reference ({@code emulation/attention_check.cpp}). Tensor-core kernels: out, dq,
 * dk, dv within 2e-2 norm-wise of the reference on the bf16-rounded inputs (plus an rms floor of 1e-4 for
 * gradients that vanish exactly, dQ and dK of a single key), the log-sum-exps within 1e-4; the f32
 * kernels with sliding windows within 1e-5. Skipped where no g++ with C++20 is installed.
 */
class CudaAttentionEmulationTest {
    static final String BEGIN = "// ---- inline PTX begins";
    static final String END = "// ---- inline PTX ends ----";

    @TempDir
    static Path dir;
    static Path binary;

    @BeforeAll
    static void compile() throws Exception {
        Path gpp = List.of(Path.of("/usr/bin/g++"), Path.of("/usr/local/bin/g++")).stream().filter(Files::isExecutable).findFirst()
                .orElse(null);
        assumeTrue(gpp != null, "no g++ on this machine");
        String source = KernelSource.ATTENTION.source();
        int begin = source.indexOf(BEGIN), end = source.indexOf(END);
        assertTrue(begin > 0 && end > begin, "attention.cu marks its inline PTX section");
        Files.writeString(dir.resolve("kernels.cu"), source.substring(0, begin) + source.substring(end));
        for (String f : List.of("host_emulation.h", "attention_check.cpp")) {
            try (InputStream in = CudaAttentionEmulationTest.class.getResourceAsStream("/moe4j/kernels/cuda/emulation/" + f)) {
                Files.write(dir.resolve(f), in.readAllBytes());
            }
        }
        binary = dir.resolve("attention_check");
        Process p = new ProcessBuilder(gpp.toString(), "-std=c++20", "-O1", "-pthread", "-o", binary.toString(),
                dir.resolve("attention_check.cpp").toString()).redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        int rc = p.waitFor();
        assumeTrue(!(rc != 0 && log.contains("barrier")), "this g++ lacks C++20's <barrier>");
        assertEquals(0, rc, "the emulation failed to compile:\n" + log);
    }

    /** {name: [diff norm, reference norm, n]} of one run. */
    static Map<String, double[]> run(int b, int s, int hq, int hkv, int hd, int window, String products) throws IOException,
            InterruptedException {
        Process p = new ProcessBuilder(binary.toString(), "" + b, "" + s, "" + hq, "" + hkv, "" + hd, "" + window, products)
                .redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "emulated attention did not finish");
        assertEquals(0, p.exitValue(), out);
        Map<String, double[]> r = new LinkedHashMap<>();
        for (String line : out.strip().split("\n")) {
            String[] f = line.trim().split(" ");
            r.put(f[0], new double[] {Double.parseDouble(f[1]), Double.parseDouble(f[2]), Double.parseDouble(f[3])});
        }
        assertEquals(List.of("out", "lse", "dq", "dk", "dv"), List.copyOf(r.keySet()), out);
        return r;
    }

    static void within(String what, double[] e, double tol, double floor) {
        assertTrue(e[0] <= tol * e[1] + floor * Math.sqrt(e[2]), what + ": error norm " + e[0] + ", reference norm " + e[1]);
    }

    static void tensorCores(int b, int s, int hq, int hkv, int hd, int window) throws Exception {
        String shape = "bf16 B=" + b + " S=" + s + " Hq=" + hq + " Hkv=" + hkv + " hd=" + hd + " window=" + window;
        Map<String, double[]> r = run(b, s, hq, hkv, hd, window, "bf16");
        for (String name : List.of("out", "dq", "dk", "dv")) within(shape + " " + name, r.get(name), 2e-2, 1e-4);
        within(shape + " lse", r.get("lse"), 1e-4, 0);
    }

    @Test
    void tensorCoreKernelsAtHeadDimension64() throws Exception {
        tensorCores(1, 1, 1, 1, 64, 0);
        tensorCores(1, 37, 2, 1, 64, 0);
        tensorCores(1, 130, 4, 2, 64, 0);
        tensorCores(1, 150, 4, 4, 64, 7);
    }

    @Test
    void tensorCoreKernelsAtHeadDimension128() throws Exception {
        tensorCores(2, 64, 2, 2, 128, 0);
        tensorCores(1, 100, 4, 1, 128, 0);
        tensorCores(1, 129, 2, 1, 128, 64);
    }

    @Test
    void exactKernelsWithSlidingWindows() throws Exception {
        int[][] cases = {{1, 37, 2, 1, 24, 5}, {1, 40, 4, 2, 32, 16}, {1, 20, 2, 1, 16, 40}};
        for (int[] c : cases) {
            Map<String, double[]> r = run(c[0], c[1], c[2], c[3], c[4], c[5], "f32");
            for (var e : r.entrySet()) within("f32 S=" + c[1] + " window=" + c[5] + " " + e.getKey(), e.getValue(), 1e-5, 0);
        }
    }
}
