package moe4j.kernels.cpu;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Locale;
import java.util.Properties;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * The FP32 peak of one core, measured: a short probe runs independent vector FMA chains on one thread
 * (enough of them to cover the FMA latency on every pipe) and counts 2 flops per lane per FMA. It is the
 * yardstick for model FLOP utilisation (MFU), so it uses the same vector species as the GEMM: the FMA rate
 * the kernels can reach on this CPU, at the clock it runs at.
 *
 * <p>The probe takes about half a second, so its result is cached on disk per CPU and vector width
 * ({@code $XDG_CACHE_HOME/moe4j} or {@code ~/.cache/moe4j}); a cache that cannot be written only costs the
 * probe again next time. It times by the thread's CPU time and keeps the best of several runs, so time the
 * OS gives to other processes does not count; a sibling hyperthread busy with its own FMAs still lowers it.
 */
public final class Fp32Peak {
    private Fp32Peak() {}

    /**
     * One core's FP32 peak.
     *
     * @param gflopsPerCore FMA throughput of one core, GFLOP/s
     * @param cores         processors available to this JVM
     * @param source        "measured now" or the cache file it was read from
     */
    public record Peak(double gflopsPerCore, int cores, String source) {
        /** The whole machine: cores × one core's peak. */
        public double gflops() {
            return gflopsPerCore * cores;
        }

        /** One line for reports. */
        public String describe() {
            return String.format(Locale.ROOT, "%.0f GFLOP/s per core × %d cores = %.0f GFLOP/s FP32 (%s)",
                    gflopsPerCore, cores, gflops(), source);
        }
    }

    private static final VectorSpecies<Float> S = GemmBlocked.S;
    private static final int CHAINS = 12;
    private static volatile float sink;
    private static Peak cached;

    /** This machine's peak: from the disk cache when a probe of this CPU has run before, else measured now. */
    public static synchronized Peak thisMachine() {
        if (cached != null) return cached;
        CpuFacts cpu = CpuFacts.thisMachine();
        String key = cacheKey(cpu);
        Path file = cacheFile();
        Double known = file == null ? null : read(file, key);
        if (known != null) {
            cached = new Peak(known, cpu.cores(), "cached in " + file);
        } else {
            double measured = measureGflopsPerCore();
            if (file != null) write(file, key, measured);
            cached = new Peak(measured, cpu.cores(), "measured now");
        }
        return cached;
    }

    /**
     * Runs the probe now and keeps the higher of this and the cached figure (a probe that ran while the
     * machine was busy reads low; a later quiet one corrects it). {@code moe4j info} does this.
     */
    public static synchronized Peak remeasure() {
        CpuFacts cpu = CpuFacts.thisMachine();
        String key = cacheKey(cpu);
        Path file = cacheFile();
        Double known = file == null ? null : read(file, key);
        double measured = measureGflopsPerCore();
        if (known != null && known >= measured) {
            cached = new Peak(known, cpu.cores(), "cached in " + file + "; " + String.format(Locale.ROOT, "%.0f", measured) + " now");
        } else {
            if (file != null) write(file, key, measured);
            cached = new Peak(measured, cpu.cores(), "measured now");
        }
        return cached;
    }

    /** Runs the probe on the calling thread: GFLOP/s of one core. */
    public static double measureGflopsPerCore() {
        ThreadMXBean threads = ManagementFactory.getThreadMXBean();
        boolean cpuClock = threads.isCurrentThreadCpuTimeSupported();
        if (cpuClock && !threads.isThreadCpuTimeEnabled()) threads.setThreadCpuTimeEnabled(true);
        // until C2 has compiled the loop the interpreter runs it, thousands of times slower: warm up first
        for (int i = 0; i < 60; i++) sink += chains(2_000, i);
        int iterations = 1_000_000;
        double best = 0;
        for (int run = 0; run < 9; run++) {
            long t0 = cpuClock ? threads.getCurrentThreadCpuTime() : System.nanoTime();
            sink += chains(iterations, run);
            long t1 = cpuClock ? threads.getCurrentThreadCpuTime() : System.nanoTime();
            if (t1 > t0) best = Math.max(best, 2.0 * CHAINS * S.length() * iterations / (t1 - t0));
        }
        return best;
    }

    /** Twelve independent FMA chains; the result only keeps the work from being optimised away. */
    private static float chains(int iterations, float seed) {
        FloatVector x0 = FloatVector.broadcast(S, seed), x1 = x0.add(1), x2 = x0.add(2), x3 = x0.add(3);
        FloatVector x4 = x0.add(4), x5 = x0.add(5), x6 = x0.add(6), x7 = x0.add(7);
        FloatVector x8 = x0.add(8), x9 = x0.add(9), x10 = x0.add(10), x11 = x0.add(11);
        FloatVector m = FloatVector.broadcast(S, 0.999f), c = FloatVector.broadcast(S, 1e-3f);
        for (int i = 0; i < iterations; i++) {
            x0 = x0.fma(m, c); x1 = x1.fma(m, c); x2 = x2.fma(m, c); x3 = x3.fma(m, c);
            x4 = x4.fma(m, c); x5 = x5.fma(m, c); x6 = x6.fma(m, c); x7 = x7.fma(m, c);
            x8 = x8.fma(m, c); x9 = x9.fma(m, c); x10 = x10.fma(m, c); x11 = x11.fma(m, c);
        }
        return x0.add(x1).add(x2).add(x3).add(x4).add(x5).add(x6).add(x7).add(x8).add(x9).add(x10).add(x11).lane(0);
    }

    static String cacheKey(CpuFacts cpu) {
        return (cpu.vendor() + "-" + cpu.family() + "-" + cpu.model() + "-" + cpu.modelName() + "-" + S.vectorBitSize() + "bit")
                .replaceAll("[^A-Za-z0-9_.-]+", "_");
    }

    private static Path cacheFile() {
        String xdg = System.getenv("XDG_CACHE_HOME");
        String home = System.getProperty("user.home");
        Path dir = xdg != null && !xdg.isBlank() ? Path.of(xdg) : home != null ? Path.of(home, ".cache") : null;
        return dir == null ? null : dir.resolve("moe4j").resolve("fp32-peak.properties");
    }

    static Double read(Path file, String key) {
        Properties p = new Properties();
        try (InputStream in = Files.newInputStream(file)) {
            p.load(in);
            String v = p.getProperty(key);
            double gflops = v == null ? Double.NaN : Double.parseDouble(v);
            return gflops > 0 ? gflops : null;
        } catch (IOException | RuntimeException absentOrUnreadable) {
            return null;
        }
    }

    static void write(Path file, String key, double gflopsPerCore) {
        Properties p = new Properties();
        try {
            Files.createDirectories(file.getParent());
            if (Files.exists(file)) {
                try (InputStream in = Files.newInputStream(file)) {
                    p.load(in);
                }
            }
            p.setProperty(key, String.format(Locale.ROOT, "%.1f", gflopsPerCore));
            // written whole, then renamed: a reader never sees half a file
            Path tmp = Files.createTempFile(file.getParent(), "fp32-peak", ".tmp");
            try (OutputStream out = Files.newOutputStream(tmp)) {
                p.store(out, "FP32 FMA peak of one core, GFLOP/s, per CPU and vector width (moe4j)");
            }
            Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException | RuntimeException notWritable) {
            // no cache: the next run measures again
        }
    }
}
