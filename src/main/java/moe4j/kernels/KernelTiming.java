package moe4j.kernels;

import java.util.List;

/**
 * The device time of the kernels one thread queued over a stretch of work (one training step), by
 * kernel name, as measured by events around each of them on the device's stream.
 *
 * @param spanSeconds from the start of the first timed kernel to the end of the last
 * @param kernels per name: calls and summed device seconds, most time first
 */
public record KernelTiming(double spanSeconds, List<Entry> kernels) {
    public record Entry(String name, int calls, double seconds) {}

    /** Seconds the timed kernels kept the device busy: the span less this is idle or untimed work (collectives). */
    public double busySeconds() {
        return kernels.stream().mapToDouble(Entry::seconds).sum();
    }
}
