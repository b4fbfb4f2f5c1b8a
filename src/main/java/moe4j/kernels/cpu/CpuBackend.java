package moe4j.kernels.cpu;

import moe4j.kernels.DeviceBackend;
import moe4j.kernels.Kernels;
import moe4j.tensor.Device;
import moe4j.tensor.DeviceAllocator;

/**
 * The CPU as a backend, found like any other through the service loader: host memory needs no allocator
 * (tensors on the CPU are off-heap segments of their {@link moe4j.tensor.MemoryScope}), and the kernels
 * are {@link CpuKernels}.
 */
public final class CpuBackend implements DeviceBackend {
    @Override
    public String kind() {
        return Device.CPU.kind();
    }

    @Override
    public DeviceAllocator allocator(Device device) {
        throw new UnsupportedOperationException("the cpu device uses host memory and has no allocator");
    }

    @Override
    public Kernels kernels(Device device) {
        if (!device.isCpu()) throw new IllegalArgumentException("the cpu backend serves only the cpu device, not " + device);
        return CpuKernels.INSTANCE;
    }
}
