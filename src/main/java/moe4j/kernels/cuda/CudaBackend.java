package moe4j.kernels.cuda;

import moe4j.kernels.DeviceBackend;
import moe4j.kernels.DeviceStreams;
import moe4j.kernels.Kernels;
import moe4j.tensor.Device;
import moe4j.tensor.DeviceAllocator;
import moe4j.tensor.DeviceMemory;

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

    @Override
    public DeviceStreams streams() {
        return STREAMS;
    }

    /** Device pointers and the calling thread's {@link CudaStream}, for NCCL. */
    private static final DeviceStreams STREAMS = new DeviceStreams() {
        @Override
        public long address(DeviceMemory memory) {
            return CudaAllocator.cuda(memory).address();
        }

        @Override
        public long stream(Device device) {
            CudaStream s = CudaStream.ofThisThread(device.index());
            s.gpu.makeCurrent();
            return s.stream.address();
        }

        @Override
        public boolean idle(Device device) {
            CudaStream s = CudaStream.ofThisThread(device.index());
            s.gpu.makeCurrent(); // as stream(): the query runs in the stream's own context whatever the thread did since
            return s.driver.query(s.stream);
        }
    };
}
