package moe4j.kernels.cpu;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * OpenBLAS {@code cblas_sgemm} through FFM, as the yardstick for {@link Gemm} in benchmarks and tests.
 * Nothing in moe4j's compute path depends on it.
 *
 * <p>The library is looked up once ({@code libopenblas.so.0} on the loader path, then the Debian
 * locations); when it is absent {@link #isAvailable()} is false and {@link #unavailableReason()} says why.
 * On load it is set to one thread, so a comparison with single-threaded {@link Gemm} is fair;
 * {@link #setThreads(int)} changes that.
 *
 * <p>OpenBLAS picks its kernel for the CPU when it loads, unless the environment overrides it:
 * {@code OPENBLAS_CORETYPE} forces a kernel (e.g. Haswell, an AVX2 kernel, on an AVX-512 machine) and
 * {@code OPENBLAS_L2_SIZE} its blocking. {@link #environmentOverrides()} lists those set in this process
 * and {@link #coreName()} names the kernel in use; a fair reference runs with neither set.
 */
public final class OpenBlas {
    private OpenBlas() {}

    private static final int ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112;
    private static final String[] CANDIDATES = {
            "libopenblas.so.0",
            "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
            "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
            "libopenblas.so",
    };

    private static final MethodHandle SGEMM;
    private static final MethodHandle SET_THREADS;
    private static final String REASON;
    private static final String CORE_NAME, CONFIG;
    /** Environment variables that steer OpenBLAS's choice of kernel and blocking. */
    public static final List<String> KERNEL_VARIABLES = List.of("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE");

    static {
        MethodHandle sgemm = null, setThreads = null;
        String reason = null, coreName = null, config = null;
        try {
            SymbolLookup lib = load();
            if (lib == null) {
                reason = "OpenBLAS not found (tried " + String.join(", ", CANDIDATES)
                        + "); install Debian package libopenblas0";
            } else {
                Linker linker = Linker.nativeLinker();
                ValueLayout.OfInt i = ValueLayout.JAVA_INT;
                ValueLayout.OfFloat f = ValueLayout.JAVA_FLOAT;
                ValueLayout p = ValueLayout.ADDRESS;
                Optional<MemorySegment> fn = lib.find("cblas_sgemm");
                if (fn.isEmpty()) {
                    reason = "the OpenBLAS library found has no cblas_sgemm";
                } else {
                    // critical: no thread-state transition per call, and heap segments may be passed
                    sgemm = linker.downcallHandle(fn.get(),
                            FunctionDescriptor.ofVoid(i, i, i, i, i, i, f, p, i, p, i, f, p, i),
                            Linker.Option.critical(true));
                    Optional<MemorySegment> st = lib.find("openblas_set_num_threads");
                    if (st.isPresent()) {
                        setThreads = linker.downcallHandle(st.get(), FunctionDescriptor.ofVoid(i));
                    }
                    coreName = callString(linker, lib, "openblas_get_corename");
                    config = callString(linker, lib, "openblas_get_config");
                }
            }
        } catch (Throwable t) {
            reason = "OpenBLAS could not be loaded: " + t;
            sgemm = null;
        }
        SGEMM = sgemm;
        SET_THREADS = setThreads;
        REASON = reason;
        CORE_NAME = coreName;
        CONFIG = config;
        if (SGEMM != null) setThreads(1);
    }

    private static SymbolLookup load() {
        for (String name : CANDIDATES) {
            try {
                return SymbolLookup.libraryLookup(name, Arena.global());
            } catch (IllegalArgumentException notThere) {
                // try the next location
            }
        }
        return null;
    }

    /** Calls a {@code char *f(void)} of the library; null when it lacks the function. */
    private static String callString(Linker linker, SymbolLookup lib, String name) throws Throwable {
        Optional<MemorySegment> fn = lib.find(name);
        if (fn.isEmpty()) return null;
        MethodHandle h = linker.downcallHandle(fn.get(), FunctionDescriptor.of(ValueLayout.ADDRESS));
        MemorySegment text = (MemorySegment) h.invokeExact();
        return text.equals(MemorySegment.NULL) ? null : text.reinterpret(4096).getString(0).trim();
    }

    /** The kernel OpenBLAS chose (or was told to use) when it loaded, e.g. SkylakeX or Haswell; null if unknown. */
    public static String coreName() {
        return CORE_NAME;
    }

    /** OpenBLAS's build description ({@code openblas_get_config}), e.g. its version; null if unknown. */
    public static String config() {
        return CONFIG;
    }

    /**
     * The kernel-steering variables set in this process's environment, as NAME=value, empty when OpenBLAS
     * chose its own kernel.
     */
    public static List<String> environmentOverrides() {
        List<String> set = new ArrayList<>();
        for (String name : KERNEL_VARIABLES) {
            String v = System.getenv(name);
            if (v != null) set.add(name + "=" + v);
        }
        return set;
    }

    /** Whether OpenBLAS was found and its cblas_sgemm bound. */
    public static boolean isAvailable() {
        return SGEMM != null;
    }

    /** Why OpenBLAS is not available, or null when it is. */
    public static String unavailableReason() {
        return REASON;
    }

    /** Sets OpenBLAS's own thread count (no-op if the library lacks openblas_set_num_threads). */
    public static void setThreads(int n) {
        if (n < 1) throw new IllegalArgumentException("OpenBlas.setThreads: thread count " + n + ", expected >= 1");
        if (SET_THREADS == null) return;
        try {
            SET_THREADS.invokeExact(n);
        } catch (Throwable t) {
            throw new IllegalStateException("openblas_set_num_threads failed", t);
        }
    }

    /** {@link Gemm#sgemm} with the same arguments and meaning, computed by OpenBLAS. */
    public static void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                             MemorySegment a, long aOff, int lda,
                             MemorySegment b, long bOff, int ldb,
                             float beta, MemorySegment c, long cOff, int ldc) {
        if (SGEMM == null) throw new IllegalStateException("OpenBlas.sgemm: " + REASON);
        if (m < 0 || n < 0 || k < 0) {
            throw new IllegalArgumentException("OpenBlas.sgemm: negative size m=" + m + " n=" + n + " k=" + k);
        }
        Gemm.checkMatrix("OpenBlas.sgemm", "A", a, aOff, lda, transA ? k : m, transA ? m : k);
        Gemm.checkMatrix("OpenBlas.sgemm", "B", b, bOff, ldb, transB ? n : k, transB ? k : n);
        Gemm.checkMatrix("OpenBlas.sgemm", "C", c, cOff, ldc, m, n);
        if (m == 0 || n == 0) return;
        // BLAS insists on ld >= max(1, width) even for empty operands
        int la = Math.max(lda, 1), lb = Math.max(ldb, 1);
        try {
            SGEMM.invokeExact(ROW_MAJOR, transA ? TRANS : NO_TRANS, transB ? TRANS : NO_TRANS, m, n, k, alpha,
                    at(a, aOff), la, at(b, bOff), lb, beta, at(c, cOff), ldc);
        } catch (Throwable t) {
            throw new IllegalStateException("cblas_sgemm failed", t);
        }
    }

    private static MemorySegment at(MemorySegment s, long off) {
        // an operand of an empty product may be NULL or end exactly at off
        return s == null || off * Float.BYTES >= s.byteSize() ? MemorySegment.NULL : s.asSlice(off * Float.BYTES);
    }
}
