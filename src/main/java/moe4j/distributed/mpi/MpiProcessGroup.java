package moe4j.distributed.mpi;

import static java.lang.foreign.ValueLayout.JAVA_INT;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Deque;
import java.util.List;
import moe4j.distributed.CollectiveArguments;
import moe4j.distributed.CollectiveException;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.distributed.Work;
import moe4j.tensor.DType;
import moe4j.tensor.Tensor;

/**
 * One process's handle on an MPI communicator: the ranks are processes started by {@code mpirun}
 * or {@code srun}, and tensor data go from and to the tensors' off-heap memory directly (MPI gets
 * their addresses; nothing is copied on the Java side).
 *
 * <p>Every blocking collective is one or two blocking MPI collectives (MPI's tuned algorithms, the
 * fastest path), each watched by the process's {@link Watchdog}: a collective that misses the
 * group's deadline ends the whole job with a message naming this rank, the collective and the
 * group. Disagreements that can be seen cheaply end in a {@link CollectiveException}: the
 * all-to-all first gathers every rank's splits (a small {@code MPI_Allgather}), so all ranks see a
 * disagreement alike before any data move; gathers and broadcasts check the sizes. After such an
 * exception the group is broken; under {@link MpiRuntime#run} the exception aborts the job.
 *
 * <p>Reductions ({@link #allReduce}, {@link #reduceScatter}) move data with MPI and combine in
 * Java, in rank order ({@link RankOrderReduction}): chunk r of every rank's tensor goes to rank r
 * (one all-to-all), rank r reduces it, and an all-gather returns the result to everyone. That is the
 * bandwidth-optimal pattern, and every rank gets the same bits as with the in-JVM backend.
 *
 * <p>Asynchronous collectives: {@link #allToAllSingleAsync} agrees on the splits (a short wait for
 * the peers), then starts the data exchange with {@code MPI_Ialltoallv} before returning (so every
 * rank starts its collectives in program order, as MPI requires); the returned {@link Work}
 * completes it by polling up to the deadline ({@link PendingRequests}). MPI moves the data only while
 * a thread of the process is inside an MPI call (a test, a wait, another collective), so the
 * overlap with computation is partial. {@link #allReduceAsync} completes before it returns.
 */
public final class MpiProcessGroup implements ProcessGroup {
    /**
     * Whether the all-to-all checks the splits of all ranks first (one small {@code MPI_Allgather},
     * a few microseconds). On by default; {@code -Dmoe4j.mpi.verifySplits=false} skips it where the
     * splits agree by construction (the MoE layer derives them from an exchange of counts) and the
     * latency matters; disagreeing splits then end in an MPI error, which aborts the job.
     */
    private static final boolean VERIFY_SPLITS = !"false".equalsIgnoreCase(System.getProperty("moe4j.mpi.verifySplits"));

    /** MPI's {@code MPI_IN_PLACE}: {@code (void *) 1} in Open MPI. */
    private static final MemorySegment MPI_IN_PLACE = MemorySegment.ofAddress(1);

    private final MpiLibrary mpi;
    private final MemorySegment comm;
    private final int rank;
    private final int size;
    private final int[] globalRanks;
    private final String name;
    private final Duration timeout;
    private final RankOrderReduction reduction = new RankOrderReduction();
    private final Watchdog watchdog;

    /** Collectives started on this handle; the number of the next is {@code calls + 1}. */
    private long calls;
    /** Why the group is broken, or null. */
    private volatile String broken;
    /** Asynchronous collectives not yet seen complete, oldest first. */
    private final Deque<AsyncWork> inFlight = new ArrayDeque<>();

    MpiProcessGroup(MpiLibrary mpi, MemorySegment comm, int[] globalRanks, String name, Duration timeout) {
        this.mpi = mpi;
        this.comm = comm;
        MpiLibrary.LOCK.lock();
        try {
            this.rank = mpi.commRank(comm);
            this.size = mpi.commSize(comm);
        } finally {
            MpiLibrary.LOCK.unlock();
        }
        if (globalRanks.length != size) {
            throw new IllegalStateException("mpi: group '" + name + "' has " + size + " ranks but " + globalRanks.length
                    + " world ranks were given");
        }
        this.globalRanks = globalRanks.clone();
        this.name = name;
        this.timeout = timeout;
        this.watchdog = Watchdog.get(timeout.toNanos());
    }

