package moe4j.kernels;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.reflect.InvocationHandler;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.util.concurrent.atomic.AtomicLong;
import moe4j.tensor.Device;
import moe4j.tensor.DeviceAllocator;
import moe4j.tensor.DeviceMemory;
import moe4j.tensor.Tensor;

/**
 * A test-only accelerator, {@code fake:N}: its memory is host memory, but a tensor on it refuses every
 * host access like a GPU tensor would, so any code that reads tensor data outside a kernel or an explicit
 * copy fails. Its kernels are the CPU kernels run on views of that memory, so results must be the CPU's
 * bits exactly. It counts live bytes (to check that scopes free device memory) and kernel calls.
 */
final class FakeDevice implements DeviceBackend {
    static final String KIND = "fake";
    static final AtomicLong LIVE_BYTES = new AtomicLong();
    static final AtomicLong KERNEL_CALLS = new AtomicLong();
    /** Calls of the kernels' {@code synchronize} (a profiled step waits for the device at every phase boundary). */
    static final AtomicLong SYNCHRONIZE_CALLS = new AtomicLong();
    /** Copies from fake memory to the host made by the calling thread (what a GPU would have to wait for). */
    static final ThreadLocal<long[]> COPIES_TO_HOST = ThreadLocal.withInitial(() -> new long[1]);

    record FakeMemory(Device device, MemorySegment segment) implements DeviceMemory {
        @Override
        public long byteSize() {
            return segment.byteSize();
        }

        @Override
        public DeviceMemory slice(long offset, long length) {
            return new FakeMemory(device, segment.asSlice(offset, length));
        }
    }

    static void install() {
        DeviceBackend.install(new FakeDevice());
    }

    @Override
    public String kind() {
        return KIND;
    }

    @Override
    public DeviceAllocator allocator(Device device) {
        return new DeviceAllocator() {
            @Override
            public Device device() {
                return device;
            }

            @Override
            public DeviceMemory allocate(long byteSize) {
                LIVE_BYTES.addAndGet(byteSize);
                return new FakeMemory(device, Arena.ofAuto().allocate(Math.max(byteSize, 1), 64).asSlice(0, byteSize));
            }

            @Override
            public void free(DeviceMemory block) {
                LIVE_BYTES.addAndGet(-block.byteSize());
            }

            @Override
            public void copyFromHost(MemorySegment src, DeviceMemory dst) {
                MemorySegment.copy(src, 0, own(dst), 0, src.byteSize());
            }

            @Override
            public void copyToHost(DeviceMemory src, MemorySegment dst) {
                COPIES_TO_HOST.get()[0]++;
                MemorySegment.copy(own(src), 0, dst, 0, dst.byteSize());
            }

            @Override
            public void copy(DeviceMemory src, DeviceMemory dst) {
                MemorySegment.copy(own(src), 0, own(dst), 0, own(dst).byteSize());
            }

            @Override
            public void zero(DeviceMemory block) {
                own(block).fill((byte) 0);
            }

            private MemorySegment own(DeviceMemory m) {
                if (!(m instanceof FakeMemory f) || !f.device().equals(device)) {
                    throw new IllegalArgumentException("not memory of " + device + ": " + m);
                }
                return f.segment();
            }
        };
    }

    @Override
    public Kernels kernels(Device device) {
        Kernels cpu = Kernels.of(Device.CPU);
        MatmulKernels matmul = onHostViews(MatmulKernels.class, cpu.matmul(), device);
        ElementwiseKernels elementwise = onHostViews(ElementwiseKernels.class, cpu.elementwise(), device);
        ReductionKernels reductions = onHostViews(ReductionKernels.class, cpu.reductions(), device);
        IndexKernels indexing = onHostViews(IndexKernels.class, cpu.indexing(), device);
        RoutingKernels routing = onHostViews(RoutingKernels.class, cpu.routing(), device);
        AttentionKernels attention = onHostViews(AttentionKernels.class, cpu.attention(), device);
        OptimizerKernels optimizer = onHostViews(OptimizerKernels.class, cpu.optimizer(), device);
        return new Kernels() {
            public Device device() {
                return device;
            }

            public MatmulKernels matmul() {
                return matmul;
            }

            public ElementwiseKernels elementwise() {
                return elementwise;
            }

            public ReductionKernels reductions() {
                return reductions;
            }

            public IndexKernels indexing() {
                return indexing;
            }

            public RoutingKernels routing() {
                return routing;
            }

            public AttentionKernels attention() {
                return attention;
            }

            public OptimizerKernels optimizer() {
                return optimizer;
            }

            public void synchronize() {
                SYNCHRONIZE_CALLS.incrementAndGet();
            }
        };
    }

    /** The CPU group {@code cpu}, called with every tensor argument replaced by a CPU view of its fake memory. */
    private static <T> T onHostViews(Class<T> group, T cpu, Device device) {
        InvocationHandler handler = (proxy, method, args) -> {
            if (method.getDeclaringClass() == Object.class) return method.invoke(cpu, args);
            KERNEL_CALLS.incrementAndGet();
            Object[] mapped = args == null ? null : args.clone();
            if (mapped != null) {
                for (int i = 0; i < mapped.length; i++) {
                    if (mapped[i] instanceof Tensor t) mapped[i] = hostView(t, device, method.getName());
                    if (mapped[i] instanceof Tensor[] ts) {
                        Tensor[] views = new Tensor[ts.length];
                        for (int j = 0; j < ts.length; j++) views[j] = hostView(ts[j], device, method.getName());
                        mapped[i] = views;
                    }
                }
            }
            try {
                return method.invoke(cpu, mapped);
            } catch (InvocationTargetException e) {
                throw e.getCause();
            }
        };
        return group.cast(Proxy.newProxyInstance(group.getClassLoader(), new Class<?>[] {group}, handler));
    }

    private static Tensor hostView(Tensor t, Device device, String kernel) {
        if (!t.device().equals(device)) {
            throw new IllegalArgumentException("kernel " + kernel + " of " + device + " got a tensor on " + t.device());
        }
        return Tensor.wrap(((FakeMemory) t.memory()).segment(), t.dtype(), t.shape());
    }
}
