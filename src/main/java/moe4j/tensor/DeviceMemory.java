package moe4j.tensor;

/**
 * A block of memory on a non-CPU device, as its backend represents it (for CUDA, a device pointer). Host
 * code never reads it; kernels of the same backend and the backend's {@link DeviceAllocator} do.
 * Implementations are the backend's own; a backend's kernels may cast to them.
 */
public interface DeviceMemory {
    Device device();

    long byteSize();

    /**
     * The bytes {@code [offset, offset + length)} of this block, sharing its memory (used for tensor
     * views: {@code rows()} of a device tensor).
     */
    DeviceMemory slice(long offset, long length);
}