    @Override
    public int rank() {
        return rank;
    }

    @Override
    public int size() {
        return size;
    }

    @Override
    public int[] globalRanks() {
        return globalRanks.clone();
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public Duration timeout() {
        return timeout;
    }

    @Override
    public String toString() {
        return "MpiProcessGroup(" + name + ", rank " + rank + " of " + size + ")";
    }

    // ---------------------------------------------------------------- all-to-all

    @Override
    public void allToAllSingle(Tensor out, Tensor in, int[] outSplits, int[] inSplits) {
        Call call = begin("allToAllSingle");
        checkAllToAllArgs(out, in, outSplits, inSplits);
        drainAsync(call);
        try (Arena arena = Arena.ofConfined()) {
            agreeOnSplits(call, arena, outSplits, inSplits);
            MemorySegment v = countsAndDisplacements(arena, outSplits, inSplits, in.rowWidth());
            MemorySegment type = datatype(in.dtype());
            MemorySegment src = native_(in);
            MemorySegment dst = writable(out);
            blocking(call, () -> mpi.alltoallv(src, v, v.asSlice(size * 4L), type, dst, v.asSlice(2L * size * 4),
                    v.asSlice(3L * size * 4), comm));
        }
    }

    /**
     * Checks the splits (a short wait for the peers), then starts the data exchange with
     * {@code MPI_Ialltoallv} and returns; the data move while the caller goes on.
     */
    @Override
    public Work allToAllSingleAsync(Tensor out, Tensor in, int[] outSplits, int[] inSplits) {
        Call call = begin("allToAllSingle");
        checkAllToAllArgs(out, in, outSplits, inSplits);
        // memory that must outlive this call: freed by the GC once the Work is gone
        Arena arena = Arena.ofAuto();
        agreeOnSplits(call, arena, outSplits, inSplits);
        MemorySegment v = countsAndDisplacements(arena, outSplits, inSplits, in.rowWidth());
        PendingRequests requests = new PendingRequests(mpi, arena, 1);
        MpiLibrary.LOCK.lock();
        try {
            mpi.ialltoallv(native_(in), v, v.asSlice(size * 4L), datatype(in.dtype()), writable(out),
                    v.asSlice(2L * size * 4), v.asSlice(3L * size * 4), comm, requests.next());
        } finally {
            MpiLibrary.LOCK.unlock();
        }
        AsyncWork work = new AsyncWork(call, requests, in, out);
        synchronized (inFlight) {
            inFlight.add(work);
        }
        return work;
    }

    /**
     * Gathers every rank's splits (2P ints each: what it sends, what it expects) and checks that what
     * each rank sends to each peer is what that peer expects. Every rank sees the same matrix, so a
     * disagreement raises the same {@link CollectiveException} on all of them, before any data move.
     */
    private void agreeOnSplits(Call call, Arena arena, int[] outSplits, int[] inSplits) {
        if (!VERIFY_SPLITS) return;
        int p = size;
        MemorySegment all = arena.allocate(JAVA_INT, 2L * p * p + 2L * p);
        MemorySegment mine = all.asSlice(2L * p * p * 4);
        MemorySegment.copy(inSplits, 0, mine, JAVA_INT, 0, p);
        MemorySegment.copy(outSplits, 0, mine, JAVA_INT, p * 4L, p);
        blocking(call, () -> mpi.allgather(mine, 2 * p, mpi.intType, all, comm));
        List<String> problems = new ArrayList<>();
        for (int s = 0; s < p; s++) {
            for (int r = 0; r < p; r++) {
                int sends = all.getAtIndex(JAVA_INT, 2L * p * s + r);
                int expects = all.getAtIndex(JAVA_INT, 2L * p * r + p + s);
                if (sends != expects) {
                    problems.add("rank " + s + " sends " + sends + " rows to rank " + r + " but rank " + r + " expects "
                            + expects);
                }
            }
        }
        if (!problems.isEmpty()) {
            throw fail(call, "the splits do not agree: " + String.join("; ", problems.subList(0, Math.min(8, problems.size())))
                    + (problems.size() > 8 ? "; and " + (problems.size() - 8) + " more" : ""));
        }
    }

    /** sendcounts, sdispls, recvcounts, rdispls of an all-to-all of rows of {@code width} elements, in elements. */
    private MemorySegment countsAndDisplacements(Arena arena, int[] outSplits, int[] inSplits, long width) {
        MemorySegment v = arena.allocate(JAVA_INT, 4L * size);
        long sendOffset = 0;
        long recvOffset = 0;
        for (int j = 0; j < size; j++) {
            v.setAtIndex(JAVA_INT, j, elements("allToAllSingle", inSplits[j] * width));
            v.setAtIndex(JAVA_INT, size + j, elements("allToAllSingle", sendOffset));
            v.setAtIndex(JAVA_INT, 2L * size + j, elements("allToAllSingle", outSplits[j] * width));
            v.setAtIndex(JAVA_INT, 3L * size + j, elements("allToAllSingle", recvOffset));
            sendOffset += inSplits[j] * width;
            recvOffset += outSplits[j] * width;
        }
        return v;
    }

    private void checkAllToAllArgs(Tensor out, Tensor in, int[] outSplits, int[] inSplits) {
        String op = "allToAllSingle";
        requireWireType(op, in);
        writable(out);
        String problem = CollectiveArguments.allToAll(out, in, outSplits, inSplits, size);
        if (problem != null) invalid(op, problem);
    }

    @Override
    public int[] allToAll(int[] send, int chunk) {
        Call call = begin("allToAll");
        if (chunk < 0 || send.length != (long) chunk * size) {
            invalid("allToAll", "send holds " + send.length + " ints, expected size() * chunk = " + size + " * " + chunk);
        }
        drainAsync(call);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buf = arena.allocate(JAVA_INT, Math.max(1, 2L * send.length));
            MemorySegment.copy(send, 0, buf, JAVA_INT, 0, send.length);
            blocking(call, () -> mpi.alltoall(buf, chunk, mpi.intType, buf.asSlice(send.length * 4L), comm));
            int[] received = new int[send.length];
            MemorySegment.copy(buf, JAVA_INT, send.length * 4L, received, 0, send.length);
            return received;
        }
    }

