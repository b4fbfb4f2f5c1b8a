package moe4j.kernels.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;
import java.util.List;

/**
 * The CUDA driver API ({@code libcuda.so.1}) through the FFM API. Only {@code cuGetProcAddress_v2} is
 * looked up by name; every other entry point is resolved through it with the CUDA version whose
 * ABI the descriptor below transcribes. That matters: the library also exports the unsuffixed
 * legacy symbols ({@code cuMemAlloc} takes a 32-bit size and pointer), which a plain symbol lookup
 * would bind silently. Every call returns a {@code CUresult}; a non-zero one becomes a
 * {@link CudaException} carrying {@code cuGetErrorName} and {@code cuGetErrorString}.
 *
 * <p>Handles ({@code CUcontext}, {@code CUstream}, {@code CUevent}, ...) are addresses;
 * {@code CUdeviceptr} is a {@code long}.
 */
public final class CudaDriver {
    static final String LIBRARY = "cuda";
    /** The ABI version asked of cuGetProcAddress for entry points whose table entry names none. */
    static final int ABI_VERSION = 12000;

    public static final int CU_STREAM_NON_BLOCKING = 1;
    public static final int CU_EVENT_DEFAULT = 0;
    public static final int CU_EVENT_DISABLE_TIMING = 2;
    static final int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
    static final int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
    static final int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
    static final int CU_MEMPOOL_ATTR_RELEASE_THRESHOLD = 4;
    static final int CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT = 5;
    static final int CU_MEMPOOL_ATTR_USED_MEM_CURRENT = 7;
    static final int CUDA_ERROR_NO_DEVICE = 100;
    static final int CUDA_ERROR_OUT_OF_MEMORY = 2;

    /**
     * Every entry point moe4j uses: name as in cuda.h (without the ABI suffix), the CUDA version of the
     * ABI meant (cuGetProcAddress returns the newest variant not newer than it), and the C signature as
     * a descriptor. Checked against cuda.h by a unit test.
     */
    record Entry(String name, int version, FunctionDescriptor descriptor) {}

