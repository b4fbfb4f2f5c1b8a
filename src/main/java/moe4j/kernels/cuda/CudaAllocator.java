package moe4j.kernels.cuda;

import java.lang.foreign.MemorySegment;
import moe4j.tensor.Device;
import moe4j.tensor.DeviceAllocator;
import moe4j.tensor.DeviceMemory;

/**
 * Tensor memory on one GPU, from the calling thread's stream-ordered pool ({@link CudaStream}); every
 * copy is issued on that stream. Frees may come from any thread (the tensor cleaner): one from another
 * thread than the owning stream's is queued and done by that thread at its next allocation.
 */
final class CudaAllocator implements DeviceAllocator {
    private final Device device;
    private final CudaGpu gpu;

    CudaAllocator(Device device) {
        this.device = device;
        this.gpu = CudaGpu.of(device.index());
    }

    private CudaStream stream() {
        return CudaStream.of(gpu);
    }

    static CudaMemory cuda(DeviceMemory m) {
        if (m instanceof CudaMemory c) return c;
        throw new IllegalArgumentException("memory of " + m.device() + " handed to the cuda allocator");
    }

    @Override
    public Device device() {
        return device;
    }

    @Override
    public DeviceMemory allocate(long byteSize) {
        DeviceMemory block = allocateUninitialized(byteSize);
        stream().zero(cuda(block).address(), byteSize);
        return block;
    }

    @Override
    public DeviceMemory allocateUninitialized(long byteSize) {
        CudaStream s = stream();
        s.freeDeferred();
        long address = s.pool.allocatePersistent(byteSize, "a " + byteSize + "-byte tensor");
        return new CudaMemory(device, address, byteSize, s);
    }

    @Override
    public void free(DeviceMemory block) {
        CudaMemory m = cuda(block);
        if (m.owner() == null) throw new IllegalArgumentException("a slice of a block cannot be freed, only the block");
        m.owner().freeFromAnyThread(m.address());
    }

    @Override
    public void copyFromHost(MemorySegment src, DeviceMemory dst) {
        CudaMemory d = cuda(dst);
        requireSameSize(src.byteSize(), d.byteSize());
        CudaStream s = stream();
        // from pageable memory the driver stages the bytes before returning; from native memory it may not: wait
        s.copyToDevice(d.address(), src, d.byteSize());
        s.synchronize();
    }

    @Override
    public void copyToHost(DeviceMemory src, MemorySegment dst) {
        CudaMemory m = cuda(src);
        requireSameSize(m.byteSize(), dst.byteSize());
        CudaStream s = stream();
        s.copyToHost(dst, m.address(), m.byteSize());
        s.synchronize();
    }

    @Override
    public void copy(DeviceMemory src, DeviceMemory dst) {
        requireSameSize(src.byteSize(), dst.byteSize());
        stream().copyOnDevice(cuda(dst).address(), cuda(src).address(), src.byteSize());
    }

    @Override
    public void zero(DeviceMemory block) {
        stream().zero(cuda(block).address(), block.byteSize());
    }

    private static void requireSameSize(long a, long b) {
        if (a != b) throw new IllegalArgumentException("copy between blocks of " + a + " and " + b + " bytes");
    }

    @Override
    public long peakBytesOfThisThread() {
        return stream().pool().peakBytes();
    }
}