    // ---------------------------------------------------------------- reductions

    @Override
    public void allReduce(Tensor t, ReduceOp op) {
        Call call = begin("allReduce");
        checkReducible("allReduce", t, op);
        drainAsync(call);
        if (size == 1) return; // a sum, max or average over one rank is the value itself
        long n = t.numel();
        long per = (n + size - 1) / size;
        long[] start = new long[size + 1];
        for (int j = 0; j <= size; j++) start[j] = Math.min(n, j * per);
        long mine = start[rank + 1] - start[rank];
        MemorySegment type = datatype(t.dtype());
        MemorySegment data = writable(t);
        try (Arena arena = Arena.ofConfined()) {
            // chunk j of every rank goes to rank j, which reduces it and gathers the result back to all
            MemorySegment pieces = arena.allocate(Math.max(1, mine * size * 4), 64);
            MemorySegment v = arena.allocate(JAVA_INT, 4L * size);
            for (int j = 0; j < size; j++) {
                v.setAtIndex(JAVA_INT, j, elements("allReduce", start[j + 1] - start[j]));
                v.setAtIndex(JAVA_INT, size + j, elements("allReduce", start[j]));
                v.setAtIndex(JAVA_INT, 2L * size + j, elements("allReduce", mine));
                v.setAtIndex(JAVA_INT, 3L * size + j, elements("allReduce", j * mine));
            }
            blocking(call, () -> mpi.alltoallv(data, v, v.asSlice(size * 4L), type, pieces, v.asSlice(2L * size * 4),
                    v.asSlice(3L * size * 4), comm));
            reduction.reduce(t.dtype(), op, pieces, size, mine, data, start[rank]);
            // in place: each rank's result already sits at its displacement in data
            blocking(call, () -> mpi.allgatherv(MPI_IN_PLACE, 0, type, data, v, v.asSlice(size * 4L), comm));
        }
    }

