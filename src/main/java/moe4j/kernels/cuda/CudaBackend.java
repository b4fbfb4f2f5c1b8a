package moe4j.kernels.cuda;

import moe4j.kernels.DeviceBackend;
import moe4j.kernels.Kernels;
import moe4j.tensor.Device;
import moe4j.tensor.DeviceAllocator;

/**
 * The {@code cuda} device kind: memory from each thread's stream-ordered pool, kernels from
 * {@link CudaKernels}. Found through the service loader; the CUDA libraries are opened only when a cuda
 * device is first used (no GPU: {@link moe4j.kernels.DeviceUnavailableException}, one sentence).
 */
public final class CudaBackend implements DeviceBackend {
    @Override
    public String kind() {
        return "cuda";
    }

    @Override
    public DeviceAllocator allocator(Device device) {
        return new CudaAllocator(device);
    }

    @Override
    public Kernels kernels(Device device) {
        return new CudaKernels(device);
    }
}
