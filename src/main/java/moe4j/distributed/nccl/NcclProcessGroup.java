package moe4j.distributed.nccl;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.locks.LockSupport;
import moe4j.distributed.CollectiveException;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.distributed.Work;
import moe4j.kernels.DeviceBackend;
import moe4j.kernels.DeviceStreams;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.Tensor;

/**
 * A {@link ProcessGroup} whose tensors live on one GPU per rank and travel by NCCL. It stands on a host
 * group of the same ranks (in-JVM threads or MPI processes), which carries everything small and
 * host-side: the communicator's unique id, the per-expert counts ({@link #allToAll(int[], int)}), the
 * row counts of an uneven all-gather, the barrier, and any collective on CPU tensors, which it simply
 * forwards.
 *
 * <p>Ordering: each collective on GPU tensors is queued on the calling rank thread's stream of the
 * group's GPU, after the kernels queued there before it, and before the ones queued after it, so an
 * asynchronous collective needs no extra synchronisation with compute on that stream. The blocking
 * forms wait until the stream has drained.
 *
 * <p>Deadlines: while a collective is outstanding, the process's {@link NcclWatchdog} polls the
 * communicator's asynchronous error state ({@code ncclCommGetAsyncError}); when NCCL reports an error
 * or the deadline passes, it marks the group broken and aborts the communicator ({@code ncclCommAbort}),
 * which ends the queued NCCL kernels so that no GPU stays busy. The waiting rank then throws a
 * {@link CollectiveException} naming the collective, the group and the ranks. Ranks of one JVM share
 * their clique's state, so a broken group breaks every rank's handle at once; across processes the host
 * group is aborted too and each rank's own deadline bounds its wait.
 *
 * <p>Reductions: NCCL's ring and tree algorithms give every rank the same bits, but do not add in rank
 * order, so a sum may differ in the last bits from the CPU backends' rank-order sum.
 */
public final class NcclProcessGroup implements ProcessGroup, AutoCloseable {
    /** The state shared by the handles of one communicator's ranks in this JVM, keyed by its unique id. */
    private static final ConcurrentHashMap<String, Clique> CLIQUES = new ConcurrentHashMap<>();

    static final class Clique {
        volatile String broken;
    }

    private final ProcessGroup host;
    private final Device device;
    private final NcclLibrary nccl;
    private final DeviceStreams streams;
    private final String cliqueKey;
    private final Clique clique;
    private final long comm;
    private final Object callLock = new Object();
    /** Where {@code ncclCommGetAsyncError} writes the state; used under {@link #callLock} only. */
    private final MemorySegment asyncState = Arena.ofAuto().allocate(4, 4);
    private boolean inCall;
    private boolean freed;
    private long calls;
    private int splits;

    /** What is outstanding (for the watchdog): its description and deadline; null when the stream has drained. */
    volatile Pending pending;

    record Pending(String collective, long call, long deadlineNanos) {}

    private NcclProcessGroup(ProcessGroup host, Device device, NcclLibrary nccl, DeviceStreams streams, String cliqueKey, long comm) {
        this.host = host;
        this.device = device;
        this.nccl = nccl;
        this.streams = streams;
        this.cliqueKey = cliqueKey;
        this.clique = CLIQUES.computeIfAbsent(cliqueKey, k -> new Clique());
        this.comm = comm;
        NcclWatchdog.get().watch(this);
    }

