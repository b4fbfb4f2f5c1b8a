package moe4j.tensor;

import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Where a tensor's memory lives and where the kernels that read it run: the host ({@link #CPU}) or one
 * accelerator of a kind ({@code cuda:0}, {@code cuda:1}, ...). A value: two devices are equal when kind
 * and index are.
 *
 * <p>The kind names a backend; memory on a device is obtained through the {@link DeviceAllocator} that
 * backend registers, and its kernels through {@code moe4j.kernels.Kernels.of(device)}.
 *
 * @param kind  lower-case backend name: {@code cpu}, {@code cuda}, or another registered backend
 * @param index the accelerator's ordinal within its kind; always 0 for the CPU
 */
public record Device(String kind, int index) {
    // before CPU: the constructor of that constant uses them
    private static final Pattern KIND = Pattern.compile("[a-z][a-z0-9_]*");
    private static final Pattern SPEC = Pattern.compile("([a-z][a-z0-9_]*)(?::(\\d{1,4}))?");

    /** The host: memory is an off-heap segment the JVM reads directly. */
    public static final Device CPU = new Device("cpu", 0);

    public Device {
        if (kind == null || !KIND.matcher(kind).matches()) {
            throw new IllegalArgumentException("device kind '" + kind + "' is not a lower-case name such as cpu or cuda");
        }
        if (index < 0) throw new IllegalArgumentException("device index " + index + " of " + kind + ", expected >= 0");
        if (kind.equals("cpu") && index != 0) {
            throw new IllegalArgumentException("the cpu device has no index (got cpu:" + index + ")");
        }
    }

    /** The CUDA GPU with the given ordinal. */
    public static Device cuda(int index) {
        return new Device("cuda", index);
    }

    /** "cpu", "cuda" (= cuda:0), "cuda:N", or "KIND:N" for another backend's device. */
    public static Device parse(String spec) {
        Matcher m = spec == null ? null : SPEC.matcher(spec.trim());
        if (m == null || !m.matches()) {
            throw new IllegalArgumentException("device '" + spec + "' is not of the form cpu, cuda or cuda:N");
        }
        if (m.group(1).equals("cpu")) {
            if (m.group(2) != null) throw new IllegalArgumentException("device '" + spec + "': the cpu device has no index");
            return CPU;
        }
        return new Device(m.group(1), m.group(2) == null ? 0 : Integer.parseInt(m.group(2)));
    }

    public boolean isCpu() {
        return this.equals(CPU);
    }

    @Override
    public String toString() {
        return isCpu() ? "cpu" : kind + ":" + index;
    }
}
