package moe4j.tensor;

import java.lang.foreign.MemorySegment;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Function;

/**
 * The memory service a device backend provides to {@link Tensor}: allocation and the three explicit
 * copies. It is the only way the tensor layer touches device memory.
 *
 * <p><b>Ordering.</b> A device may run asynchronously, with one stream of work per rank thread (CUDA).
 * Every call is issued on the calling thread's stream and ordered after the work already issued there:
 * a kernel that writes a tensor and a copy that reads it need no other synchronisation. The copies to the
 * host are the exception that makes host reads safe: they return only when the bytes are in host memory.
 *
 * <p><b>Lifetime.</b> {@link Tensor} decides when memory is freed: memory allocated while a
 * {@link MemoryScope} is open is freed when that scope closes (on the thread that opened it, in stream
 * order); memory allocated persistently is freed once its last tensor is unreachable, from a cleaner
 * thread, so {@link #free} must accept calls from any thread (a backend may defer them to its stream).
 *
 * <p>Backends register a factory per device kind with {@link #register}; {@code moe4j.kernels} does
 * this when a rank enters an execution context on the device.
 */
public interface DeviceAllocator {
    /** The device this allocator serves. */
    Device device();

    /** {@code byteSize} bytes, zero-filled, aligned for any element type (256 bytes is plenty). */
    DeviceMemory allocate(long byteSize);

    /**
     * {@code byteSize} bytes whose contents are unspecified, for a result every element of which is about to
     * be written (saves the zero fill); a backend that cannot skip the fill zeroes them as {@link #allocate}.
     */
    default DeviceMemory allocateUninitialized(long byteSize) {
        return allocate(byteSize);
    }

    /** Gives back a block {@link #allocate} returned; may be called from any thread. */
    void free(DeviceMemory block);

    /** Copies all of {@code src} (host memory) into {@code dst}, whose size must equal it. */
    void copyFromHost(MemorySegment src, DeviceMemory dst);

    /** Copies all of {@code src} into {@code dst} (host memory); returns when the bytes are there. */
    void copyToHost(DeviceMemory src, MemorySegment dst);

    /** Copies {@code src} to {@code dst} on this device (same size), ordered on the stream. */
    void copy(DeviceMemory src, DeviceMemory dst);

    /** Sets every byte of {@code block} to zero, ordered on the stream. */
    void zero(DeviceMemory block);

    /**
     * The most bytes the calling thread's allocations on this device held at once (parameters, optimizer
     * state, activations and scratch of one rank), or -1 where the backend does not keep that count.
     */
    default long peakBytesOfThisThread() {
        return -1;
    }

    // ---------------------------------------------------------------- registry

    /** Makes {@code factory} the source of allocators for devices of {@code kind} (replacing any earlier one). */
    static void register(String kind, Function<Device, DeviceAllocator> factory) {
        if (kind.equals(Device.CPU.kind())) {
            throw new IllegalArgumentException("the cpu device uses host memory and takes no allocator");
        }
        Registry.FACTORIES.put(kind, factory);
        Registry.ALLOCATORS.keySet().removeIf(d -> d.kind().equals(kind));
    }

    /** The allocator of {@code device} (one per device, created on first use). */
    static DeviceAllocator of(Device device) {
        if (device.isCpu()) throw new IllegalArgumentException("the cpu device uses host memory and has no allocator");
        return Registry.ALLOCATORS.computeIfAbsent(device, d -> {
            Function<Device, DeviceAllocator> factory = Registry.FACTORIES.get(d.kind());
            if (factory == null) {
                throw new IllegalStateException("no memory allocator for device " + d + ": its backend is not installed"
                        + " (moe4j.kernels installs it when a rank enters an ExecutionContext on that device)");
            }
            return factory.apply(d);
        });
    }

    /** The registered factories and the allocators made from them. */
    final class Registry {
        private Registry() {}

        private static final Map<String, Function<Device, DeviceAllocator>> FACTORIES = new ConcurrentHashMap<>();
        private static final Map<Device, DeviceAllocator> ALLOCATORS = new ConcurrentHashMap<>();
    }
}
