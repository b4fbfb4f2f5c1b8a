package moe4j.distributed;

import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import moe4j.distributed.Rendezvous.Post;
import moe4j.tensor.DType;
import moe4j.tensor.Tensor;

/**
 * One rank's handle on a group of in-JVM ranks (threads of one JVM).
 *
 * <p>Data moves with one copy per byte: each rank posts its own buffers at the {@link Rendezvous},
 * and every receiver copies its part straight out of the senders' buffers (reductions read every
 * rank's chunk and write the result back to every rank). Tensors therefore must live in shared
 * arenas, which {@link moe4j.tensor.MemoryScope} provides. Small exchanges (up to
 * {@link #EAGER_BYTES}) post a private copy instead, which spares the second wait of the rendezvous:
 * latency matters more than a copy there.
 *
 * <p>Asynchronous collectives run on one background thread per handle, in the order they were
 * started; a blocking collective first waits for those, then runs on the caller's thread.
 */
final class LocalProcessGroup implements ProcessGroup {
    /** Messages up to this size travel as private copies (one rendezvous wait instead of two). */
    static final long EAGER_BYTES = 16 * 1024;

    private final Rendezvous group;
    private final int rank;
    private final LocalWorld world;

    /** Calls made on this handle so far; the next collective is call {@code calls + 1}. */
    private long calls;
    private ExecutorService background;
    private CompletableFuture<Void> lastAsync;
    private final Reducer reducer = new Reducer();

    LocalProcessGroup(Rendezvous group, int rank, LocalWorld world) {
        this.group = group;
        this.rank = rank;
        this.world = world;
        world.register(this);
    }

    @Override
    public int rank() {
        return rank;
    }

    @Override
    public int size() {
        return group.size;
    }

    @Override
    public int[] globalRanks() {
        return group.globalRanks();
    }

    @Override
    public String name() {
        return group.name;
    }

    @Override
    public Duration timeout() {
        return group.timeout;
    }

    int worldRank() {
        return group.globalRank(rank);
    }

    @Override
    public String toString() {
        return "LocalProcessGroup(" + group.name + ", rank " + rank + " of " + group.size + ")";
    }

    // ---------------------------------------------------------------- all-to-all

    /** {@code in} is the caller's tensor, or a private copy of it when {@code copied}. */
    private record AllToAllData(MemorySegment in, int[] inSplits, int[] outSplits, boolean copied) {}

    @Override
    public void allToAllSingle(Tensor out, Tensor in, int[] outSplits, int[] inSplits) {
        checkAllToAllArgs(out, in, outSplits, inSplits);
        drainAsync();
        runAllToAllSingle(out, in, outSplits.clone(), inSplits.clone());
    }

    @Override
    public Work allToAllSingleAsync(Tensor out, Tensor in, int[] outSplits, int[] inSplits) {
        checkAllToAllArgs(out, in, outSplits, inSplits);
        int[] o = outSplits.clone();
        int[] i = inSplits.clone();
        return submit(() -> runAllToAllSingle(out, in, o, i));
    }

    private void checkAllToAllArgs(Tensor out, Tensor in, int[] outSplits, int[] inSplits) {
        String problem = CollectiveArguments.allToAll(out, in, outSplits, inSplits, size());
        if (problem != null) invalid("allToAllSingle", problem);
    }

    private void requireDisjoint(String op, Tensor out, Tensor in) {
        String problem = CollectiveArguments.disjoint(out, in);
        if (problem != null) invalid(op, problem);
    }

    private void runAllToAllSingle(Tensor out, Tensor in, int[] outSplits, int[] inSplits) {
        long rowBytes = (long) in.rowWidth() * in.dtype().byteSize;
        boolean eager = in.data().byteSize() <= EAGER_BYTES;
        MemorySegment source = eager ? privateCopy(in.data()) : in.data();
        Post mine = post("allToAllSingle", in.dtype() + " rows of " + in.rowWidth(),
                new AllToAllData(source, inSplits, outSplits, eager));
        Post[] all = group.exchange(rank, mine);
        boolean allCopied = true;
        try {
            String disagreement = splitDisagreement(all);
            if (disagreement != null) throw group.fail(rank, mine, disagreement);
            MemorySegment dst = out.data();
            int p = size();
            // start with a different peer on every rank so the senders' memory is read evenly
            for (int step = 0; step < p; step++) {
                int src = (rank + step) % p;
                AllToAllData from = (AllToAllData) all[src].data();
                allCopied &= from.copied();
                long n = outSplits[src] * rowBytes;
                if (n == 0) continue;
                MemorySegment.copy(from.in(), offset(from.inSplits(), rank) * rowBytes, dst,
                        offset(outSplits, src) * rowBytes, n);
            }
        } catch (RuntimeException e) {
            throw failed(mine, e);
        }
        if (!allCopied) group.finish(rank, mine); // every rank sees the same posts, so all decide alike
    }