    /**
     * Makes the NCCL communicator over {@code host}'s ranks, this rank on {@code device}: a collective over
     * {@code host} (every rank calls it). Rank 0 draws the unique id and broadcasts it over the host group;
     * every rank then joins with {@code ncclCommInitRank} from its own thread.
     */
    public static NcclProcessGroup create(ProcessGroup host, Device device) {
        if (device.isCpu()) {
            throw new IllegalArgumentException("NcclProcessGroup: device " + device + " is the cpu; NCCL moves GPU memory (cuda:N)");
        }
        DeviceStreams streams = DeviceBackend.find(device.kind()).streams();
        NcclLibrary nccl = NcclLibrary.get();
        streams.stream(device); // the GPU's context current on this thread before NCCL looks for it
        Tensor id = Tensor.zeros(DType.I32, (int) (NcclLibrary.UNIQUE_ID.byteSize() / 4));
        if (host.rank() == 0) id.data().copyFrom(MemorySegment.ofArray(nccl.uniqueId()));
        host.broadcast(id, 0);
        byte[] uniqueId = id.data().toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
        long comm = nccl.commInitRank(host.size(), uniqueId, host.rank());
        NcclProcessGroup group = new NcclProcessGroup(host, device, nccl, streams,
                host.name() + "#" + java.util.HexFormat.of().formatHex(uniqueId, 0, 32), comm);
        group.connect();
        return group;
    }

    /**
     * One int to every rank and back: NCCL connects peers lazily, at their first exchange, and that
     * setup blocks the enqueuing thread until the peer takes part. Doing it here, under the deadline,
     * keeps later collectives from blocking on the host.
     */
    private void connect() {
        int n = size();
        int[] ones = filled(n, 1);
        Tensor in = Tensor.zeros(device, DType.I32, n, 1);
        Tensor out = Tensor.zeros(device, DType.I32, n, 1);
        allToAllSingle(out, in, ones, ones);
    }

    /** The GPU this rank's tensors live on. */
    public Device device() {
        return device;
    }

    /** The host group of the same ranks. */
    public ProcessGroup host() {
        return host;
    }

    /** NCCL's version as {@code major.minor.patch}. */
    public static String ncclVersion() {
        return NcclLibrary.versionString(NcclLibrary.get().version());
    }

    @Override
    public int rank() {
        return host.rank();
    }

    @Override
    public int size() {
        return host.size();
    }

    @Override
    public int[] globalRanks() {
        return host.globalRanks();
    }

    @Override
    public String name() {
        return host.name();
    }

    @Override
    public Duration timeout() {
        return host.timeout();
    }

    // ---------------------------------------------------------------- all-to-all

    @Override
    public Work allToAllSingleAsync(Tensor out, Tensor in, int[] outSplits, int[] inSplits) {
        if (out.device().isCpu() && in.device().isCpu()) return host.allToAllSingleAsync(out, in, outSplits, inSplits);
        long call = begin("allToAllSingle");
        String problem = onDevice(out, in);
        if (problem == null) problem = DeviceArguments.allToAll(out, in, outSplits, inSplits, size(), streams);
        if (problem != null) throw fail("allToAllSingle", call, problem);
        ExchangePlan.Plan plan = ExchangePlan.allToAll(outSplits, inSplits, in.rowWidth());
        long send = address(in);
        long recv = address(out);
        int type = ExchangePlan.dataType(in.dtype());
        long bytes = in.dtype().byteSize;
        return enqueue("allToAllSingle", call, stream -> {
            nccl.groupStart();
            try {
                for (ExchangePlan.Transfer t : plan.sends()) nccl.send(send + t.offset() * bytes, t.count(), type, t.peer(), comm, stream);
                for (ExchangePlan.Transfer t : plan.receives()) nccl.recv(recv + t.offset() * bytes, t.count(), type, t.peer(), comm, stream);
            } finally {
                nccl.groupEnd(comm);
            }
        });
    }

    @Override
    public int[] allToAll(int[] send, int chunk) {
        return host.allToAll(send, chunk);
    }

    // ---------------------------------------------------------------- reductions and gathers

