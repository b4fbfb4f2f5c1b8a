package moe4j.bench;

import moe4j.kernels.cpu.CpuFacts;
import moe4j.kernels.cpu.Fp32Peak;
import moe4j.kernels.cpu.Gemm;

/**
 * What the command line reports about this machine's CPU and measures utilisation against: the CPU's
 * description, the GEMM tiling chosen for it and the FP32 peak from the FMA probe. The tools package is
 * the one place outside {@code moe4j.kernels} that may name the CPU kernels, so the commands ask here.
 */
public final class CpuYardstick {
    private CpuYardstick() {}

    /** The FP32 peak: per core, the cores it counts, and where the figure came from (probe or cache). */
    public record Peak(double gflopsPerCore, int cores, String source, String describe) {
        public double gflops() {
            return gflopsPerCore * cores;
        }
    }

    /** e.g. the vendor, model and vector extensions this JVM sees. */
    public static String cpu() {
        return CpuFacts.thisMachine().describe();
    }

    /** The register tile and cache blocking the GEMM uses on this CPU. */
    public static String gemmTuning() {
        return Gemm.tuning().describe();
    }

    /** The cached peak (measured once per CPU). */
    public static Peak peak() {
        return of(Fp32Peak.thisMachine());
    }

    /** The peak measured afresh (kept in the cache when higher). */
    public static Peak remeasurePeak() {
        return of(Fp32Peak.remeasure());
    }

    private static Peak of(Fp32Peak.Peak p) {
        return new Peak(p.gflopsPerCore(), p.cores(), p.source(), p.describe());
    }
}
