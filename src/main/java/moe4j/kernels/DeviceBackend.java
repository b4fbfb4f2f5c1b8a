package moe4j.kernels;

import moe4j.tensor.Device;
import moe4j.tensor.DeviceAllocator;

/**
 * What a device kind brings to moe4j: memory (a {@link DeviceAllocator} per device) and kernels (a
 * {@link Kernels} set per device). A backend is found through {@link java.util.ServiceLoader} (a
 * {@code META-INF/services/moe4j.kernels.DeviceBackend} entry in its jar) the first time a device of its
 * kind is used, or installed explicitly with {@link #install}. Loading one must cost nothing until then:
 * native libraries are opened in {@link #allocator} or {@link #kernels}, not in the constructor.
 *
 * <p>Streams: every call of the allocator and the kernels runs on the calling thread's stream, which the
 * backend keeps per {@link ExecutionContext} ({@link ExecutionContext#resource}).
 */
public interface DeviceBackend {
    /** The device kind served, as in {@link Device#kind()}: {@code cpu}, {@code cuda}. */
    String kind();

    /** The memory service of {@code device} (not asked of the CPU backend: host memory needs none). */
    DeviceAllocator allocator(Device device);

    Kernels kernels(Device device);

    /** Native handles of this kind's memory and streams, for a collective library working beside the kernels. */
    default DeviceStreams streams() {
        throw new UnsupportedOperationException("devices of kind '" + kind() + "' have no native streams");
    }

    /** Makes {@code backend} the one for its kind, for memory and kernels (replacing an earlier one). */
    static void install(DeviceBackend backend) {
        String kind = backend.kind();
        Kernels.Backends.BY_KIND.put(kind, backend);
        Kernels.Backends.BY_DEVICE.keySet().removeIf(d -> d.kind().equals(kind));
        if (!kind.equals(Device.CPU.kind())) DeviceAllocator.register(kind, backend::allocator); // host memory needs none
    }

    /** The backend of {@code kind}: installed, or found by the service loader (and then installed). */
    static DeviceBackend find(String kind) {
        DeviceBackend b = Kernels.Backends.BY_KIND.get(kind);
        if (b != null) return b;
        synchronized (Kernels.Backends.class) {
            b = Kernels.Backends.BY_KIND.get(kind);
            if (b != null) return b;
            b = Kernels.Backends.load(kind);
            if (b == null) {
                throw new IllegalStateException("no backend for devices of kind '" + kind + "' is installed or on the"
                        + " class path (a jar providing moe4j.kernels.DeviceBackend for '" + kind + "')");
            }
            install(b);
            return b;
        }
    }
}
