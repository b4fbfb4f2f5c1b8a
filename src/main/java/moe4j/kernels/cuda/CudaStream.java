package moe4j.kernels.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;

/**
 * The per-thread CUDA state of one GPU: a non-blocking stream, a cuBLAS handle bound to it with its
 * own workspace, the thread's {@link DevicePool}, reusable launch-argument buffers and a small pinned
 * host buffer. Made once per (thread, GPU) by {@link #of}; a rank thread drives its GPU through it.
 * Never shared between threads, never used from virtual threads (a foreign call may move carriers).
 */
public final class CudaStream {
    private static final ThreadLocal<Map<Integer, CudaStream>> STREAMS = ThreadLocal.withInitial(HashMap::new);
    static final long CUBLAS_WORKSPACE_BYTES = 32L << 20;
    static final int MAX_KERNEL_ARGS = 32;
    static final long PINNED_BYTES = 1L << 20;

    final CudaGpu gpu;
    final CudaDriver driver;
    final MemorySegment stream;
    final MemorySegment cublas;
    final DevicePool pool;
    final Thread owner = Thread.currentThread();
    private final Arena arena = Arena.ofShared();
    private final java.util.concurrent.ConcurrentLinkedQueue<Long> deferredFrees = new java.util.concurrent.ConcurrentLinkedQueue<>();
    final MemorySegment argValues = arena.allocate(8L * MAX_KERNEL_ARGS, 16);
    final MemorySegment argPointers = arena.allocate(ADDRESS, MAX_KERNEL_ARGS);
    final MemorySegment alphaBeta = arena.allocate(16, 16);
    final MemorySegment pinned;

    private CudaStream(CudaGpu gpu) {
        this.gpu = gpu;
        this.driver = gpu.driver;
        gpu.makeCurrent();
        this.stream = driver.createStream(CudaDriver.CU_STREAM_NON_BLOCKING);
        this.pool = new DevicePool("cuda:" + gpu.ordinal, new StreamAllocator());
        Cublas blas = Cublas.get();
        this.cublas = blas.createHandle();
        blas.setStream(cublas, stream);
        long workspace = pool.allocatePersistent(CUBLAS_WORKSPACE_BYTES, "the cuBLAS workspace");
        blas.setWorkspace(cublas, workspace, CUBLAS_WORKSPACE_BYTES);
        for (int i = 0; i < MAX_KERNEL_ARGS; i++) argPointers.setAtIndex(ADDRESS, i, argValues.asSlice(8L * i, 8));
        this.pinned = driver.hostAlloc(PINNED_BYTES);
    }

    /** The calling thread's stream on {@code gpu} (made on first use; the GPU's context made current). */
    public static CudaStream of(CudaGpu gpu) {
        CudaStream s = STREAMS.get().get(gpu.ordinal);
        if (s == null) {
            s = new CudaStream(gpu);
            STREAMS.get().put(gpu.ordinal, s);
        }
        return s;
    }

    /**
     * The calling thread's stream on GPU {@code ordinal}: once made, found in the thread's own map, without
     * {@link CudaGpu#of}'s process-wide lock or its context switch. Rank threads that poll their streams
     * (NCCL waits) must not contend with each other's enqueues.
     */
    static CudaStream ofThisThread(int ordinal) {
        CudaStream s = STREAMS.get().get(ordinal);
        return s != null ? s : of(CudaGpu.of(ordinal));
    }

    public CudaGpu gpu() {
        return gpu;
    }

    public DevicePool pool() {
        return pool;
    }

    private RaggedGemm ragged;

    /** This stream's ragged grouped products, their strategy timed once per shape (bf16 products of the general MoE layer). */
    RaggedGemm ragged() {
        if (ragged == null) ragged = new RaggedGemm(this);
        return ragged;
    }

    /** Frees {@code address} now on the owning thread, else queues it for that thread's next allocation. */
    void freeFromAnyThread(long address) {
        if (Thread.currentThread() == owner) pool.free(address);
        else deferredFrees.add(address);
    }

    /** Frees what other threads queued (called by the owning thread). */
    void freeDeferred() {
        for (Long a; (a = deferredFrees.poll()) != null; ) pool.free(a);
    }

    private KeptCopies kept;

    /** The operand copies kept by this thread's open reuse scopes. */
    KeptCopies kept() {
        if (kept == null) kept = new KeptCopies(this);
        return kept;
    }

    private KernelTimer timer;
    private boolean timing;