    /** A copy of a small message the receivers can read after this rank has moved on. */
    private static MemorySegment privateCopy(MemorySegment data) {
        MemorySegment copy = MemorySegment.ofArray(new long[(int) ((data.byteSize() + 7) / 8)]).asSlice(0, data.byteSize());
        MemorySegment.copy(data, 0, copy, 0, data.byteSize());
        return copy;
    }

    /** Checks that what each rank sends to each peer is what that peer expects; every rank gets the same answer. */
    private static String splitDisagreement(Post[] all) {
        List<String> problems = new ArrayList<>();
        for (int s = 0; s < all.length; s++) {
            int[] sends = ((AllToAllData) all[s].data()).inSplits();
            for (int r = 0; r < all.length; r++) {
                int expects = ((AllToAllData) all[r].data()).outSplits()[s];
                if (sends[r] != expects) {
                    problems.add("rank " + s + " sends " + sends[r] + " rows to rank " + r + " but rank " + r
                            + " expects " + expects);
                }
            }
        }
        if (problems.isEmpty()) return null;
        return "the splits do not agree: " + String.join("; ", problems.subList(0, Math.min(problems.size(), 8)))
                + (problems.size() > 8 ? "; and " + (problems.size() - 8) + " more" : "");
    }

    private static long offset(int[] splits, int upTo) {
        long o = 0;
        for (int i = 0; i < upTo; i++) o += splits[i];
        return o;
    }

    @Override
    public int[] allToAll(int[] send, int chunk) {
        String op = "allToAll";
        if (chunk < 0 || send.length != (long) chunk * size()) {
            invalid(op, "send holds " + send.length + " ints, expected size() * chunk = " + size() + " * " + chunk);
        }
        drainAsync();
        int[] mineCopy = send.clone();
        Post mine = post(op, "chunk of " + chunk, mineCopy);
        Post[] all = group.exchange(rank, mine);
        int[] received = new int[send.length];
        for (int j = 0; j < all.length; j++) {
            System.arraycopy((int[]) all[j].data(), rank * chunk, received, j * chunk, chunk);
        }
        return received; // the posts were private copies: no need to wait for the readers

    }

    // ---------------------------------------------------------------- reductions

    @Override
    public void allReduce(Tensor t, ReduceOp op) {
        checkReducible("allReduce", t, op);
        drainAsync();
        runAllReduce(t, op);
    }

    @Override
    public Work allReduceAsync(Tensor t, ReduceOp op) {
        checkReducible("allReduce", t, op);
        return submit(() -> runAllReduce(t, op));
    }

    private void checkReducible(String op, Tensor t, ReduceOp reduceOp) {
        if (t.dtype() != DType.F32 && t.dtype() != DType.I32) {
            invalid(op, "can only reduce F32 and I32 tensors, got " + t.dtype() + t.shapeString());
        }
        if (reduceOp == ReduceOp.AVG && t.dtype() != DType.F32) {
            invalid(op, "AVG needs a F32 tensor, got " + t.dtype() + t.shapeString());
        }
    }

    private void runAllReduce(Tensor t, ReduceOp op) {
        // small tensors: every rank reduces private copies of all inputs itself (same order, same bits)
        boolean eager = t.data().byteSize() <= EAGER_BYTES;
        Post mine = post("allReduce", t.dtype() + t.shapeString() + " " + op, eager ? privateCopy(t.data()) : t.data());
        Post[] all = group.exchange(rank, mine);
        if (eager) {
            try {
                MemorySegment[] copies = new MemorySegment[all.length];
                for (int j = 0; j < all.length; j++) copies[j] = (MemorySegment) all[j].data();
                reducer.reduce(t.dtype(), op, copies, 0, t.numel(), new MemorySegment[] {t.data()}, 0);
            } catch (RuntimeException e) {
                throw failed(mine, e);
            }
            return;
        }
        try {
            // Rank r reduces chunk r of every rank's tensor and writes the result into all of them:
            // nobody else touches that chunk, and the result is one value written everywhere.
            long n = t.numel();
            long[] range = chunk(n, size(), rank);
            MemorySegment[] segments = new MemorySegment[all.length];
            for (int j = 0; j < all.length; j++) segments[j] = (MemorySegment) all[j].data();
            reducer.reduce(t.dtype(), op, segments, range[0], range[1] - range[0], segments, range[0]);
        } catch (RuntimeException e) {
            throw failed(mine, e);
        }
        group.finish(rank, mine);
    }