    @Override
    public Work allReduceAsync(Tensor t, ReduceOp op) {
        if (t.device().isCpu()) return host.allReduceAsync(t, op);
        long call = begin("allReduce");
        String problem = onDevice(t);
        int redOp = 0;
        if (problem == null) {
            try {
                redOp = ExchangePlan.reduction(op, t.dtype());
            } catch (IllegalArgumentException e) {
                problem = e.getMessage();
            }
        }
        if (problem != null) throw fail("allReduce", call, problem);
        long buffer = address(t);
        int type = ExchangePlan.dataType(t.dtype());
        int reduction = redOp;
        return enqueue("allReduce", call, stream -> nccl.allReduce(buffer, buffer, t.numel(), type, reduction, comm, stream));
    }

    @Override
    public void allGather(Tensor out, Tensor in) {
        if (out.device().isCpu() && in.device().isCpu()) {
            host.allGather(out, in);
            return;
        }
        allGatherAsync(out, in).await();
    }

    @Override
    public Work allGatherAsync(Tensor out, Tensor in) {
        if (out.device().isCpu() && in.device().isCpu()) return host.allGatherAsync(out, in);
        long call = begin("allGather");
        String problem = onDevice(out, in);
        if (problem == null) problem = DeviceArguments.sameLayout(out, in);
        if (problem == null) problem = DeviceArguments.disjoint(out, in, streams);
        // every rank learns every rank's row count (host-side), so uneven counts need no agreement beforehand
        int[] rowsPerRank = host.allToAll(filled(size(), problem == null ? in.rowCount() : -1), 1);
        if (problem == null) problem = DeviceArguments.gatheredRows(rowsPerRank, out);
        if (problem != null) throw fail("allGather", call, problem);
        long send = address(in);
        long recv = address(out);
        int type = ExchangePlan.dataType(in.dtype());
        long bytes = in.dtype().byteSize;
        long width = in.rowWidth();
        boolean even = Arrays.stream(rowsPerRank).allMatch(r -> r == rowsPerRank[0]);
        return enqueue("allGather", call, stream -> {
            if (even) {
                nccl.allGather(send, recv, in.numel(), type, comm, stream);
                return;
            }
            ExchangePlan.Plan plan = ExchangePlan.allGather(rowsPerRank, rank(), width);
            nccl.groupStart();
            try {
                for (ExchangePlan.Transfer t : plan.sends()) nccl.send(send, t.count(), type, t.peer(), comm, stream);
                for (ExchangePlan.Transfer t : plan.receives()) nccl.recv(recv + t.offset() * bytes, t.count(), type, t.peer(), comm, stream);
            } finally {
                nccl.groupEnd(comm);
            }
        });
    }

    @Override
    public void reduceScatter(Tensor out, Tensor in, ReduceOp op) {
        if (out.device().isCpu() && in.device().isCpu()) {
            host.reduceScatter(out, in, op);
            return;
        }
        long call = begin("reduceScatter");
        String problem = onDevice(out, in);
        if (problem == null) problem = DeviceArguments.sameLayout(out, in);
        if (problem == null && (long) out.rowCount() * size() != in.rowCount()) {
            problem = "in " + in.shapeString() + " must hold size() x out rows = " + size() + " x " + out.rowCount() + " rows";
        }
        if (problem == null) problem = DeviceArguments.disjoint(out, in, streams);
        int redOp = 0;
        if (problem == null) {
            try {
                redOp = ExchangePlan.reduction(op, in.dtype());
            } catch (IllegalArgumentException e) {
                problem = e.getMessage();
            }
        }
        if (problem != null) throw fail("reduceScatter", call, problem);
        long send = address(in);
        long recv = address(out);
        int type = ExchangePlan.dataType(in.dtype());
        int reduction = redOp;
        enqueue("reduceScatter", call, stream -> nccl.reduceScatter(send, recv, out.numel(), type, reduction, comm, stream)).await();
    }

    @Override
    public void broadcast(Tensor t, int root) {
        if (t.device().isCpu()) {
            host.broadcast(t, root);
            return;
        }
        long call = begin("broadcast");
        String problem = onDevice(t);
        if (problem == null && (root < 0 || root >= size())) problem = "root " + root + " is not a rank of a group of " + size();
        if (problem != null) throw fail("broadcast", call, problem);
        long buffer = address(t);
        int type = ExchangePlan.dataType(t.dtype());
        enqueue("broadcast", call, stream -> nccl.broadcast(buffer, buffer, t.numel(), type, root, comm, stream)).await();
    }