    /** Starts timing each call queued on this stream, by name ({@link KernelTimer}). */
    void startTiming() {
        if (timer == null) timer = new KernelTimer(this);
        timing = true;
    }

    /** Stops timing, waits for the timed work and returns it by name. */
    moe4j.kernels.KernelTiming stopTiming() {
        if (!timing) return null;
        timing = false;
        return timer.finish();
    }

    /** Marks the start of a call named {@code name} for the kernel timer (nothing when not timing). */
    void begin(String name) {
        if (timing) timer.begin(name);
    }

    /** Marks the end of the call begun last. */
    void end() {
        if (timing) timer.end();
    }

    /** Waits until everything queued on this stream has run. */
    public void synchronize() {
        driver.synchronize(stream);
    }

    /** Starts a kernel launch on this stream. */
    Launch launch(KernelSource module, String kernel) {
        return new Launch(this, gpu.kernel(module, kernel), kernel);
    }

    // ---------------------------------------------------------------- copies

    public void copyToDevice(long dst, MemorySegment src, long bytes) {
        begin("copy host to device");
        driver.copyToDevice(dst, src, bytes, stream);
        end();
    }

    public void copyToHost(MemorySegment dst, long src, long bytes) {
        begin("copy device to host");
        driver.copyToHost(dst, src, bytes, stream);
        end();
    }

    public void copyOnDevice(long dst, long src, long bytes) {
        if (bytes <= 0) return;
        begin("copy device to device " + sizeClass(bytes));
        driver.copyOnDevice(dst, src, bytes, stream);
        end();
    }

    public void zero(long dst, long bytes) {
        memset(dst, (byte) 0, bytes);
    }

    void memset(long dst, byte value, long bytes) {
        if (bytes <= 0) return;
        begin("memset " + sizeClass(bytes));
        driver.memset(dst, value, bytes, stream);
        end();
    }

    /** Copies {@code count} ints from the device into the pinned buffer and waits: the one host sync of a routing. */
    int[] readInts(long src, int count) {
        long bytes = 4L * count;
        if (bytes > PINNED_BYTES) {
            try (Arena a = Arena.ofConfined()) {
                MemorySegment host = a.allocate(bytes);
                driver.copyToHost(host, src, bytes, stream);
                synchronize();
                return host.toArray(JAVA_INT);
            }
        }
        driver.copyToHost(pinned, src, bytes, stream);
        synchronize();
        return pinned.asSlice(0, bytes).toArray(JAVA_INT);
    }

    /** Copies one 8-byte value from the device into the pinned buffer and waits (a scalar the host acts on). */
    long readLong(long src) {
        driver.copyToHost(pinned, src, 8, stream);
        synchronize();
        return pinned.get(JAVA_LONG, 0);
    }

    /** {@link #readLong} for a double. */
    double readDouble(long src) {
        return Double.longBitsToDouble(readLong(src));
    }

