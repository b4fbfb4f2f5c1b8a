package moe4j.kernels.cuda;

import java.lang.foreign.MemorySegment;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * One GPU: its primary context (the one cuBLAS and NCCL use too), its memory pool and its kernels.
 * Kernel modules are compiled for the GPU's architecture on first use (see {@link KernelSource}) and
 * loaded once per process as context-independent libraries.
 */
public final class CudaGpu {
    private static final Map<Integer, CudaGpu> GPUS = new HashMap<>();

    final int ordinal;
    final CudaDriver driver;
    final MemorySegment context;
    final MemorySegment memPool;
    final int computeCapability;
    final int multiprocessors;
    final String name;
    private final Map<KernelSource, MemorySegment> libraries = new EnumMap<>(KernelSource.class);
    private final Map<String, MemorySegment> kernels = new HashMap<>();

    private CudaGpu(int ordinal) {
        this.driver = CudaDriver.get();
        this.ordinal = ordinal;
        this.context = driver.primaryContext(ordinal);
        driver.setCurrent(context);
        this.memPool = driver.defaultMemPool(ordinal);
        // keep freed memory in the pool across synchronisations: no driver allocation in the steady state
        driver.setPoolAttribute(memPool, CudaDriver.CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, -1L);
        this.computeCapability = driver.computeCapability(ordinal);
        this.multiprocessors = driver.multiprocessors(ordinal);
        this.name = driver.deviceName(ordinal);
    }

    /** GPU {@code ordinal} (cuda:N), its context made current on the calling thread. */
    public static CudaGpu of(int ordinal) {
        CudaGpu g;
        synchronized (GPUS) {
            g = GPUS.computeIfAbsent(ordinal, CudaGpu::new);
        }
        g.makeCurrent();
        return g;
    }

    /** Binds this GPU's primary context to the calling thread (each thread that calls CUDA needs it once). */
    public void makeCurrent() {
        driver.setCurrent(context);
    }

    public int ordinal() {
        return ordinal;
    }

    public String name() {
        return name;
    }

    public int computeCapability() {
        return computeCapability;
    }

    public int multiprocessors() {
        return multiprocessors;
    }

    /** The kernel {@code name} of {@code module}, compiling and loading the module on first use. */
    synchronized MemorySegment kernel(KernelSource module, String name) {
        MemorySegment k = kernels.get(name);
        if (k != null) return k;
        MemorySegment lib = libraries.computeIfAbsent(module, this::load);
        k = driver.kernel(lib, name);
        kernels.put(name, k);
        return k;
    }

    private MemorySegment load(KernelSource module) {
        return driver.loadLibrary(compiled(module, computeCapability));
    }

    /** The module's cubin for {@code arch}, from the disk cache or compiled by NVRTC. */
    static byte[] compiled(KernelSource module, int arch) {
        Nvrtc nvrtc = Nvrtc.get();
        String source = module.source();
        String key = KernelSource.cacheKey(module.file(), source, arch, CudaDriver.get().driverVersion(), nvrtc.version());
        return KernelSource.cached(KernelSource.cacheDirectory(), key,
                () -> nvrtc.compile(module.file(), source, arch, List.of()));
    }

    /** Compiles and loads every kernel module (for the info and probe commands); returns the kernel count. */
    public int loadAllKernels() {
        int n = 0;
        for (KernelSource m : KernelSource.values()) {
            for (String k : m.kernelNames()) {
                kernel(m, k);
                n++;
            }
        }
        return n;
    }

    /** One line: name, memory, compute capability, SMs. */
    public String describe() {
        return String.format(Locale.ROOT, "cuda:%d %s, %.1f GiB, compute capability %d.%d, %d SMs", ordinal, name,
                driver.totalMemory(ordinal) / (double) (1L << 30), computeCapability / 10, computeCapability % 10, multiprocessors);
    }
}
