package moe4j.kernels.cpu;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.TreeSet;

/**
 * What the JVM can learn about the CPU it runs on, for choosing kernel shapes and cache blocking: the
 * vendor, family and model and the feature flags from {@code /proc/cpuinfo}, and the per-core data cache
 * sizes from {@code /sys/devices/system/cpu/cpu0/cache}. Anything that cannot be read is left unknown (empty
 * text, 0, no flags), and the callers fall back to choices that are safe everywhere.
 *
 * @param vendor    {@code vendor_id}, e.g. GenuineIntel or AuthenticAMD
 * @param family    {@code cpu family} (AMD Zen 3 and 4: 25, Zen 5: 26); -1 when unknown
 * @param model     {@code model}; -1 when unknown
 * @param modelName {@code model name}
 * @param flags     the feature flags ({@code avx512f}, {@code avx512_bf16}, ...)
 * @param l1dBytes  level-1 data cache of one core; 0 when unknown
 * @param l2Bytes   level-2 cache of one core; 0 when unknown
 * @param cores     processors available to this JVM
 */
public record CpuFacts(String vendor, int family, int model, String modelName, Set<String> flags,
                       long l1dBytes, long l2Bytes, int cores) {

    private static final CpuFacts THIS_MACHINE = read(Path.of("/proc/cpuinfo"), Path.of("/sys/devices/system/cpu/cpu0/cache"));

    /** The facts of the machine this JVM runs on, read once. */
    public static CpuFacts thisMachine() {
        return THIS_MACHINE;
    }

    public boolean isAmd() {
        return vendor.equals("AuthenticAMD");
    }

    public boolean isIntel() {
        return vendor.equals("GenuineIntel");
    }

    /** One line for reports, e.g. "GenuineIntel family 6 model 106 (Intel(R) Xeon(R) ...), L1d 48 KiB, L2 1280 KiB". */
    public String describe() {
        return String.format(Locale.ROOT, "%s family %d model %d (%s), L1d %s, L2 %s, %d cores",
                vendor.isEmpty() ? "unknown vendor" : vendor, family, model,
                modelName.isEmpty() ? "unknown model" : modelName, kib(l1dBytes), kib(l2Bytes), cores);
    }

    private static String kib(long bytes) {
        return bytes > 0 ? (bytes >> 10) + " KiB" : "unknown";
    }

    /** Reads the facts from a cpuinfo file and a cache directory (either may be missing). */
    static CpuFacts read(Path cpuinfo, Path cacheDir) {
        String vendor = "", modelName = "";
        int family = -1, model = -1;
        Set<String> flags = new TreeSet<>();
        try {
            // the first processor's block is enough: the cores of one machine are alike
            for (String line : Files.readAllLines(cpuinfo)) {
                if (line.isBlank()) break;
                int colon = line.indexOf(':');
                if (colon < 0) continue;
                String key = line.substring(0, colon).trim(), value = line.substring(colon + 1).trim();
                switch (key) {
                    case "vendor_id" -> vendor = value;
                    case "cpu family" -> family = parseInt(value);
                    case "model" -> model = parseInt(value);
                    case "model name" -> modelName = value;
                    case "flags" -> flags.addAll(List.of(value.split("\\s+")));
                    default -> { }
                }
            }
        } catch (IOException | RuntimeException unreadable) {
            // not Linux, or a restricted /proc: the facts stay unknown
        }
        long l1d = 0, l2 = 0;
        for (int index = 0; index < 8; index++) {
            Path dir = cacheDir.resolve("index" + index);
            String level = readTrimmed(dir.resolve("level")), type = readTrimmed(dir.resolve("type"));
            long size = parseSize(readTrimmed(dir.resolve("size")));
            if (level.equals("1") && type.equals("Data")) l1d = size;
            if (level.equals("2") && !type.equals("Instruction")) l2 = size;
        }
        return new CpuFacts(vendor, family, model, modelName, Set.copyOf(flags), l1d, l2,
                Runtime.getRuntime().availableProcessors());
    }

    private static int parseInt(String s) {
        try {
            return Integer.parseInt(s);
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    private static String readTrimmed(Path p) {
        try {
            return Files.readString(p).trim();
        } catch (IOException | RuntimeException e) {
            return "";
        }
    }

    /** "48K", "1280K", "2M" or a plain byte count; 0 when unreadable. */
    static long parseSize(String s) {
        if (s.isEmpty()) return 0;
        long unit = 1;
        char last = Character.toUpperCase(s.charAt(s.length() - 1));
        if (last == 'K') unit = 1024;
        if (last == 'M') unit = 1024 * 1024;
        String digits = unit == 1 ? s : s.substring(0, s.length() - 1);
        try {
            return Long.parseLong(digits.trim()) * unit;
        } catch (NumberFormatException e) {
            return 0;
        }
    }
}
