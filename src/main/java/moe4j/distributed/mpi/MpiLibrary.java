package moe4j.distributed.mpi;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Open MPI's C library ({@code libmpi.so.40}) called through the FFM API: the few functions moe4j
 * needs, each a thin wrapper that throws when MPI reports an error.
 *
 * <p>Open MPI's handles ({@code MPI_Comm}, {@code MPI_Datatype}, {@code MPI_Request}) are pointers,
 * and the predefined ones ({@code MPI_COMM_WORLD}, {@code MPI_FLOAT}, ...) are the addresses of
 * global objects in the library ({@code ompi_mpi_comm_world}, {@code ompi_mpi_float}, ...), so they
 * are looked up like functions. This ties the binding to Open MPI's ABI; MPICH-family libraries
 * use integer handles and would need a binding of their own.
 *
 * <p>The library is opened with {@code dlopen(RTLD_NOW | RTLD_GLOBAL)} before anything is looked
 * up: Open MPI loads its transport components as separate shared objects that expect libmpi's
 * symbols to be globally visible, which the {@code RTLD_LOCAL} loading of
 * {@link SymbolLookup#libraryLookup} alone does not give.
 *
 * <p>Threads: MPI is initialised at {@code MPI_THREAD_SERIALIZED}, and every call goes through
 * {@link #LOCK}, so any thread may make calls (a rank's thread runs collectives; an asynchronous
 * collective may be completed from another thread) but never two at once. A blocking collective
 * holds the lock until it returns, so another thread's MPI call waits for it; collectives are
 * started from one thread per process, so that costs nothing in practice, and it spares the
 * locking that {@code MPI_THREAD_MULTIPLE} adds inside Open MPI to every call.
 */
final class MpiLibrary {
    /** The library opened when no other is configured. */
    static final String DEFAULT_LIBRARY = "libmpi.so.40";

    static final int MPI_THREAD_SERIALIZED = 2;
    static final int MPI_UNDEFINED = -32766;

    /** Serialises every MPI call of this process (see the class comment). */
    static final ReentrantLock LOCK = new ReentrantLock();

    private static final int RTLD_NOW = 0x2;
    private static final int RTLD_GLOBAL = 0x100;

    private static volatile MpiLibrary instance;

    final String path;
    final MemorySegment commWorld;
    final MemorySegment commNull;
    final MemorySegment floatType;
    final MemorySegment intType;

    private final MethodHandle initThread;
    private final MethodHandle initialized;
    private final MethodHandle finalizeFn;
    private final MethodHandle abortFn;
    private final MethodHandle commRank;
    private final MethodHandle commSize;
    private final MethodHandle commSplit;
    private final MethodHandle test;
    private final MethodHandle ialltoallv;
    private final MethodHandle alltoallv;
    private final MethodHandle alltoall;
    private final MethodHandle allgather;
    private final MethodHandle allgatherv;
    private final MethodHandle bcast;
    private final MethodHandle barrier;

    private MpiLibrary(String path) {
        this.path = path;
        Linker linker = Linker.nativeLinker();
        openGlobally(linker, path);
        SymbolLookup lib = SymbolLookup.libraryLookup(path, Arena.global());
        commWorld = symbol(lib, "ompi_mpi_comm_world");
        commNull = symbol(lib, "ompi_mpi_comm_null");
        floatType = symbol(lib, "ompi_mpi_float");
        intType = symbol(lib, "ompi_mpi_int");
        FunctionDescriptor noArgs = FunctionDescriptor.of(JAVA_INT);
        initThread = handle(linker, lib, "MPI_Init_thread", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_INT, ADDRESS));
        initialized = handle(linker, lib, "MPI_Initialized", FunctionDescriptor.of(JAVA_INT, ADDRESS));
        finalizeFn = handle(linker, lib, "MPI_Finalize", noArgs);
        abortFn = handle(linker, lib, "MPI_Abort", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT));
        commRank = handle(linker, lib, "MPI_Comm_rank", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        commSize = handle(linker, lib, "MPI_Comm_size", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        commSplit = handle(linker, lib, "MPI_Comm_split", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, ADDRESS));
        test = handle(linker, lib, "MPI_Test", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS));
        // sendbuf, sendcounts, sdispls, sendtype, recvbuf, recvcounts, rdispls, recvtype, comm, request
        ialltoallv = handle(linker, lib, "MPI_Ialltoallv", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS,
                ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS));
        alltoallv = handle(linker, lib, "MPI_Alltoallv", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS,
                ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS));
        // sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, comm (same shape for allgather)
        FunctionDescriptor uniform = FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS, ADDRESS, JAVA_INT,
                ADDRESS, ADDRESS);
        alltoall = handle(linker, lib, "MPI_Alltoall", uniform);
        allgather = handle(linker, lib, "MPI_Allgather", uniform);
        // sendbuf, sendcount, sendtype, recvbuf, recvcounts, displs, recvtype, comm
        allgatherv = handle(linker, lib, "MPI_Allgatherv", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS,
                ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS));
        // buffer, count, datatype, root, comm
        bcast = handle(linker, lib, "MPI_Bcast", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS, JAVA_INT,
                ADDRESS));
        barrier = handle(linker, lib, "MPI_Barrier", FunctionDescriptor.of(JAVA_INT, ADDRESS));
    }

    /** The library, opened on first use; the path comes from {@code -Dmoe4j.mpi.library} or {@code MOE4J_MPI_LIBRARY}. */
    static MpiLibrary get() {
        MpiLibrary lib = instance;
        if (lib != null) return lib;
        synchronized (MpiLibrary.class) {
            if (instance == null) instance = new MpiLibrary(configuredPath());
            return instance;
        }
    }

    static String configuredPath() {
        String p = System.getProperty("moe4j.mpi.library");
        if (p == null || p.isBlank()) p = System.getenv("MOE4J_MPI_LIBRARY");
        return p == null || p.isBlank() ? DEFAULT_LIBRARY : p;
    }

    private static void openGlobally(Linker linker, String path) {
        MethodHandle dlopen = linker.defaultLookup().find("dlopen")
                .map(a -> linker.downcallHandle(a, FunctionDescriptor.of(ADDRESS, ADDRESS, JAVA_INT)))
                .orElseThrow(() -> new IllegalStateException("mpi: the C library has no dlopen"));
        MethodHandle dlerror = linker.defaultLookup().find("dlerror")
                .map(a -> linker.downcallHandle(a, FunctionDescriptor.of(ADDRESS)))
                .orElseThrow(() -> new IllegalStateException("mpi: the C library has no dlerror"));
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment handle = (MemorySegment) dlopen.invokeExact(arena.allocateFrom(path), RTLD_NOW | RTLD_GLOBAL);
            if (handle.equals(MemorySegment.NULL)) {
                MemorySegment err = (MemorySegment) dlerror.invokeExact();
                String why = err.equals(MemorySegment.NULL) ? "unknown error" : err.reinterpret(4096).getString(0);
                throw new IllegalStateException("mpi: cannot load the MPI library '" + path + "': " + why
                        + ". Install Open MPI (Debian: openmpi-bin libopenmpi-dev) or point -Dmoe4j.mpi.library /"
                        + " MOE4J_MPI_LIBRARY at its libmpi.so.40");
            }
        } catch (IllegalStateException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("mpi: dlopen of '" + path + "' failed", t);
        }
    }

    private static MemorySegment symbol(SymbolLookup lib, String name) {
        return lib.find(name).orElseThrow(() -> new IllegalStateException(
                "mpi: the library has no symbol '" + name + "': moe4j's binding needs Open MPI (4.x or 5.x)"));
    }

    private static MethodHandle handle(Linker linker, SymbolLookup lib, String name, FunctionDescriptor fd) {
        return linker.downcallHandle(symbol(lib, name), fd);
    }

    /** Throws when an MPI call did not return {@code MPI_SUCCESS}. */
    private static void check(String fn, int rc) {
        if (rc != 0) throw new IllegalStateException("mpi: " + fn + " returned error code " + rc);
    }

    private static RuntimeException wrap(String fn, Throwable t) {
        if (t instanceof RuntimeException re) return re;
        if (t instanceof Error e) throw e;
        return new IllegalStateException("mpi: calling " + fn + " failed", t);
    }

    // ---------------------------------------------------------------- the calls (callers hold LOCK)

    /** {@code MPI_Init_thread(NULL, NULL, required, &provided)}; returns the level provided. */
    int initThread(int required) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment provided = arena.allocate(JAVA_INT);
            check("MPI_Init_thread", (int) initThread.invokeExact(MemorySegment.NULL, MemorySegment.NULL, required, provided));
            return provided.get(JAVA_INT, 0);
        } catch (Throwable t) {
            throw wrap("MPI_Init_thread", t);
        }
    }

    boolean initialized() {
        return flagCall(initialized, "MPI_Initialized");
    }

    private static boolean flagCall(MethodHandle h, String fn) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment flag = arena.allocate(JAVA_INT);
            check(fn, (int) h.invokeExact(flag));
            return flag.get(JAVA_INT, 0) != 0;
        } catch (Throwable t) {
            throw wrap(fn, t);
        }
    }

    void finalizeMpi() {
        try {
            check("MPI_Finalize", (int) finalizeFn.invokeExact());
        } catch (Throwable t) {
            throw wrap("MPI_Finalize", t);
        }
    }

    /** {@code MPI_Abort}: ends every process of the job; does not return when it works. */
    void abort(MemorySegment comm, int code) {
        try {
            int rc = (int) abortFn.invokeExact(comm, code);
            check("MPI_Abort", rc);
        } catch (Throwable t) {
            throw wrap("MPI_Abort", t);
        }
    }

    int commRank(MemorySegment comm) {
        return intOut(commRank, "MPI_Comm_rank", comm);
    }

    int commSize(MemorySegment comm) {
        return intOut(commSize, "MPI_Comm_size", comm);
    }

    private static int intOut(MethodHandle h, String fn, MemorySegment comm) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(JAVA_INT);
            check(fn, (int) h.invokeExact(comm, out));
            return out.get(JAVA_INT, 0);
        } catch (Throwable t) {
            throw wrap(fn, t);
        }
    }

    /** {@code MPI_Comm_split}; returns the new communicator, {@link #commNull} for {@code MPI_UNDEFINED}. */
    MemorySegment commSplit(MemorySegment comm, int color, int key) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(ADDRESS);
            check("MPI_Comm_split", (int) commSplit.invokeExact(comm, color, key, out));
            return out.get(ADDRESS, 0);
        } catch (Throwable t) {
            throw wrap("MPI_Comm_split", t);
        }
    }

    /** {@code MPI_Test(request, flag, MPI_STATUS_IGNORE)}; {@code request} holds the handle, {@code flag} an int. */
    boolean test(MemorySegment request, MemorySegment flag) {
        try {
            check("MPI_Test", (int) test.invokeExact(request, flag, MemorySegment.NULL));
        } catch (Throwable t) {
            throw wrap("MPI_Test", t);
        }
        return flag.get(JAVA_INT, 0) != 0;
    }

    void ialltoallv(MemorySegment send, MemorySegment sendCounts, MemorySegment sendDispls, MemorySegment type,
            MemorySegment recv, MemorySegment recvCounts, MemorySegment recvDispls, MemorySegment comm,
            MemorySegment request) {
        try {
            check("MPI_Ialltoallv", (int) ialltoallv.invokeExact(send, sendCounts, sendDispls, type, recv, recvCounts,
                    recvDispls, type, comm, request));
        } catch (Throwable t) {
            throw wrap("MPI_Ialltoallv", t);
        }
    }

    void alltoallv(MemorySegment send, MemorySegment sendCounts, MemorySegment sendDispls, MemorySegment type,
            MemorySegment recv, MemorySegment recvCounts, MemorySegment recvDispls, MemorySegment comm) {
        try {
            check("MPI_Alltoallv", (int) alltoallv.invokeExact(send, sendCounts, sendDispls, type, recv, recvCounts,
                    recvDispls, type, comm));
        } catch (Throwable t) {
            throw wrap("MPI_Alltoallv", t);
        }
    }

    void alltoall(MemorySegment send, int count, MemorySegment type, MemorySegment recv, MemorySegment comm) {
        try {
            check("MPI_Alltoall", (int) alltoall.invokeExact(send, count, type, recv, count, type, comm));
        } catch (Throwable t) {
            throw wrap("MPI_Alltoall", t);
        }
    }

    void allgather(MemorySegment send, int count, MemorySegment type, MemorySegment recv, MemorySegment comm) {
        try {
            check("MPI_Allgather", (int) allgather.invokeExact(send, count, type, recv, count, type, comm));
        } catch (Throwable t) {
            throw wrap("MPI_Allgather", t);
        }
    }

    void allgatherv(MemorySegment send, int count, MemorySegment type, MemorySegment recv, MemorySegment recvCounts,
            MemorySegment displs, MemorySegment comm) {
        try {
            check("MPI_Allgatherv", (int) allgatherv.invokeExact(send, count, type, recv, recvCounts, displs, type, comm));
        } catch (Throwable t) {
            throw wrap("MPI_Allgatherv", t);
        }
    }

    void bcast(MemorySegment buffer, int count, MemorySegment type, int root, MemorySegment comm) {
        try {
            check("MPI_Bcast", (int) bcast.invokeExact(buffer, count, type, root, comm));
        } catch (Throwable t) {
            throw wrap("MPI_Bcast", t);
        }
    }

    void barrier(MemorySegment comm) {
        try {
            check("MPI_Barrier", (int) barrier.invokeExact(comm));
        } catch (Throwable t) {
            throw wrap("MPI_Barrier", t);
        }
    }
}