    /** Waits for this rank's queued collectives, then for every rank on the host group. */
    @Override
    public void barrier() {
        long call = begin("barrier");
        enqueue("barrier", call, stream -> {}).await();
        host.barrier();
    }

    // ---------------------------------------------------------------- sub-groups

    @Override
    public ProcessGroup split(int color, int key, String name) {
        long call = begin("split");
        int serial = splits++;
        ProcessGroup hostChild = host.split(color, key, name);
        long[] child = new long[1];
        enqueue("split", call, stream -> child[0] = nccl.commSplit(comm, color < 0 ? NcclLibrary.SPLIT_NOCOLOR : color, key)).await();
        if (hostChild == null) return null;
        if (child[0] == 0) {
            throw fail("split", call, "ncclCommSplit gave no communicator for color " + color);
        }
        NcclProcessGroup group = new NcclProcessGroup(hostChild, device, nccl, streams, cliqueKey + "/" + serial + ":" + color, child[0]);
        group.connect();
        return group;
    }

    @Override
    public void abort(String reason) {
        breakGroup(reason);
        host.abort(reason);
    }

    /**
     * Frees the communicator once this rank's queued work has run; a broken group's communicator is
     * aborted instead (if no one has yet), so that nothing stays queued on the GPU.
     */
    @Override
    public void close() {
        NcclWatchdog.get().forget(this);
        String reason = clique.broken;
        if (reason != null) {
            breakGroup(reason);
            return;
        }
        synchronized (callLock) {
            if (freed) return;
            freed = true;
        }
        long deadline = System.nanoTime() + timeout().toNanos();
        while (!streams.idle(device)) {
            if (System.nanoTime() - deadline > 0) {
                nccl.commAbort(comm); // work still queued at the deadline: end it rather than wait on it
                return;
            }
            LockSupport.parkNanos(100_000);
        }
        nccl.commDestroy(comm);
        CLIQUES.remove(cliqueKey);
    }

    // ---------------------------------------------------------------- the machinery

    @FunctionalInterface
    private interface Enqueue {
        void on(long stream);
    }

    private long begin(String collective) {
        long call = ++calls;
        String reason = clique.broken;
        if (reason != null) throw new CollectiveException(collective, name(), rank(), size(), call, "the group is broken: " + reason);
        return call;
    }

    /** Queues the NCCL calls on this rank's stream under the deadline; the returned work waits for the stream. */
    private Work enqueue(String collective, long call, Enqueue calls) {
        long stream = streams.stream(device);
        Pending p = pending;
        if (p == null) pending = new Pending(collective, call, System.nanoTime() + timeout().toNanos());
        synchronized (callLock) {
            String reason = clique.broken;
            if (reason != null || freed) {
                throw new CollectiveException(collective, name(), rank(), size(), call, "the group is broken: " + reason);
            }
            inCall = true;
        }
        try {
            calls.on(stream);
        } catch (NcclException e) {
            String why = clique.broken;
            throw fail(collective, call, why != null ? why : e.getMessage());
        } finally {
            synchronized (callLock) {
                inCall = false;
                callLock.notifyAll();
            }
        }
        return new Work() {
            private boolean done;

            @Override
            public void await() {
                if (done) return;
                awaitStream(collective, call);
                done = true;
            }

            @Override
            public boolean isDone() {
                if (!done && clique.broken == null && streams.idle(device)) {
                    pending = null;
                    done = true;
                }
                return done || clique.broken != null;
            }
        };
    }