    float[] readFloats(long src, int count) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment host = a.allocate(4L * count);
            driver.copyToHost(host, src, 4L * count, stream);
            synchronize();
            return host.toArray(JAVA_FLOAT);
        }
    }

    // ---------------------------------------------------------------- GEMM

    /** Row-major {@code C = alpha·op(A)·op(B) + beta·C} through cuBLAS on this stream (see {@link Cublas#gemmRowMajor}). */
    public void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long b, int ldb,
                     float beta, long c, int ldc, int abType, int cType) {
        gemm(cublas, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, abType, cType);
    }

    /** {@code batch} products of one shape at fixed strides (elements), one cuBLAS call. */
    public void gemmBatched(boolean transA, boolean transB, int m, int n, int k, long a, int lda, long strideA, long b, int ldb,
                            long strideB, long c, int ldc, long strideC, int batch, int abType, int cType) {
        alphaBeta.set(JAVA_FLOAT, 0, 1f);
        alphaBeta.set(JAVA_FLOAT, 4, 0f);
        begin(gemmName("strided batched gemm", transA, transB, m, n, k, abType) + " x" + batch);
        try {
            Cublas.get().gemmStridedBatchedRowMajor(cublas, transA, transB, m, n, k, alphaBeta, a, abType, lda, strideA, b, ldb, strideB,
                    c, cType, ldc, strideC, batch);
        } finally {
            end();
        }
    }

    /**
     * {@code pointers.length / 3} products of one shape whose A, B and C are listed in {@code pointers}
     * (all A first, then all B, then all C), one cuBLAS call.
     */
    void gemmBatched(boolean transA, boolean transB, int m, int n, int k, long[] pointers, int lda, int ldb, int ldc, int abType,
                     int cType) {
        gemmBatched(transA, transB, m, n, k, pointers, lda, ldb, ldc, 0f, abType, cType);
    }

    /** {@link #gemmBatched(boolean, boolean, int, int, int, long[], int, int, int, int, int)} with {@code C ← beta·C + product}. */
    void gemmBatched(boolean transA, boolean transB, int m, int n, int k, long[] pointers, int lda, int ldb, int ldc, float beta,
                     int abType, int cType) {
        int batch = pointers.length / 3;
        long dev = pool.allocate(8L * pointers.length, "batched GEMM pointer arrays");
        try (Arena a = Arena.ofConfined()) {
            // pageable source: the driver stages it before returning, so the arena may close after the call
            copyToDevice(dev, a.allocateFrom(java.lang.foreign.ValueLayout.JAVA_LONG, pointers), 8L * pointers.length);
        }
        alphaBeta.set(JAVA_FLOAT, 0, 1f);
        alphaBeta.set(JAVA_FLOAT, 4, beta);
        begin(gemmName("batched gemm", transA, transB, m, n, k, abType) + " x" + batch);
        try {
            Cublas.get().gemmBatchedRowMajor(cublas, transA, transB, m, n, k, alphaBeta, dev, abType, lda, dev + 8L * batch, ldb,
                    dev + 16L * batch, cType, ldc, batch);
        } finally {
            end();
        }
        pool.free(dev);
    }

    void gemm(MemorySegment handle, boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long b,
              int ldb, float beta, long c, int ldc, int abType, int cType) {
        alphaBeta.set(JAVA_FLOAT, 0, alpha);
        alphaBeta.set(JAVA_FLOAT, 4, beta);
        begin(gemmName("gemm", transA, transB, m, n, k, abType));
        try {
            Cublas.get().gemmRowMajor(handle, transA, transB, m, n, k, alphaBeta, a, abType, lda, b, ldb, c, cType, ldc);
        } finally {
            end();
        }
    }

    /** A size bracket for the kernel timer's names of copies and fills, so that the large ones stand out. */
    static String sizeClass(long bytes) {
        long kib = bytes >> 10;
        return kib < 64 ? "<64K" : kib < 1024 ? "64K-1M" : kib < 16 << 10 ? "1M-16M" : kib < 256 << 10 ? "16M-256M" : ">=256M";
    }

    /** A product's name for the kernel timer: kind, input type, transposes and shape. */
    private static String gemmName(String kind, boolean transA, boolean transB, int m, int n, int k, int abType) {
        return "cublas " + kind + (abType == Cublas.CUDA_R_16BF ? " bf16 " : " f32 ") + (transA ? "T" : "N") + (transB ? "T" : "N")
                + " " + m + "x" + n + "x" + k;
    }

    // ---------------------------------------------------------------- events

    MemorySegment newEvent() {
        return driver.createEvent(CudaDriver.CU_EVENT_DEFAULT);
    }

    void record(MemorySegment event) {
        driver.record(event, stream);
    }

    /** The stream allocator behind {@link #pool}: cuMemAllocAsync / cuMemFreeAsync on this stream. */
    private final class StreamAllocator implements DevicePool.Allocator {
        private final long[] out = new long[1];

        @Override
        public long allocate(long bytes) {
            int rc = driver.allocAsync(bytes, stream, out);
            if (rc == CudaDriver.CUDA_ERROR_OUT_OF_MEMORY) return 0;
            driver.check(rc, "cuMemAllocAsync(" + bytes + " bytes)");
            return out[0];
        }

        @Override
        public void free(long address) {
            driver.freeAsync(address, stream);
        }

        @Override
        public String deviceState() {
            long[] info = driver.memoryInfo();
            long reserved = driver.poolAttribute(gpu.memPool, CudaDriver.CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT);
            long used = driver.poolAttribute(gpu.memPool, CudaDriver.CU_MEMPOOL_ATTR_USED_MEM_CURRENT);
            return String.format(Locale.ROOT, "the device pool has %s reserved, %s in use; the GPU has %s free of %s",
                    DevicePool.human(reserved), DevicePool.human(used), DevicePool.human(info[0]), DevicePool.human(info[1]));
        }
    }

}