    /** Element range {@code [start, end)} of chunk {@code r} of {@code n}, on 64-byte boundaries. */
    private static long[] chunk(long n, int parts, int r) {
        long per = (n + parts - 1) / parts;
        per = (per + 15) / 16 * 16;
        long start = Math.min(n, r * per);
        return new long[] {start, Math.min(n, start + per)};
    }

    @Override
    public void reduceScatter(Tensor out, Tensor in, ReduceOp op) {
        String name = "reduceScatter";
        requireSameType(name, out, in);
        checkReducible(name, in, op);
        if (in.numel() != out.numel() * size() || in.rowWidth() != out.rowWidth()) {
            invalid(name, "in " + in.shapeString() + " must hold size() = " + size() + " times the rows of out "
                    + out.shapeString());
        }
        requireDisjoint(name, out, in);
        drainAsync();
        Post mine = post(name, in.dtype() + in.shapeString() + " " + op, in.data());
        Post[] all = group.exchange(rank, mine);
        try {
            MemorySegment[] segments = new MemorySegment[all.length];
            for (int j = 0; j < all.length; j++) segments[j] = (MemorySegment) all[j].data();
            reducer.reduce(in.dtype(), op, segments, rank * out.numel(), out.numel(), new MemorySegment[] {out.data()}, 0);
        } catch (RuntimeException e) {
            throw failed(mine, e);
        }
        group.finish(rank, mine);
    }

    // ---------------------------------------------------------------- gathers

    @Override
    public void allGather(Tensor out, Tensor in) {
        checkGather(out, in);
        drainAsync();
        runAllGather(out, in);
    }

    @Override
    public Work allGatherAsync(Tensor out, Tensor in) {
        checkGather(out, in);
        return submit(() -> runAllGather(out, in));
    }

    private void checkGather(Tensor out, Tensor in) {
        String op = "allGather";
        requireSameType(op, out, in);
        if (out.rowWidth() != in.rowWidth()) {
            invalid(op, "row widths differ: out " + out.shapeString() + ", in " + in.shapeString());
        }
        requireDisjoint(op, out, in);
    }

    private void runAllGather(Tensor out, Tensor in) {
        String op = "allGather";
        Post mine = post(op, in.dtype() + " rows of " + in.rowWidth() + " into " + out.shapeString(), in);
        Post[] all = group.exchange(rank, mine);
        try {
            long total = 0;
            for (Post p : all) total += ((Tensor) p.data()).rowCount();
            if (total != out.rowCount()) {
                throw group.fail(rank, mine, "the ranks' inputs hold " + total + " rows in all but out "
                        + out.shapeString() + " has " + out.rowCount());
            }
            long offset = 0;
            for (Post p : all) {
                MemorySegment src = ((Tensor) p.data()).data();
                MemorySegment.copy(src, 0, out.data(), offset, src.byteSize());
                offset += src.byteSize();
            }
        } catch (RuntimeException e) {
            throw failed(mine, e);
        }
        group.finish(rank, mine);
    }

    @Override
    public void broadcast(Tensor t, int root) {
        String op = "broadcast";
        if (root < 0 || root >= size()) invalid(op, "root " + root + " is not a rank of a group of " + size());
        drainAsync();
        Post mine = post(op, t.dtype() + t.shapeString() + " from root " + root, t.data());
        Post[] all = group.exchange(rank, mine);
        try {
            if (rank != root) MemorySegment.copy((MemorySegment) all[root].data(), 0, t.data(), 0, t.data().byteSize());
        } catch (RuntimeException e) {
            throw failed(mine, e);
        }
        group.finish(rank, mine);
    }

