package moe4j.distributed.nccl;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.util.List;
import java.util.Locale;
import moe4j.kernels.DeviceUnavailableException;

/**
 * NVIDIA's collective library ({@code libnccl.so.2}) called through the FFM API: the functions a
 * {@link NcclProcessGroup} needs, each a thin wrapper that throws {@link NcclException} when NCCL reports
 * an error. Opened on first use only, so a job that never chooses NCCL never loads it; the path comes from
 * {@code -Dmoe4j.nccl.library} or {@code MOE4J_NCCL_LIBRARY}, else the loader finds {@code libnccl.so.2}.
 *
 * <p>Handles ({@code ncclComm_t}, {@code cudaStream_t}) and device pointers are opaque addresses, passed as
 * {@code long}s. {@code ncclUniqueId} is a 128-byte struct that {@code ncclCommInitRank} takes <em>by
 * value</em>: the descriptor declares it as a struct ({@link #UNIQUE_ID}), so the linker passes its bytes in
 * memory as the C ABI wants, not a pointer to them.
 *
 * <p>NCCL reads the calling thread's current CUDA context; callers make their GPU's context current first
 * (the device backend's {@link moe4j.kernels.DeviceStreams#stream} does).
 */
final class NcclLibrary {
    static final String DEFAULT_LIBRARY = "libnccl.so.2";

    /** {@code typedef struct { char internal[128]; } ncclUniqueId;} */
    static final StructLayout UNIQUE_ID = MemoryLayout.structLayout(MemoryLayout.sequenceLayout(128, JAVA_BYTE).withName("internal"))
            .withName("ncclUniqueId");

    // ncclResult_t
    static final int SUCCESS = 0;
    static final int IN_PROGRESS = 7;
    private static final List<String> RESULT_NAMES = List.of("ncclSuccess", "ncclUnhandledCudaError", "ncclSystemError",
            "ncclInternalError", "ncclInvalidArgument", "ncclInvalidUsage", "ncclRemoteError", "ncclInProgress");

    // ncclDataType_t
    static final int INT32 = 2;
    static final int FLOAT16 = 6;
    static final int FLOAT32 = 7;
    static final int BFLOAT16 = 9;
    static final int INT64 = 4;

    // ncclRedOp_t
    static final int SUM = 0;
    static final int MAX = 2;
    static final int AVG = 4;

    /** {@code NCCL_SPLIT_NOCOLOR}: the rank joins no new communicator. */
    static final int SPLIT_NOCOLOR = -1;

    private static volatile NcclLibrary instance;

    final String path;
    private final MethodHandle getVersion, getUniqueId, commInitRank, commInitAll, commSplit, commDestroy, commAbort,
            commGetAsyncError, getErrorString, getLastError, groupStart, groupEnd, send, recv, allReduce, allGather,
            reduceScatter, broadcast;

