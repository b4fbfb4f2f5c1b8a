package moe4j.kernels.cuda;

import moe4j.tensor.Device;
import moe4j.tensor.DeviceMemory;

/**
 * A block of GPU memory: a device pointer and its size, plus the stream whose pool it came from (a
 * slice shares its parent's). Only the allocation itself ({@code offset} 0, {@code owner} non-null) is
 * ever freed.
 */
record CudaMemory(Device device, long address, long byteSize, CudaStream owner) implements DeviceMemory {
    @Override
    public DeviceMemory slice(long offset, long length) {
        if (offset < 0 || length < 0 || offset + length > byteSize) {
            throw new IllegalArgumentException("slice [" + offset + ", " + (offset + length) + ") of a " + byteSize + "-byte block");
        }
        return new CudaMemory(device, address + offset, length, null);
    }

    /** The device address of element {@code elementOffset} of a float32 / int32 tensor in this block. */
    long at(long elementOffset) {
        return address + 4 * elementOffset;
    }
}