    @Override
    public void barrier() {
        drainAsync();
        group.exchange(rank, post("barrier", "", null));
    }

    // ---------------------------------------------------------------- sub-groups

    @Override
    public ProcessGroup split(int color, int key, String name) {
        drainAsync();
        Post mine = post("split", "", new int[] {color, key});
        Post[] all = group.exchange(rank, mine);
        ProcessGroup result = null;
        if (color >= 0) {
            List<int[]> members = new ArrayList<>(); // {key, group rank}
            for (int j = 0; j < all.length; j++) {
                int[] ck = (int[]) all[j].data();
                if (ck[0] == color) members.add(new int[] {ck[1], j});
            }
            members.sort((a, b) -> a[0] != b[0] ? Integer.compare(a[0], b[0]) : Integer.compare(a[1], b[1]));
            int[] worldRanks = members.stream().mapToInt(m -> group.globalRank(m[1])).toArray();
            int newRank = -1;
            for (int i = 0; i < members.size(); i++) if (members.get(i)[1] == rank) newRank = i;
            Rendezvous child = group.children.computeIfAbsent(mine.call() + "/" + color,
                    k -> world.register(new Rendezvous(name, worldRanks, group.timeout)));
            result = new LocalProcessGroup(child, newRank, world);
        }
        return result;
    }

    @Override
    public void abort(String reason) {
        group.abort(reason);
    }

    // ---------------------------------------------------------------- plumbing

    private Post post(String op, String agreed, Object data) {
        return new Post(op, ++calls, agreed, data);
    }

    /** An unexpected failure while copying: break the group so the peers do not wait for us. */
    private CollectiveException failed(Post mine, RuntimeException e) {
        if (e instanceof CollectiveException ce) return ce;
        group.abort(mine.op() + " #" + mine.call() + " failed on rank " + rank + ": " + e);
        return new CollectiveException(mine.op(), group.name, rank, size(), mine.call(), "failed: " + e, e);
    }

    /** Bad local arguments: the peers cannot go on without us, so the group breaks too. */
    private void invalid(String op, String detail) {
        group.abort("rank " + rank + " called " + op + " with bad arguments: " + detail);
        throw new IllegalArgumentException(op + " on group '" + group.name + "' (rank " + rank + "): " + detail);
    }

    private void requireSameType(String op, Tensor out, Tensor in) {
        String problem = CollectiveArguments.sameType(out, in);
        if (problem != null) invalid(op, problem);
    }

    private synchronized Work submit(Runnable collective) {
        if (background == null) {
            String threadName = "moe4j-rank-" + worldRank() + "-comm-" + group.name;
            background = Executors.newSingleThreadExecutor(r -> {
                Thread t = new Thread(r, threadName);
                t.setDaemon(true);
                return t;
            });
        }
        // Whatever the background collective dies of (an Error included), the group breaks: the peers must
        // not pair this rank's next call with the one it never finished.
        Runnable guarded = () -> {
            try {
                collective.run();
            } catch (Throwable t) {
                abort("an asynchronous collective of rank " + rank() + " failed: " + t);
                throw t;
            }
        };
        CompletableFuture<Void> f = CompletableFuture.runAsync(guarded, background);
        lastAsync = f;
        return new Work() {
            @Override
            public void await() {
                try {
                    f.join();
                } catch (CompletionException e) {
                    if (e.getCause() instanceof RuntimeException re) throw re;
                    if (e.getCause() instanceof Error err) throw err;
                    throw e;
                }
            }

            @Override
            public boolean isDone() {
                return f.isDone();
            }
        };
    }

    /** A blocking collective starts after the asynchronous ones started before it. */
    private void drainAsync() {
        CompletableFuture<Void> last;
        synchronized (this) {
            last = lastAsync;
        }
        if (last == null || last.isDone()) return;
        try {
            last.join();
        } catch (CompletionException ignored) {
            // the guard in submit broke the group; the next collective reports that
        }
    }

    /** Stops the background thread once its queued collectives are done (bounded by the timeout). */
    synchronized void shutdown() {
        if (background == null) return;
        background.shutdown();
        try {
            if (!background.awaitTermination(group.timeout.toMillis() + 1000, TimeUnit.MILLISECONDS)) {
                background.shutdownNow();
            }
        } catch (InterruptedException e) {
            background.shutdownNow();
            Thread.currentThread().interrupt();
        }
    }
}
