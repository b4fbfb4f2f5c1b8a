package moe4j.tensor;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** The process's memory as the kernel sees it (Linux /proc/self/status); -1 where that is not available. */
public final class ProcessMemory {
    private ProcessMemory() {}

    /** Resident set size now (VmRSS). */
    public static long residentBytes() {
        return field("VmRSS:");
    }

    /** The largest resident set size so far (VmHWM): the run's peak memory. */
    public static long peakResidentBytes() {
        return field("VmHWM:");
    }

    private static long field(String name) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith(name)) return Long.parseLong(line.replaceAll("\\D", "")) * 1024;
            }
        } catch (IOException | NumberFormatException e) {
            return -1;
        }
        return -1;
    }
}