    private static final FunctionDescriptor R_ADDR = FunctionDescriptor.of(JAVA_INT, ADDRESS);
    static final List<Entry> ENTRIES = List.of(
            new Entry("cuInit", 2000, FunctionDescriptor.of(JAVA_INT, JAVA_INT)),
            new Entry("cuDriverGetVersion", 2020, R_ADDR),
            new Entry("cuGetErrorName", 6000, FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS)),
            new Entry("cuGetErrorString", 6000, FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS)),
            new Entry("cuDeviceGetCount", 2000, R_ADDR),
            new Entry("cuDeviceGet", 2000, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT)),
            new Entry("cuDeviceGetName", 2000, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT)),
            new Entry("cuDeviceTotalMem", 3020, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT)),
            new Entry("cuDeviceGetAttribute", 2000, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT)),
            new Entry("cuDevicePrimaryCtxRetain", 7000, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT)),
            new Entry("cuCtxSetCurrent", 4000, R_ADDR),
            new Entry("cuCtxSynchronize", 2000, FunctionDescriptor.of(JAVA_INT)),
            new Entry("cuMemGetInfo", 3020, FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS)),
            new Entry("cuStreamCreate", 2000, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT)),
            new Entry("cuStreamSynchronize", 2000, R_ADDR),
            new Entry("cuStreamDestroy", 4000, R_ADDR),
            new Entry("cuStreamWaitEvent", 3020, FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_INT)),
            new Entry("cuEventCreate", 2000, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT)),
            new Entry("cuEventRecord", 2000, FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS)),
            new Entry("cuEventSynchronize", 2000, R_ADDR),
            new Entry("cuEventElapsedTime", 2000, FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS)),
            new Entry("cuEventDestroy", 4000, R_ADDR),
            new Entry("cuDeviceGetDefaultMemPool", 11020, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT)),
            new Entry("cuMemPoolSetAttribute", 11020, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS)),
            new Entry("cuMemPoolGetAttribute", 11020, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS)),
            new Entry("cuMemAllocAsync", 11020, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, ADDRESS)),
            new Entry("cuMemFreeAsync", 11020, FunctionDescriptor.of(JAVA_INT, JAVA_LONG, ADDRESS)),
            new Entry("cuMemHostAlloc", 2020, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT)),
            new Entry("cuMemFreeHost", 2000, R_ADDR),
            new Entry("cuMemcpyHtoDAsync", 3020, FunctionDescriptor.of(JAVA_INT, JAVA_LONG, ADDRESS, JAVA_LONG, ADDRESS)),
            new Entry("cuMemcpyDtoHAsync", 3020, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG, ADDRESS)),
            new Entry("cuMemcpyDtoDAsync", 3020, FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, ADDRESS)),
            new Entry("cuMemsetD8Async", 3020, FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_BYTE, JAVA_LONG, ADDRESS)),
            new Entry("cuLibraryLoadData", 12000, FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS, JAVA_INT,
                    ADDRESS, ADDRESS, JAVA_INT)),
            new Entry("cuLibraryGetKernel", 12000, FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS)),
            // f, grid x y z, block x y z, shared bytes, stream, kernelParams, extra
            new Entry("cuLaunchKernel", 4000, FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT,
                    JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, ADDRESS)));

    private static volatile CudaDriver instance;

    private final MethodHandle init, driverGetVersion, getErrorName, getErrorString, deviceGetCount, deviceGet, deviceGetName,
            deviceTotalMem, deviceGetAttribute, primaryCtxRetain, ctxSetCurrent, ctxSynchronize, memGetInfo, streamCreate,
            streamSynchronize, streamDestroy, streamWaitEvent, eventCreate, eventRecord, eventSynchronize, eventElapsedTime,
            eventDestroy, deviceGetDefaultMemPool, memPoolSetAttribute, memPoolGetAttribute, memAllocAsync, memFreeAsync,
            memHostAlloc, memFreeHost, memcpyHtoDAsync, memcpyDtoHAsync, memcpyDtoDAsync, memsetD8Async, libraryLoadData,
            libraryGetKernel, launchKernel;
    private final int driverVersion;
    private final int deviceCount;
    private final ThreadLocal<MemorySegment> scratch = ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(64, 16));

    private CudaDriver() {
        NativeLibrary lib = NativeLibrary.open("the CUDA driver",
                NativeLibrary.configured("driver", List.of("libcuda.so.1")),
                "A cuda device needs an NVIDIA GPU and its driver");
        MethodHandle getProcAddress = lib.function("cuGetProcAddress_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS,
                JAVA_INT, JAVA_LONG, ADDRESS));
        java.util.Map<String, MethodHandle> h = new java.util.HashMap<>();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment pfn = arena.allocate(ADDRESS);
            MemorySegment status = arena.allocate(JAVA_INT);
            for (Entry e : ENTRIES) {
                int rc = (int) getProcAddress.invokeExact(arena.allocateFrom(e.name()), pfn, e.version(), 0L, status);
                MemorySegment address = pfn.get(ADDRESS, 0);
                if (rc != 0 || status.get(JAVA_INT, 0) != 0 || address.equals(MemorySegment.NULL)) {
                    throw CudaException.unavailable("the CUDA driver has no " + e.name() + " for CUDA " + e.version()
                            + " (cuGetProcAddress returned " + rc + ", status " + status.get(JAVA_INT, 0)
                            + "): the driver is too old for moe4j", null);
                }
                h.put(e.name(), lib.function(address, e.descriptor()));
            }
        } catch (CudaException | moe4j.kernels.DeviceUnavailableException e) {
            throw e;
        } catch (Throwable t) {
            throw CudaException.unavailable("the CUDA driver's entry points could not be resolved: " + t, t);
        }
        init = h.get("cuInit");
        driverGetVersion = h.get("cuDriverGetVersion");
        getErrorName = h.get("cuGetErrorName");
        getErrorString = h.get("cuGetErrorString");
        deviceGetCount = h.get("cuDeviceGetCount");
        deviceGet = h.get("cuDeviceGet");
        deviceGetName = h.get("cuDeviceGetName");
        deviceTotalMem = h.get("cuDeviceTotalMem");
        deviceGetAttribute = h.get("cuDeviceGetAttribute");
        primaryCtxRetain = h.get("cuDevicePrimaryCtxRetain");
        ctxSetCurrent = h.get("cuCtxSetCurrent");
        ctxSynchronize = h.get("cuCtxSynchronize");
        memGetInfo = h.get("cuMemGetInfo");
        streamCreate = h.get("cuStreamCreate");
        streamSynchronize = h.get("cuStreamSynchronize");
        streamDestroy = h.get("cuStreamDestroy");
        streamWaitEvent = h.get("cuStreamWaitEvent");
        eventCreate = h.get("cuEventCreate");
        eventRecord = h.get("cuEventRecord");
        eventSynchronize = h.get("cuEventSynchronize");
        eventElapsedTime = h.get("cuEventElapsedTime");
        eventDestroy = h.get("cuEventDestroy");
        deviceGetDefaultMemPool = h.get("cuDeviceGetDefaultMemPool");
        memPoolSetAttribute = h.get("cuMemPoolSetAttribute");
        memPoolGetAttribute = h.get("cuMemPoolGetAttribute");
        memAllocAsync = h.get("cuMemAllocAsync");
        memFreeAsync = h.get("cuMemFreeAsync");
        memHostAlloc = h.get("cuMemHostAlloc");
        memFreeHost = h.get("cuMemFreeHost");
        memcpyHtoDAsync = h.get("cuMemcpyHtoDAsync");
        memcpyDtoHAsync = h.get("cuMemcpyDtoHAsync");
        memcpyDtoDAsync = h.get("cuMemcpyDtoDAsync");
        memsetD8Async = h.get("cuMemsetD8Async");
        libraryLoadData = h.get("cuLibraryLoadData");
        libraryGetKernel = h.get("cuLibraryGetKernel");
        launchKernel = h.get("cuLaunchKernel");
        int rc;
        try {
            rc = (int) init.invokeExact(0);
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuInit", t);
        }
        if (rc == CUDA_ERROR_NO_DEVICE) throw CudaException.unavailable("no CUDA GPU is visible (cuInit: CUDA_ERROR_NO_DEVICE)", null);
        if (rc != 0) throw CudaException.unavailable(CudaException.callFailed(LIBRARY, "cuInit", errorName(rc), errorString(rc)), null);
        driverVersion = intOut(driverGetVersion, "cuDriverGetVersion");
        deviceCount = intOut(deviceGetCount, "cuDeviceGetCount");
        if (deviceCount == 0) throw CudaException.unavailable("no CUDA GPU is visible (cuDeviceGetCount = 0)", null);
    }

    /** The driver, loaded and initialised on first use; throws {@link CudaException#unavailable} when it cannot be. */
    public static CudaDriver get() {
        CudaDriver d = instance;
        if (d != null) return d;
        synchronized (CudaDriver.class) {
            if (instance == null) instance = new CudaDriver();
            return instance;
        }
    }

    /** Whether a CUDA GPU can be used (loads the driver on first call; never throws). */
    public static boolean available() {
        try {
            get();
            return true;
        } catch (CudaException | moe4j.kernels.DeviceUnavailableException | LinkageError e) {
            return false;
        }
    }

    // ---------------------------------------------------------------- errors

    void check(int rc, String call) {
        if (rc != 0) {
            CudaException e = new CudaException(CudaException.callFailed(LIBRARY, call, errorName(rc), errorString(rc)));
            throw e;
        }
    }

    String errorName(int rc) {
        return errorText(getErrorName, rc, "CUDA error " + rc);
    }

    String errorString(int rc) {
        return errorText(getErrorString, rc, "");
    }

    private String errorText(MethodHandle fn, int rc, String fallback) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = arena.allocate(ADDRESS);
            if ((int) fn.invokeExact(rc, p) != 0) return fallback;
            return NativeLibrary.cString(p.get(ADDRESS, 0));
        } catch (Throwable t) {
            return fallback;
        }
    }

    private int intOut(MethodHandle fn, String call) {
        MemorySegment out = scratch.get();
        try {
            check((int) fn.invokeExact(out), call);
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, call, t);
        }
        return out.get(JAVA_INT, 0);
    }

    private MemorySegment handleOut(MethodHandle fnWithIntArg, int arg, String call) {
        MemorySegment out = scratch.get();
        try {
            check((int) fnWithIntArg.invokeExact(out, arg), call);
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, call, t);
        }
        return out.get(ADDRESS, 0);
    }

    private void call(String name, int rc) {
        check(rc, name);
    }

    // ---------------------------------------------------------------- devices and contexts

    public int driverVersion() {
        return driverVersion;
    }

    public int deviceCount() {
        return deviceCount;
    }

    int device(int ordinal) {
        if (ordinal < 0 || ordinal >= deviceCount) {
            throw new IllegalArgumentException("cuda:" + ordinal + " does not exist: " + deviceCount + " GPU(s) visible");
        }
        MemorySegment out = scratch.get();
        try {
            check((int) deviceGet.invokeExact(out, ordinal), "cuDeviceGet");
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuDeviceGet", t);
        }
        return out.get(JAVA_INT, 0);
    }

    public String deviceName(int ordinal) {
        int dev = device(ordinal);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment name = arena.allocate(256);
            call("cuDeviceGetName", (int) deviceGetName.invokeExact(name, 256, dev));
            return name.getString(0);
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuDeviceGetName", t);
        }
    }

    public long totalMemory(int ordinal) {
        int dev = device(ordinal);
        MemorySegment out = scratch.get();
        try {
            call("cuDeviceTotalMem", (int) deviceTotalMem.invokeExact(out, dev));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuDeviceTotalMem", t);
        }
        return out.get(JAVA_LONG, 0);
    }

    int attribute(int ordinal, int attribute) {
        int dev = device(ordinal);
        MemorySegment out = scratch.get();
        try {
            call("cuDeviceGetAttribute", (int) deviceGetAttribute.invokeExact(out, attribute, dev));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuDeviceGetAttribute", t);
        }
        return out.get(JAVA_INT, 0);
    }

    /** Compute capability as major·10 + minor (90 for H100/H200). */
    public int computeCapability(int ordinal) {
        return attribute(ordinal, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR) * 10
                + attribute(ordinal, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
    }

    public int multiprocessors(int ordinal) {
        return attribute(ordinal, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
    }

    MemorySegment primaryContext(int ordinal) {
        return handleOut(primaryCtxRetain, device(ordinal), "cuDevicePrimaryCtxRetain");
    }

    void setCurrent(MemorySegment context) {
        try {
            call("cuCtxSetCurrent", (int) ctxSetCurrent.invokeExact(context));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuCtxSetCurrent", t);
        }
    }

    void synchronizeContext() {
        try {
            call("cuCtxSynchronize", (int) ctxSynchronize.invokeExact());
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuCtxSynchronize", t);
        }
    }

    /** {free, total} bytes of the current context's device. */
    long[] memoryInfo() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment free = arena.allocate(JAVA_LONG);
            MemorySegment total = arena.allocate(JAVA_LONG);
            call("cuMemGetInfo", (int) memGetInfo.invokeExact(free, total));
            return new long[] {free.get(JAVA_LONG, 0), total.get(JAVA_LONG, 0)};
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuMemGetInfo", t);
        }
    }

    // ---------------------------------------------------------------- streams and events

    MemorySegment createStream(int flags) {
        return handleOut(streamCreate, flags, "cuStreamCreate");
    }

    void synchronize(MemorySegment stream) {
        try {
            call("cuStreamSynchronize", (int) streamSynchronize.invokeExact(stream));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuStreamSynchronize", t);
        }
    }

    void destroyStream(MemorySegment stream) {
        try {
            call("cuStreamDestroy", (int) streamDestroy.invokeExact(stream));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuStreamDestroy", t);
        }
    }

    void waitEvent(MemorySegment stream, MemorySegment event) {
        try {
            call("cuStreamWaitEvent", (int) streamWaitEvent.invokeExact(stream, event, 0));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuStreamWaitEvent", t);
        }
    }

    MemorySegment createEvent(int flags) {
        return handleOut(eventCreate, flags, "cuEventCreate");
    }

    void record(MemorySegment event, MemorySegment stream) {
        try {
            call("cuEventRecord", (int) eventRecord.invokeExact(event, stream));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuEventRecord", t);
        }
    }

    void synchronizeEvent(MemorySegment event) {
        try {
            call("cuEventSynchronize", (int) eventSynchronize.invokeExact(event));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuEventSynchronize", t);
        }
    }

    /** Milliseconds between two recorded, completed events. */
    float elapsedMillis(MemorySegment start, MemorySegment end) {
        MemorySegment out = scratch.get();
        try {
            call("cuEventElapsedTime", (int) eventElapsedTime.invokeExact(out, start, end));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuEventElapsedTime", t);
        }
        return out.get(JAVA_FLOAT, 0);
    }

    void destroyEvent(MemorySegment event) {
        try {
            call("cuEventDestroy", (int) eventDestroy.invokeExact(event));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuEventDestroy", t);
        }
    }

    // ---------------------------------------------------------------- memory

    MemorySegment defaultMemPool(int ordinal) {
        return handleOut(deviceGetDefaultMemPool, device(ordinal), "cuDeviceGetDefaultMemPool");
    }

    void setPoolAttribute(MemorySegment pool, int attribute, long value) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocateFrom(JAVA_LONG, value);
            call("cuMemPoolSetAttribute", (int) memPoolSetAttribute.invokeExact(pool, attribute, v));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuMemPoolSetAttribute", t);
        }
    }

    long poolAttribute(MemorySegment pool, int attribute) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(JAVA_LONG);
            call("cuMemPoolGetAttribute", (int) memPoolGetAttribute.invokeExact(pool, attribute, v));
            return v.get(JAVA_LONG, 0);
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuMemPoolGetAttribute", t);
        }
    }

    /** {@code cuMemAllocAsync}; returns the CUresult so that the pool can word out-of-memory itself. */
    int allocAsync(long bytes, MemorySegment stream, long[] address) {
        MemorySegment out = scratch.get();
        int rc;
        try {
            rc = (int) memAllocAsync.invokeExact(out, bytes, stream);
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuMemAllocAsync", t);
        }
        address[0] = rc == 0 ? out.get(JAVA_LONG, 0) : 0;
        return rc;
    }

    void freeAsync(long address, MemorySegment stream) {
        try {
            call("cuMemFreeAsync", (int) memFreeAsync.invokeExact(address, stream));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuMemFreeAsync", t);
        }
    }

    /** Page-locked host memory of {@code bytes}, mapped portable (usable from every context). */
    MemorySegment hostAlloc(long bytes) {
        MemorySegment out = scratch.get();
        try {
            call("cuMemHostAlloc", (int) memHostAlloc.invokeExact(out, bytes, 1));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuMemHostAlloc(" + bytes + " bytes)", t);
        }
        return out.get(ADDRESS, 0).reinterpret(bytes);
    }

    void freeHost(MemorySegment p) {
        try {
            call("cuMemFreeHost", (int) memFreeHost.invokeExact(p));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuMemFreeHost", t);
        }
    }

    void copyToDevice(long dst, MemorySegment src, long bytes, MemorySegment stream) {
        try {
            call("cuMemcpyHtoDAsync", (int) memcpyHtoDAsync.invokeExact(dst, src, bytes, stream));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuMemcpyHtoDAsync", t);
        }
    }

    void copyToHost(MemorySegment dst, long src, long bytes, MemorySegment stream) {
        try {
            call("cuMemcpyDtoHAsync", (int) memcpyDtoHAsync.invokeExact(dst, src, bytes, stream));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuMemcpyDtoHAsync", t);
        }
    }

    void copyOnDevice(long dst, long src, long bytes, MemorySegment stream) {
        try {
            call("cuMemcpyDtoDAsync", (int) memcpyDtoDAsync.invokeExact(dst, src, bytes, stream));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuMemcpyDtoDAsync", t);
        }
    }

    void memset(long dst, byte value, long bytes, MemorySegment stream) {
        try {
            call("cuMemsetD8Async", (int) memsetD8Async.invokeExact(dst, value, bytes, stream));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuMemsetD8Async", t);
        }
    }

    // ---------------------------------------------------------------- modules and launches

    /** Loads a cubin image once for every context ({@code cuLibraryLoadData}). */
    MemorySegment loadLibrary(byte[] image) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment code = arena.allocate(image.length + 1L);
            MemorySegment.copy(image, 0, code, JAVA_BYTE, 0, image.length);
            MemorySegment out = arena.allocate(ADDRESS);
            call("cuLibraryLoadData", (int) libraryLoadData.invokeExact(out, code, MemorySegment.NULL, MemorySegment.NULL, 0,
                    MemorySegment.NULL, MemorySegment.NULL, 0));
            return out.get(ADDRESS, 0);
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuLibraryLoadData", t);
        }
    }

    MemorySegment kernel(MemorySegment library, String name) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(ADDRESS);
            int rc = (int) libraryGetKernel.invokeExact(out, library, arena.allocateFrom(name));
            if (rc != 0) {
                throw new CudaException(CudaException.callFailed(LIBRARY, "cuLibraryGetKernel(\"" + name + "\")", errorName(rc),
                        errorString(rc)));
            }
            return out.get(ADDRESS, 0);
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuLibraryGetKernel", t);
        }
    }

    void launch(MemorySegment kernel, String name, int gx, int gy, int gz, int bx, int by, int bz, int sharedBytes,
                MemorySegment stream, MemorySegment params) {
        int rc;
        try {
            rc = (int) launchKernel.invokeExact(kernel, gx, gy, gz, bx, by, bz, sharedBytes, stream, params, MemorySegment.NULL);
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cuLaunchKernel(" + name + ")", t);
        }
        if (rc != 0) {
            throw new CudaException(CudaException.callFailed(LIBRARY, "cuLaunchKernel(" + name + ", grid " + gx + "x" + gy + "x" + gz
                    + ", block " + bx + "x" + by + "x" + bz + ", " + sharedBytes + " B shared)", errorName(rc), errorString(rc)));
        }
    }
}