    /** Completes before returning: MPI's non-blocking reductions would not combine in rank order. */
    @Override
    public Work allReduceAsync(Tensor t, ReduceOp op) {
        allReduce(t, op);
        return Work.completed();
    }

    @Override
    public void reduceScatter(Tensor out, Tensor in, ReduceOp op) {
        Call call = begin("reduceScatter");
        requireSameType("reduceScatter", out, in);
        checkReducible("reduceScatter", in, op);
        if (in.numel() != out.numel() * size || in.rowWidth() != out.rowWidth()) {
            invalid("reduceScatter", "in " + in.shapeString() + " must hold size() = " + size + " times the rows of out "
                    + out.shapeString());
        }
        drainAsync(call);
        long m = out.numel();
        int count = elements("reduceScatter", m);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment pieces = arena.allocate(Math.max(1, m * size * 4), 64);
            MemorySegment src = native_(in);
            MemorySegment type = datatype(in.dtype());
            blocking(call, () -> mpi.alltoall(src, count, type, pieces, comm));
            reduction.reduce(in.dtype(), op, pieces, size, m, native_(out), 0);
        }
    }

    private void checkReducible(String op, Tensor t, ReduceOp reduceOp) {
        requireWireType(op, t);
        if (reduceOp == ReduceOp.AVG && t.dtype() != DType.F32) {
            invalid(op, "AVG needs a F32 tensor, got " + t.dtype() + t.shapeString());
        }
    }

    // ---------------------------------------------------------------- gathers, broadcast, barrier

    @Override
    public void allGather(Tensor out, Tensor in) {
        Call call = begin("allGather");
        requireSameType("allGather", out, in);
        requireWireType("allGather", in);
        if (out.rowWidth() != in.rowWidth()) {
            invalid("allGather", "row widths differ: out " + out.shapeString() + ", in " + in.shapeString());
        }
        drainAsync(call);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(JAVA_INT, 2L * size + 1);
            MemorySegment mine = v.asSlice(2L * size * 4);
            mine.set(JAVA_INT, 0, elements("allGather", in.numel()));
            blocking(call, () -> mpi.allgather(mine, 1, mpi.intType, v, comm));
            long total = 0;
            for (int j = 0; j < size; j++) {
                v.setAtIndex(JAVA_INT, size + j, elements("allGather", total));
                total += v.getAtIndex(JAVA_INT, j);
            }
            if (total != out.numel()) {
                // every rank sees the same counts, so a wrong total is seen by all of them
                throw fail(call, "the ranks' inputs hold " + total / Math.max(1, in.rowWidth()) + " rows in all but out "
                        + out.shapeString() + " has " + out.rowCount());
            }
            String overlap = CollectiveArguments.disjoint(out, in);
            if (overlap != null) invalid("allGather", overlap);
            MemorySegment src = native_(in);
            MemorySegment dst = writable(out);
            MemorySegment type = datatype(in.dtype());
            int count = (int) in.numel();
            blocking(call, () -> mpi.allgatherv(src, count, type, dst, v, v.asSlice(size * 4L), comm));
        }
    }

    /** Completes before it returns, like {@link #allReduceAsync}: MPI's non-blocking all-gather is not bound. */
    @Override
    public Work allGatherAsync(Tensor out, Tensor in) {
        allGather(out, in);
        return Work.completed();
    }

    @Override
    public void broadcast(Tensor t, int root) {
        Call call = begin("broadcast");
        if (root < 0 || root >= size) invalid("broadcast", "root " + root + " is not a rank of a group of " + size);
        requireWireType("broadcast", t);
        drainAsync(call);
        try (Arena arena = Arena.ofConfined()) {
            // the root's element count and dtype first, so a receiver of another size fails instead of overrunning
            MemorySegment header = arena.allocate(JAVA_INT, 2);
            header.setAtIndex(JAVA_INT, 0, elements("broadcast", t.numel()));
            header.setAtIndex(JAVA_INT, 1, t.dtype().ordinal());
            blocking(call, () -> mpi.bcast(header, 2, mpi.intType, root, comm));
            int rootCount = header.getAtIndex(JAVA_INT, 0);
            int rootType = header.getAtIndex(JAVA_INT, 1);
            if (rootCount != t.numel() || rootType != t.dtype().ordinal()) {
                throw fail(call, "root " + root + " sends " + rootCount + " elements of " + DType.values()[rootType]
                        + " but rank " + rank + " holds " + t.dtype() + t.shapeString());
            }
            MemorySegment data = rank == root ? native_(t) : writable(t);
            MemorySegment type = datatype(t.dtype());
            blocking(call, () -> mpi.bcast(data, rootCount, type, root, comm));
        }
    }

    @Override
    public void barrier() {
        Call call = begin("barrier");
        drainAsync(call);
        blocking(call, () -> mpi.barrier(comm));
    }

    // ---------------------------------------------------------------- sub-groups

    /**
     * Gathers every rank's (color, key) first (to name the new group's members), then splits with
     * {@code MPI_Comm_split}.
     */
    @Override
    public ProcessGroup split(int color, int key, String name) {
        Call call = begin("split");
        drainAsync(call);
        int[] all = new int[2 * size];
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buf = arena.allocate(JAVA_INT, 2L * size + 2);
            MemorySegment mine = buf.asSlice(2L * size * 4);
            mine.setAtIndex(JAVA_INT, 0, color);
            mine.setAtIndex(JAVA_INT, 1, key);
            blocking(call, () -> mpi.allgather(mine, 2, mpi.intType, buf, comm));
            MemorySegment.copy(buf, JAVA_INT, 0, all, 0, 2 * size);
        }
        MemorySegment[] child = new MemorySegment[1];
        blocking(call, () -> child[0] = mpi.commSplit(comm, color < 0 ? MpiLibrary.MPI_UNDEFINED : color, key));
        if (color < 0) return null;
        // members ordered by (key, rank), as MPI orders them
        List<int[]> members = new ArrayList<>();
        for (int j = 0; j < size; j++) {
            if (all[2 * j] == color) members.add(new int[] {all[2 * j + 1], j});
        }
        members.sort((a, b) -> a[0] != b[0] ? Integer.compare(a[0], b[0]) : Integer.compare(a[1], b[1]));
        int[] worldRanks = members.stream().mapToInt(m -> globalRanks[m[1]]).toArray();
        MpiProcessGroup g = new MpiProcessGroup(mpi, child[0], worldRanks, name, timeout);
        if (worldRanks[g.rank] != globalRanks[rank]) {
            throw fail(call, "MPI placed this rank at " + g.rank + " of the new group, expected the (key, rank) order "
                    + Arrays.toString(worldRanks));
        }
        return g;
    }

    /** Takes the whole job down: MPI has no way to break one communicator and let its ranks go on. */
    @Override
    public void abort(String reason) {
        broken = reason;
        MpiRuntime.abortJob("rank " + rank + " of group '" + name + "' (world rank " + globalRanks[rank] + ") aborts: "
                + reason, MpiRuntime.EXIT_FAILURE);
    }

    // ---------------------------------------------------------------- plumbing

    /** One collective on this handle: its name, number and deadline, and its description for an abort message. */
    private final class Call {
        final String op;
        final long number;
        long deadline;

        Call(String op, long number) {
            this.op = op;
            this.number = number;
            this.deadline = System.nanoTime() + timeout.toNanos();
        }

        /** The deadline counts from now: waiting for earlier asynchronous work is not this call's time. */
        void restartClock() {
            this.deadline = System.nanoTime() + timeout.toNanos();
        }

        @Override
        public String toString() {
            return "rank " + rank + " of group '" + name + "' (world rank " + globalRanks[rank] + ", " + size
                    + " ranks): collective " + op + " #" + number + " did not complete within " + timeout
                    + " (a peer failed, stopped, or called another collective)";
        }
    }

    private Call begin(String op) {
        String why = broken;
        if (why != null) {
            throw new CollectiveException(op, name, rank, size, calls + 1, "the group is broken: " + why);
        }
        return new Call(op, ++calls);
    }

    /**
     * Runs one blocking MPI call for {@code call}, holding {@link MpiLibrary#LOCK} and watched by the
     * {@link Watchdog} up to the call's deadline.
     */
    private void blocking(Call call, Runnable mpiCall) {
        MpiLibrary.LOCK.lock();
        watchdog.arm(call.deadline, call);
        try {
            mpiCall.run();
        } finally {
            watchdog.disarm();
            MpiLibrary.LOCK.unlock();
        }
    }

    private CollectiveException fail(Call call, String detail) {
        broken = call.op + " #" + call.number + " failed on rank " + rank + ": " + detail;
        return new CollectiveException(call.op, name, rank, size, call.number, detail);
    }

    /** A blocking collective starts after the asynchronous ones started before it ended. */
    private void drainAsync(Call call) {
        boolean waited = false;
        while (true) {
            AsyncWork w;
            synchronized (inFlight) {
                w = inFlight.peekFirst();
            }
            if (w == null) break;
            w.await();
            waited = true;
        }
        if (waited) call.restartClock();
    }

    /** An asynchronous collective: its requests, and the check to run once they completed. */
    private final class AsyncWork implements Work {
        private final Call call;
        private final PendingRequests requests;
        /** MPI reads and writes these tensors' memory until the exchange completes: they must stay reachable. */
        private final Tensor in;
        private final Tensor out;
        private boolean finished;

        AsyncWork(Call call, PendingRequests requests, Tensor in, Tensor out) {
            this.call = call;
            this.requests = requests;
            this.in = in;
            this.out = out;
        }

        @Override
        public synchronized void await() {
            if (!finished) {
                requests.awaitAll(call.deadline, call);
                finish();
            }
        }

        @Override
        public synchronized boolean isDone() {
            if (!finished && requests.tryTestAll()) finish();
            return finished;
        }

        private void finish() {
            finished = true;
            synchronized (inFlight) {
                inFlight.remove(this);
            }
            if (!in.data().scope().isAlive() || !out.data().scope().isAlive()) {
                // the memory went back to its pool while MPI was still using it: nothing can be trusted now
                MpiRuntime.abortJob("rank " + rank + " of group '" + name + "': a tensor of an asynchronous "
                        + call + " was freed (its MemoryScope closed) before the exchange was awaited", 4);
            }
            java.lang.ref.Reference.reachabilityFence(in);
            java.lang.ref.Reference.reachabilityFence(out);
        }
    }

    private static MemorySegment native_(Tensor t) {
        MemorySegment s = t.data();
        if (!s.isNative()) {
            throw new IllegalArgumentException("mpi: tensor " + t.shapeString() + " is not in native memory; MPI reads"
                    + " and writes tensors in place, so they must be allocated off-heap (Tensor.zeros etc.)");
        }
        return s;
    }

    /** A tensor MPI writes into: native, writable (MPI writing a read-only mapping would crash the JVM). */
    private static MemorySegment writable(Tensor t) {
        MemorySegment s = native_(t);
        if (s.isReadOnly()) {
            throw new IllegalArgumentException("mpi: output tensor " + t.shapeString() + " is read-only (e.g. a"
                    + " memory-mapped checkpoint tensor); copy it first");
        }
        return s;
    }

    private MemorySegment datatype(DType dtype) {
        return dtype == DType.F32 ? mpi.floatType : mpi.intType;
    }

    /** An element count or offset as MPI's int, or an error naming the limit. */
    private int elements(String op, long n) {
        if (n > Integer.MAX_VALUE) {
            invalid(op, n + " elements exceed MPI's int counts (at most " + Integer.MAX_VALUE + " per call); split the tensor");
        }
        return (int) n;
    }

    private void requireWireType(String op, Tensor t) {
        if (t.dtype() != DType.F32 && t.dtype() != DType.I32) {
            invalid(op, "moves F32 and I32 tensors, got " + t.dtype() + t.shapeString());
        }
    }

    private void requireSameType(String op, Tensor out, Tensor in) {
        String problem = CollectiveArguments.sameType(out, in);
        if (problem != null) invalid(op, problem);
    }

    /** Bad local arguments: the peers cannot go on without us, so the group breaks too. */
    private void invalid(String op, String detail) {
        broken = "rank " + rank + " called " + op + " with bad arguments: " + detail;
        throw new IllegalArgumentException(op + " on group '" + name + "' (rank " + rank + "): " + detail);
    }
}
