package moe4j.distributed;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.atomic.AtomicReferenceArray;
import java.util.concurrent.locks.LockSupport;

/**
 * The meeting point of the in-JVM ranks of one group, shared by all of them.
 *
 * <p>One collective is one or two waits. First every rank posts what it brings ({@link Post}: the
 * operation, the arguments that must agree, its buffers) and waits until every rank has posted the
 * same call; then each rank validates the whole set (all ranks see the same posts, so all reach the
 * same verdict) and copies what it needs straight out of its peers' buffers. Second, when the posts
 * lend the caller's own buffers, each rank marks its copying finished and waits until every rank
 * has, so no sender's buffer is released or reused while a receiver still reads it. Small exchanges
 * post private copies instead and skip the second wait.
 *
 * <p>Posts alternate between two slots per rank: a rank can post call c+2 only after every rank
 * posted c+1, and every rank read the posts of call c before posting c+1, so the slot is free.
 *
 * <p>Waiting spins briefly (a small exchange completes in a microsecond when every rank has a core
 * of its own), yields a few times, then parks with a deadline. Spinning is cut short when the group
 * has more ranks than the machine has cores: then a spinning waiter only takes the core from the rank
 * it waits for. The rank whose post completes a phase unparks the parked waiters; nobody else has
 * reason to.
 */
final class Rendezvous {
    /** Busy-wait iterations before parking (about 50 µs): long enough for a peer that is already on its way. */
    private static final int SPINS = 4_000;
    /** The same when ranks outnumber cores: just enough to catch a peer that is about to post. */
    private static final int SPINS_OVERSUBSCRIBED = 50;
    /**
     * Then yield this many times before parking: when ranks outnumber cores, handing the core straight
     * to a runnable peer is several times faster than a park/unpark round trip (measured: about 5 µs
     * instead of 25 µs for an exchange of 4 ranks on 2 cores).
     */
    private static final int YIELDS = 20;
    /** A parked waiter looks again at least this often, whatever it was told. */
    private static final long MAX_PARK_NANOS = 1_000_000;

    /** What one rank brings to one collective. */
    record Post(String op, long call, String agreed, Object data) {
        String describe() {
            return op + " #" + call + (agreed.isEmpty() ? "" : " " + agreed);
        }
    }

    final String name;
    final int size;
    private final int[] globalRanks;
    final Duration timeout;
    private final long timeoutNanos;

    /** Two post slots per rank, used by odd and even calls. */
    private final Post[][] posts;
    /** The number of the last call each rank posted (calls count from 1). */
    private final AtomicLongArray arrived;
    /** The number of the last call each rank finished copying for. */
    private final AtomicLongArray finished;
    /** 1 once a rank's work has ended: it will never post again. */
    private final AtomicIntegerArray departed;
    private final AtomicReferenceArray<Thread> parked;
    private final AtomicReference<String> brokenReason = new AtomicReference<>();
    /** The most each rank spins before yielding; adapts to how its waits went (see {@link #await}). */
    private final int maxSpins;
    /** Entry {@code rank * PAD}: one cache line per rank, as each rank writes its own after every wait. */
    private final int[] spinBudget;
    private static final int PAD = 16;

    /** Groups split off this one, by split call and color, so all members share one instance. */
    final ConcurrentHashMap<String, Rendezvous> children = new ConcurrentHashMap<>();

    Rendezvous(String name, int[] globalRanks, Duration timeout) {
        this.name = name;
        this.size = globalRanks.length;
        this.globalRanks = globalRanks.clone();
        this.timeout = timeout;
        this.timeoutNanos = timeout.toNanos();
        this.posts = new Post[2][size];
        this.arrived = new AtomicLongArray(size);
        this.finished = new AtomicLongArray(size);
        this.departed = new AtomicIntegerArray(size);
        this.parked = new AtomicReferenceArray<>(size);
        boolean oversubscribed = size > Runtime.getRuntime().availableProcessors();
        this.maxSpins = oversubscribed ? SPINS_OVERSUBSCRIBED : SPINS;
        this.spinBudget = new int[size * PAD];
        Arrays.fill(spinBudget, maxSpins);
    }

    int[] globalRanks() {
        return globalRanks.clone();
    }

    int globalRank(int groupRank) {
        return globalRanks[groupRank];
    }

    /** The group rank of world rank {@code worldRank}, or -1 when it is not a member. */
    int groupRankOf(int worldRank) {
        for (int i = 0; i < size; i++) {
            if (globalRanks[i] == worldRank) return i;
        }
        return -1;
    }

    String brokenReason() {
        return brokenReason.get();
    }

    /** Breaks the group (the first reason is kept) and wakes every waiter so it can fail. */
    void abort(String reason) {
        if (brokenReason.compareAndSet(null, reason)) wakeAll();
    }

    /** Records that {@code rank} will never post again (its work ended); waiters for it fail at once. */
    void depart(int rank) {
        departed.set(rank, 1);
        wakeAll();
    }

    /** Throws at once if the group is already broken (before this rank posts anything). */
    void checkUsable(int rank, String op, long call) {
        String reason = brokenReason.get();
        if (reason != null) {
            throw new CollectiveException(op, name, rank, size, call, "the group is broken: " + reason);
        }
    }

