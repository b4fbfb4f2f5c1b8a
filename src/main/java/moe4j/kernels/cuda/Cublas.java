package moe4j.kernels.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;
import java.util.List;

/**
 * cuBLAS ({@code libcublas.so.13}) through the FFM API: handles, streams, workspaces and the two
 * GEMM entry points moe4j uses. cuBLAS is column-major; {@link #gemmRowMajor} takes row-major
 * operands and swaps them (row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ).
 *
 * <p>Precision: bf16 operands compute with {@code CUBLAS_COMPUTE_32F} (fp32 accumulation); f32
 * operands with {@code CUBLAS_COMPUTE_32F_PEDANTIC}, which forbids TF32 and any reduced-precision
 * shortcut, so f32 results can be compared with the CPU at 1e-5.
 */
public final class Cublas {
    static final String LIBRARY = "cublas";
    public static final int CUDA_R_32F = 0;
    public static final int CUDA_R_16BF = 14;
    static final int CUBLAS_OP_N = 0;
    static final int CUBLAS_OP_T = 1;
    static final int CUBLAS_COMPUTE_32F = 68;
    static final int CUBLAS_COMPUTE_32F_PEDANTIC = 69;
    static final int CUBLAS_GEMM_DEFAULT = -1;

    /** The entry points: exported name and C signature as a descriptor (checked against cublas_api.h by a test). */
    record Entry(String symbol, FunctionDescriptor descriptor) {}