    /** How long a wait spins between polls of the stream before it starts yielding its core. */
    static final long SPIN_NANOS = 200_000;
    /**
     * How long a wait polls at all before it parks between polls. A park of 50 µs sleeps for 50 µs plus the
     * kernel's timer slack (another 50 µs by default on Linux), so a wait that parks notices the end of an
     * exchange up to ~100 µs late, ~50 µs on average: a fifth of a 128 MiB all-to-all between two NVLinked
     * H200s (~0.25 ms). Yielding instead keeps the notice within a poll (microseconds) while leaving the
     * core to any thread that has work; only waits longer than this, where that lateness is under 0.5%, park.
     */
    static final long POLL_NANOS = 20_000_000;
    static final long PARK_NANOS = 50_000;

    /** Polls the stream until it drains; the watchdog ends the wait by breaking the group on an error or at the deadline. */
    private void awaitStream(String collective, long call) {
        long start = System.nanoTime();
        while (true) {
            String reason = clique.broken;
            if (reason != null) throw new CollectiveException(collective, name(), rank(), size(), call, reason);
            if (streams.idle(device)) {
                int state = asyncError();
                if (state != NcclLibrary.SUCCESS && state != NcclLibrary.IN_PROGRESS) {
                    throw fail(collective, call, NcclException.message("the communicator", state, nccl.errorString(state), ""));
                }
                pending = null;
                return;
            }
            long waited = System.nanoTime() - start;
            if (waited < SPIN_NANOS) Thread.onSpinWait();
            else if (waited < POLL_NANOS) Thread.yield();
            else LockSupport.parkNanos(PARK_NANOS);
        }
    }

    /** Called by the watchdog: an error NCCL reported, or the deadline passed. */
    void expire(String reason) {
        breakGroup(reason);
        try {
            host.abort(reason);
        } catch (RuntimeException ignored) {
            // the host group may already be broken; the reason is recorded above
        }
    }

    /** Marks the clique broken and aborts this rank's communicator, which ends its queued NCCL kernels. */
    private void breakGroup(String reason) {
        boolean abortNow;
        synchronized (callLock) {
            if (clique.broken == null) clique.broken = reason;
            abortNow = !freed;
            freed = true;
            // a rank thread inside a call may be blocked there until the abort: wait briefly for it to leave,
            // then abort anyway, which is what unblocks it
            long until = System.nanoTime() + 200_000_000L;
            while (inCall && System.nanoTime() - until < 0) {
                try {
                    callLock.wait(10);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    break;
                }
            }
        }
        if (abortNow) {
            try {
                nccl.commAbort(comm);
            } catch (RuntimeException ignored) {
                // an abort that fails leaves nothing more to do: the group is broken either way
            }
        }
    }

    /**
     * The communicator's asynchronous state, or {@link NcclLibrary#SUCCESS} once it is freed: asked under
     * the lock that freeing takes, so no thread queries a communicator that another has just destroyed.
     */
    int asyncError() {
        synchronized (callLock) {
            return freed ? NcclLibrary.SUCCESS : nccl.asyncError(comm, asyncState);
        }
    }

    NcclLibrary library() {
        return nccl;
    }

    Clique clique() {
        return clique;
    }

    private CollectiveException fail(String collective, long call, String detail) {
        String reason = collective + " #" + call + " failed on rank " + rank() + " of group '" + name() + "': " + detail;
        breakGroup(reason);
        try {
            host.abort(reason);
        } catch (RuntimeException ignored) {
            // already broken
        }
        return new CollectiveException(collective, name(), rank(), size(), call, detail);
    }

    private String onDevice(Tensor... tensors) {
        for (Tensor t : tensors) {
            if (!t.device().equals(device)) {
                return "a tensor " + t.dtype() + t.shapeString() + " is on " + t.device() + " but this rank's GPU is " + device;
            }
        }
        return null;
    }

    private long address(Tensor t) {
        return t.numel() == 0 ? 0 : streams.address(t.memory());
    }

    private static int[] filled(int n, int v) {
        int[] a = new int[n];
        Arrays.fill(a, v);
        return a;
    }
}