    /**
     * Posts {@code mine} for {@code rank} and waits until every rank has posted the same call. Returns
     * everyone's posts, indexed by rank, after checking that they are the same operation with agreeing
     * arguments; otherwise every rank throws the same description of the disagreement.
     */
    Post[] exchange(int rank, Post mine) {
        checkUsable(rank, mine.op, mine.call);
        Post[] slot = posts[(int) (mine.call & 1)];
        slot[rank] = mine;
        arrived.set(rank, mine.call); // volatile write publishes the post
        if (allReached(arrived, mine.call)) wakeAll(); // this post completed the phase
        await(rank, mine, arrived, "to call it");
        Post[] all = slot.clone();
        String mismatch = mismatch(all);
        if (mismatch != null) fail(rank, mine, mismatch);
        return all;
    }

    /** Marks {@code rank}'s copying for this call finished and waits until every rank's is. */
    void finish(int rank, Post mine) {
        finished.set(rank, mine.call);
        if (allReached(finished, mine.call)) wakeAll();
        await(rank, mine, finished, "to finish copying");
        // A rank that saw the group break may have returned (and reused its buffers) while the others
        // were still copying from them: no rank may report such a collective as a success.
        String reason = brokenReason.get();
        if (reason != null) {
            throw new CollectiveException(mine.op, name, rank, size, mine.call, "the group broke during the exchange: " + reason);
        }
    }

    /** Breaks the group and throws {@code detail} as this rank's failure of the collective. */
    CollectiveException fail(int rank, Post mine, String detail) {
        abort(mine.op + " #" + mine.call + " failed on group '" + name + "': " + detail);
        throw new CollectiveException(mine.op, name, rank, size, mine.call, detail);
    }

    private static String mismatch(Post[] all) {
        Post first = all[0];
        for (Post p : all) {
            if (!p.op.equals(first.op) || p.call != first.call || !p.agreed.equals(first.agreed)) {
                StringBuilder sb = new StringBuilder("the ranks' calls do not match:");
                for (int i = 0; i < all.length; i++) sb.append(" rank ").append(i).append(": ").append(all[i].describe()).append(';');
                sb.setLength(sb.length() - 1);
                return sb.toString();
            }
        }
        return null;
    }

    // ---------------------------------------------------------------- waiting

    private void await(int rank, Post mine, AtomicLongArray flags, String what) {
        long call = mine.call;
        if (allReached(flags, call)) return;
        long deadline = System.nanoTime() + timeoutNanos;
        boolean registered = false;
        // Spin as long as spinning has recently paid off: a wait that ends while spinning doubles the
        // budget, any other halves it. When other work holds the cores, spinning only delays the peer
        // we wait for, and a yield is what brings it in (measured on 2 busy cores: about 2 µs per
        // exchange of 2 ranks this way, 50-200 µs with a fixed spin).
        int spins = spinBudget[rank * PAD];
        try {
            for (int spin = 0; ; spin++) {
                if (allReached(flags, call)) {
                    spinBudget[rank * PAD] = spin < spins ? Math.min(maxSpins, 2 * spins + 1) : Math.max(1, spins / 2);
                    return;
                }
                String reason = brokenReason.get();
                if (reason != null) {
                    throw new CollectiveException(mine.op, name, rank, size, call, "the group is broken: " + reason);
                }
                if (spin < spins) {
                    Thread.onSpinWait();
                    continue;
                }
                List<Integer> missing = missing(flags, call);
                List<Integer> gone = new ArrayList<>();
                // `missing` may be stale: a peer can post, finish and depart between that read and this one.
                // It posts before it departs, so a departed peer whose flag is (now) below the call never posted.
                for (int m : missing) if (departed.get(m) == 1 && flags.get(m) < call) gone.add(m);
                if (gone.isEmpty() && allReached(flags, call)) continue;
                if (!gone.isEmpty()) {
                    // A failing rank breaks the group before it departs: if it did, say why (read after
                    // `departed`, so a break that happened first is seen).
                    String why = brokenReason.get();
                    if (why != null) {
                        throw new CollectiveException(mine.op, name, rank, size, call, "the group is broken: " + why);
                    }
                    throw fail(rank, mine, "rank(s) " + gone + " (world " + world(gone) + ") ended their work without calling it");
                }
                long now = System.nanoTime();
                if (now - deadline >= 0) {
                    throw fail(rank, mine, "timed out after " + seconds(timeout) + " waiting for rank(s) " + missing
                            + " (world " + world(missing) + ") " + what);
                }
                if (spin < spins + YIELDS) {
                    Thread.yield();
                    continue;
                }
                if (!registered) {
                    parked.set(rank, Thread.currentThread());
                    registered = true;
                    continue; // re-check the state after registering, then park
                }
                LockSupport.parkNanos(this, Math.min(deadline - now, MAX_PARK_NANOS));
                if (Thread.interrupted()) {
                    Thread.currentThread().interrupt();
                    throw fail(rank, mine, "interrupted while waiting for rank(s) " + missing + " " + what);
                }
            }
        } finally {
            if (registered) parked.set(rank, null);
        }
    }

    private boolean allReached(AtomicLongArray flags, long call) {
        for (int i = 0; i < size; i++) {
            if (flags.get(i) < call) return false;
        }
        return true;
    }

    private List<Integer> missing(AtomicLongArray flags, long call) {
        List<Integer> m = new ArrayList<>();
        for (int i = 0; i < size; i++) if (flags.get(i) < call) m.add(i);
        return m;
    }

    private String world(List<Integer> groupRanks) {
        return Arrays.toString(groupRanks.stream().mapToInt(r -> globalRanks[r]).toArray());
    }

    private static String seconds(Duration d) {
        return d.toMillis() % 1000 == 0 ? d.toSeconds() + " s" : d.toMillis() + " ms";
    }

    private void wakeAll() {
        for (int i = 0; i < size; i++) {
            Thread t = parked.get(i);
            if (t != null) LockSupport.unpark(t);
        }
    }
}