    static final List<Entry> ENTRIES = List.of(
            new Entry("cublasCreate_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS)),
            new Entry("cublasDestroy_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS)),
            new Entry("cublasSetStream_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS)),
            new Entry("cublasSetWorkspace_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG)),
            new Entry("cublasGetProperty", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS)),
            new Entry("cublasGetStatusName", FunctionDescriptor.of(ADDRESS, JAVA_INT)),
            new Entry("cublasGetStatusString", FunctionDescriptor.of(ADDRESS, JAVA_INT)),
            // handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc, computeType, algo
            new Entry("cublasGemmEx", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT,
                    ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT,
                    JAVA_INT, JAVA_INT)),
            // handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb, strideB, beta, C, Ctype, ldc,
            // strideC, batchCount, computeType, algo
            new Entry("cublasGemmStridedBatchedEx", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT,
                    JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, ADDRESS,
                    JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_INT)),
            // handle, transa, transb, m, n, k, alpha, Aarray, Atype, lda, Barray, Btype, ldb, beta, Carray, Ctype, ldc,
            // batchCount, computeType, algo (pointer arrays on the device)
            new Entry("cublasGemmBatchedEx", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT,
                    JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT,
                    JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT)),
            // handle, transa[], transb[], m[], n[], k[], alpha[], Aarray, Atype, lda[], Barray, Btype, ldb[], beta[], Carray,
            // Ctype, ldc[], group_count, group_size[], computeType (arrays on the host, pointer arrays on the device)
            new Entry("cublasGemmGroupedBatchedEx", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS,
                    ADDRESS, ADDRESS, JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, ADDRESS, ADDRESS, JAVA_LONG, JAVA_INT,
                    ADDRESS, JAVA_INT, ADDRESS, JAVA_INT)));

    private static volatile Cublas instance;

    private final MethodHandle create, destroy, setStream, setWorkspace, getProperty, statusName, statusString, gemmEx,
            gemmStridedBatched, gemmBatched, gemmGroupedBatched;
    private final String version;

    private Cublas() {
        CudaDriver.get();
        // cuBLAS loads cuBLASLt itself; opening it first (globally) makes a missing Lt the error named
        NativeLibrary.open("cuBLASLt", NativeLibrary.configured("cublaslt", List.of("libcublasLt.so.13", "libcublasLt.so.12")),
                "Install the CUDA toolkit's cuBLAS or point MOE4J_CUDA_CUBLASLT at libcublasLt.so");
        NativeLibrary lib = NativeLibrary.open("cuBLAS", NativeLibrary.configured("cublas", List.of("libcublas.so.13", "libcublas.so.12")),
                "Install the CUDA toolkit's cuBLAS or point MOE4J_CUDA_CUBLAS at libcublas.so");
        MethodHandle[] h = new MethodHandle[ENTRIES.size()];
        for (int i = 0; i < h.length; i++) h[i] = lib.function(ENTRIES.get(i).symbol(), ENTRIES.get(i).descriptor());
        create = h[0];
        destroy = h[1];
        setStream = h[2];
        setWorkspace = h[3];
        getProperty = h[4];
        statusName = h[5];
        statusString = h[6];
        gemmEx = h[7];
        gemmStridedBatched = h[8];
        gemmBatched = h[9];
        gemmGroupedBatched = h[10];
        version = property(0) + "." + property(1) + "." + property(2);
    }

    public static Cublas get() {
        Cublas c = instance;
        if (c != null) return c;
        synchronized (Cublas.class) {
            if (instance == null) instance = new Cublas();
            return instance;
        }
    }

    /** cuBLAS's version, major.minor.patch. */
    public String version() {
        return version;
    }

    private int property(int type) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(JAVA_INT);
            check((int) getProperty.invokeExact(type, out), "cublasGetProperty");
            return out.get(JAVA_INT, 0);
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cublasGetProperty", t);
        }
    }

    void check(int status, String call) {
        if (status == 0) return;
        String name;
        String text;
        try {
            name = NativeLibrary.cString((MemorySegment) statusName.invokeExact(status));
            text = NativeLibrary.cString((MemorySegment) statusString.invokeExact(status));
        } catch (Throwable t) {
            name = "CUBLAS status " + status;
            text = "";
        }
        throw new CudaException(CudaException.callFailed(LIBRARY, call, name, text));
    }

    MemorySegment createHandle() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(ADDRESS);
            check((int) create.invokeExact(out), "cublasCreate");
            return out.get(ADDRESS, 0);
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cublasCreate", t);
        }
    }

    void destroyHandle(MemorySegment handle) {
        try {
            check((int) destroy.invokeExact(handle), "cublasDestroy");
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cublasDestroy", t);
        }
    }

    void setStream(MemorySegment handle, MemorySegment stream) {
        try {
            check((int) setStream.invokeExact(handle, stream), "cublasSetStream");
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cublasSetStream", t);
        }
    }

    void setWorkspace(MemorySegment handle, long address, long bytes) {
        try {
            check((int) setWorkspace.invokeExact(handle, address, bytes), "cublasSetWorkspace");
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cublasSetWorkspace", t);
        }
    }

    /** The compute type for operands of {@code dataType}: fp32 accumulation, TF32 never. */
    static int computeType(int dataType) {
        return dataType == CUDA_R_32F ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
    }

    /**
     * Row-major {@code C (m×n) = alpha · op(A) (m×k) · op(B) (k×n) + beta · C} on the handle's stream, with
     * leading dimensions as stored (row lengths). {@code alphaBeta} holds the two floats (host memory).
     */
    void gemmRowMajor(MemorySegment handle, boolean transA, boolean transB, int m, int n, int k, MemorySegment alphaBeta,
                      long a, int abType, int lda, long b, int ldb, long c, int cType, int ldc) {
        checkGemmArguments(transA, transB, m, n, k, lda, ldb, ldc);
        int rc;
        try {
            rc = (int) gemmEx.invokeExact(handle, transB ? CUBLAS_OP_T : CUBLAS_OP_N, transA ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
                    alphaBeta, b, abType, ldb, a, abType, lda, alphaBeta.asSlice(4), c, cType, ldc, computeType(abType),
                    CUBLAS_GEMM_DEFAULT);
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cublasGemmEx", t);
        }
        if (rc != 0) check(rc, "cublasGemmEx(m=" + m + ", n=" + n + ", k=" + k + ")");
    }

    /**
     * {@code batch} row-major products of one shape, operand i at {@code a + i·strideA} etc. (strides in
     * elements), as {@link #gemmRowMajor}.
     */
    void gemmStridedBatchedRowMajor(MemorySegment handle, boolean transA, boolean transB, int m, int n, int k,
                                    MemorySegment alphaBeta, long a, int abType, int lda, long strideA, long b, int ldb, long strideB,
                                    long c, int cType, int ldc, long strideC, int batch) {
        checkGemmArguments(transA, transB, m, n, k, lda, ldb, ldc);
        if (batch < 0) throw new IllegalArgumentException("gemm: batch must be >= 0, got " + batch);
        int rc;
        try {
            rc = (int) gemmStridedBatched.invokeExact(handle, transB ? CUBLAS_OP_T : CUBLAS_OP_N, transA ? CUBLAS_OP_T : CUBLAS_OP_N, n, m,
                    k, alphaBeta, b, abType, ldb, strideB, a, abType, lda, strideA, alphaBeta.asSlice(4), c, cType, ldc, strideC, batch,
                    computeType(abType), CUBLAS_GEMM_DEFAULT);
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cublasGemmStridedBatchedEx", t);
        }
        if (rc != 0) check(rc, "cublasGemmStridedBatchedEx(m=" + m + ", n=" + n + ", k=" + k + ", batch=" + batch + ")");
    }

    /**
     * {@code batch} row-major products of one shape whose operands are listed in device arrays of
     * pointers ({@code aPointers[i]} etc.), as {@link #gemmRowMajor}.
     */
    void gemmBatchedRowMajor(MemorySegment handle, boolean transA, boolean transB, int m, int n, int k, MemorySegment alphaBeta,
                             long aPointers, int abType, int lda, long bPointers, int ldb, long cPointers, int cType, int ldc, int batch) {
        checkGemmArguments(transA, transB, m, n, k, lda, ldb, ldc);
        int rc;
        try {
            rc = (int) gemmBatched.invokeExact(handle, transB ? CUBLAS_OP_T : CUBLAS_OP_N, transA ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
                    alphaBeta, bPointers, abType, ldb, aPointers, abType, lda, alphaBeta.asSlice(4), cPointers, cType, ldc, batch,
                    computeType(abType), CUBLAS_GEMM_DEFAULT);
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cublasGemmBatchedEx", t);
        }
        if (rc != 0) check(rc, "cublasGemmBatchedEx(m=" + m + ", n=" + n + ", k=" + k + ", batch=" + batch + ")");
    }

    /**
     * The shape checks cuBLAS would report only as {@code CUBLAS_STATUS_INVALID_VALUE}, worded with the
     * row-major arguments the caller passed.
     */
    static void checkGemmArguments(boolean transA, boolean transB, int m, int n, int k, int lda, int ldb, int ldc) {
        if (m < 0 || n < 0 || k < 0) {
            throw new IllegalArgumentException("gemm: sizes must be >= 0, got m=" + m + " n=" + n + " k=" + k);
        }
        int aCols = transA ? m : k;
        int bCols = transB ? k : n;
        if (lda < Math.max(1, aCols)) throw new IllegalArgumentException("gemm: lda=" + lda + " < " + aCols + ", the row length of A");
        if (ldb < Math.max(1, bCols)) throw new IllegalArgumentException("gemm: ldb=" + ldb + " < " + bCols + ", the row length of B");
        if (ldc < Math.max(1, n)) throw new IllegalArgumentException("gemm: ldc=" + ldc + " < " + n + ", the row length of C");
    }

    /**
     * {@code cublasGemmGroupedBatchedEx} with one problem per group, already in column-major terms: host
     * arrays of ops, sizes, leading dimensions, alphas and betas; device arrays of operand pointers.
     */
    void gemmGroupedBatched(MemorySegment handle, MemorySegment transa, MemorySegment transb, MemorySegment m, MemorySegment n,
                            MemorySegment k, MemorySegment alpha, long aPointers, int abType, MemorySegment lda, long bPointers,
                            MemorySegment ldb, MemorySegment beta, long cPointers, int cType, MemorySegment ldc, int groups,
                            MemorySegment groupSize) {
        int rc;
        try {
            rc = (int) gemmGroupedBatched.invokeExact(handle, transa, transb, m, n, k, alpha, aPointers, abType, lda, bPointers, abType,
                    ldb, beta, cPointers, cType, ldc, groups, groupSize, computeType(abType));
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "cublasGemmGroupedBatchedEx", t);
        }
        if (rc != 0) check(rc, "cublasGemmGroupedBatchedEx(" + groups + " groups)");
    }
}