    private NcclLibrary(String path) {
        this.path = path;
        Linker linker = Linker.nativeLinker();
        SymbolLookup lib;
        try {
            lib = SymbolLookup.libraryLookup(path, Arena.global());
        } catch (IllegalArgumentException e) {
            throw new DeviceUnavailableException("cannot load NCCL (" + path + "): " + e.getMessage()
                    + ". The nccl backend needs NVIDIA's NCCL 2.x; point -Dmoe4j.nccl.library or MOE4J_NCCL_LIBRARY at libnccl.so.2", e);
        }
        FunctionDescriptor ptr = FunctionDescriptor.of(JAVA_INT, ADDRESS);
        FunctionDescriptor comm = FunctionDescriptor.of(JAVA_INT, JAVA_LONG);
        getVersion = handle(linker, lib, "ncclGetVersion", ptr);
        getUniqueId = handle(linker, lib, "ncclGetUniqueId", ptr);
        // ncclComm_t* comm, int nranks, ncclUniqueId commId (by value), int rank
        commInitRank = handle(linker, lib, "ncclCommInitRank", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, UNIQUE_ID, JAVA_INT));
        // ncclComm_t* comms, int ndev, const int* devlist
        commInitAll = handle(linker, lib, "ncclCommInitAll", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS));
        // ncclComm_t comm, int color, int key, ncclComm_t* newcomm, ncclConfig_t* config
        commSplit = handle(linker, lib, "ncclCommSplit", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS));
        commDestroy = handle(linker, lib, "ncclCommDestroy", comm);
        commAbort = handle(linker, lib, "ncclCommAbort", comm);
        commGetAsyncError = handle(linker, lib, "ncclCommGetAsyncError", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, ADDRESS));
        getErrorString = handle(linker, lib, "ncclGetErrorString", FunctionDescriptor.of(ADDRESS, JAVA_INT));
        getLastError = handle(linker, lib, "ncclGetLastError", FunctionDescriptor.of(ADDRESS, JAVA_LONG));
        groupStart = handle(linker, lib, "ncclGroupStart", FunctionDescriptor.of(JAVA_INT));
        groupEnd = handle(linker, lib, "ncclGroupEnd", FunctionDescriptor.of(JAVA_INT));
        // buff, count, datatype, peer, comm, stream
        FunctionDescriptor p2p = FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG);
        send = handle(linker, lib, "ncclSend", p2p);
        recv = handle(linker, lib, "ncclRecv", p2p);
        // sendbuff, recvbuff, count, datatype, op, comm, stream (reduce-scatter: count is the received count)
        FunctionDescriptor reduce = FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG);
        allReduce = handle(linker, lib, "ncclAllReduce", reduce);
        reduceScatter = handle(linker, lib, "ncclReduceScatter", reduce);
        // sendbuff, recvbuff, sendcount, datatype, comm, stream
        allGather = handle(linker, lib, "ncclAllGather", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_INT,
                JAVA_LONG, JAVA_LONG));
        // sendbuff, recvbuff, count, datatype, root, comm, stream
        broadcast = handle(linker, lib, "ncclBroadcast", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_INT,
                JAVA_INT, JAVA_LONG, JAVA_LONG));
    }

    /** The library, opened on first use. */
    static NcclLibrary get() {
        NcclLibrary lib = instance;
        if (lib != null) return lib;
        synchronized (NcclLibrary.class) {
            if (instance == null) instance = open(configuredPath());
            return instance;
        }
    }

    /** Opens the library at {@code path} (a soname the loader resolves, or a file). */
    static NcclLibrary open(String path) {
        return new NcclLibrary(path);
    }

    static String configuredPath() {
        String p = System.getProperty("moe4j.nccl.library");
        if (p == null || p.isBlank()) p = System.getenv("MOE4J_NCCL_LIBRARY");
        return p == null || p.isBlank() ? DEFAULT_LIBRARY : p;
    }

    private static MethodHandle handle(Linker linker, SymbolLookup lib, String name, FunctionDescriptor fd) {
        MemorySegment address = lib.find(name).orElseThrow(() -> new DeviceUnavailableException(
                "NCCL library has no " + name + ": moe4j needs NCCL 2.18 or newer", null));
        return linker.downcallHandle(address, fd);
    }

    /** {@code ncclResult_t}'s enumerator name, e.g. {@code ncclRemoteError}; unknown codes as a number. */
    static String resultName(int code) {
        return code >= 0 && code < RESULT_NAMES.size() ? RESULT_NAMES.get(code) : "ncclResult " + code;
    }

    /** NCCL's version as {@code major.minor.patch} (code {@code major*10000 + minor*100 + patch} since 2.9). */
    static String versionString(int code) {
        return String.format(Locale.ROOT, "%d.%d.%d", code / 10000, code / 100 % 100, code % 100);
    }

    // ---------------------------------------------------------------- calls

    private void check(String call, int rc, long comm) {
        if (rc == SUCCESS) return;
        throw new NcclException(call, rc, errorString(rc), comm == 0 ? "" : lastError(comm));
    }

    String errorString(int rc) {
        try {
            MemorySegment s = (MemorySegment) getErrorString.invokeExact(rc);
            return s.equals(MemorySegment.NULL) ? "" : s.reinterpret(4096).getString(0);
        } catch (Throwable t) {
            return "(ncclGetErrorString failed: " + t + ")";
        }
    }

    /** NCCL's last error message, or "" (the comm argument is unused by NCCL, which keeps it per thread). */
    String lastError(long comm) {
        try {
            MemorySegment s = (MemorySegment) getLastError.invokeExact(comm);
            return s.equals(MemorySegment.NULL) ? "" : s.reinterpret(4096).getString(0);
        } catch (Throwable t) {
            return "";
        }
    }

    int version() {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(JAVA_INT);
            check("ncclGetVersion", (int) getVersion.invokeExact(v), 0);
            return v.get(JAVA_INT, 0);
        } catch (Throwable t) {
            throw rethrow("ncclGetVersion", t);
        }
    }

    /** A fresh unique id: the 128 bytes every rank of a new communicator must pass to {@link #commInitRank}. */
    byte[] uniqueId() {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment id = a.allocate(UNIQUE_ID);
            check("ncclGetUniqueId", (int) getUniqueId.invokeExact(id), 0);
            return id.toArray(JAVA_BYTE);
        } catch (Throwable t) {
            throw rethrow("ncclGetUniqueId", t);
        }
    }

    /** This rank's communicator of {@code nranks}; blocks until every rank has called it with the same id. */
    long commInitRank(int nranks, byte[] uniqueId, int rank) {
        if (uniqueId.length != UNIQUE_ID.byteSize()) {
            throw new IllegalArgumentException("ncclCommInitRank: a unique id is " + UNIQUE_ID.byteSize() + " bytes, got " + uniqueId.length);
        }
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ADDRESS);
            MemorySegment id = a.allocate(UNIQUE_ID);
            id.copyFrom(MemorySegment.ofArray(uniqueId));
            check("ncclCommInitRank", (int) commInitRank.invokeExact(out, nranks, id, rank), 0);
            return out.get(JAVA_LONG, 0);
        } catch (Throwable t) {
            throw rethrow("ncclCommInitRank", t);
        }
    }

    /** One communicator per listed GPU, made together by the calling thread (a single-process clique). */
    long[] commInitAll(int[] devices) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment comms = a.allocate(JAVA_LONG, devices.length);
            MemorySegment list = a.allocateFrom(JAVA_INT, devices);
            check("ncclCommInitAll", (int) commInitAll.invokeExact(comms, devices.length, list), 0);
            return comms.toArray(JAVA_LONG);
        } catch (Throwable t) {
            throw rethrow("ncclCommInitAll", t);
        }
    }

    /** {@code ncclCommSplit} with the parent's configuration; 0 for a rank passing {@link #SPLIT_NOCOLOR}. */
    long commSplit(long comm, int color, int key) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ADDRESS);
            check("ncclCommSplit", (int) commSplit.invokeExact(comm, color, key, out, MemorySegment.NULL), comm);
            return out.get(JAVA_LONG, 0);
        } catch (Throwable t) {
            throw rethrow("ncclCommSplit", t);
        }
    }

    void commDestroy(long comm) {
        try {
            check("ncclCommDestroy", (int) commDestroy.invokeExact(comm), 0);
        } catch (Throwable t) {
            throw rethrow("ncclCommDestroy", t);
        }
    }

    /** Ends the communicator's outstanding operations and frees it; safe to call from another thread than the one blocked in NCCL. */
    void commAbort(long comm) {
        try {
            check("ncclCommAbort", (int) commAbort.invokeExact(comm), 0);
        } catch (Throwable t) {
            throw rethrow("ncclCommAbort", t);
        }
    }

    /**
     * The communicator's asynchronous state: {@link #SUCCESS}, {@link #IN_PROGRESS} or the error a peer or the
     * network hit. {@code state} is the caller's 4-byte scratch, reused (asked after every wait, so no arena per call).
     */
    int asyncError(long comm, MemorySegment state) {
        try {
            int rc = (int) commGetAsyncError.invokeExact(comm, state);
            if (rc != SUCCESS) return rc;
            return state.get(JAVA_INT, 0);
        } catch (Throwable t) {
            throw rethrow("ncclCommGetAsyncError", t);
        }
    }

    void groupStart() {
        try {
            check("ncclGroupStart", (int) groupStart.invokeExact(), 0);
        } catch (Throwable t) {
            throw rethrow("ncclGroupStart", t);
        }
    }

    void groupEnd(long comm) {
        try {
            check("ncclGroupEnd", (int) groupEnd.invokeExact(), comm);
        } catch (Throwable t) {
            throw rethrow("ncclGroupEnd", t);
        }
    }

    void send(long buffer, long count, int dtype, int peer, long comm, long stream) {
        try {
            check("ncclSend", (int) send.invokeExact(buffer, count, dtype, peer, comm, stream), comm);
        } catch (Throwable t) {
            throw rethrow("ncclSend", t);
        }
    }

    void recv(long buffer, long count, int dtype, int peer, long comm, long stream) {
        try {
            check("ncclRecv", (int) recv.invokeExact(buffer, count, dtype, peer, comm, stream), comm);
        } catch (Throwable t) {
            throw rethrow("ncclRecv", t);
        }
    }

    void allReduce(long sendBuffer, long recvBuffer, long count, int dtype, int op, long comm, long stream) {
        try {
            check("ncclAllReduce", (int) allReduce.invokeExact(sendBuffer, recvBuffer, count, dtype, op, comm, stream), comm);
        } catch (Throwable t) {
            throw rethrow("ncclAllReduce", t);
        }
    }

    void reduceScatter(long sendBuffer, long recvBuffer, long recvCount, int dtype, int op, long comm, long stream) {
        try {
            check("ncclReduceScatter", (int) reduceScatter.invokeExact(sendBuffer, recvBuffer, recvCount, dtype, op, comm, stream), comm);
        } catch (Throwable t) {
            throw rethrow("ncclReduceScatter", t);
        }
    }

    void allGather(long sendBuffer, long recvBuffer, long sendCount, int dtype, long comm, long stream) {
        try {
            check("ncclAllGather", (int) allGather.invokeExact(sendBuffer, recvBuffer, sendCount, dtype, comm, stream), comm);
        } catch (Throwable t) {
            throw rethrow("ncclAllGather", t);
        }
    }

    void broadcast(long sendBuffer, long recvBuffer, long count, int dtype, int root, long comm, long stream) {
        try {
            check("ncclBroadcast", (int) broadcast.invokeExact(sendBuffer, recvBuffer, count, dtype, root, comm, stream), comm);
        } catch (Throwable t) {
            throw rethrow("ncclBroadcast", t);
        }
    }

    private static RuntimeException rethrow(String call, Throwable t) {
        if (t instanceof RuntimeException re) return re;
        if (t instanceof Error e) throw e;
        return new NcclException(call + " could not be called: " + t, t);
    }
}
