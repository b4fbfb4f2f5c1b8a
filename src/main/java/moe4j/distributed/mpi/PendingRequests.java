package moe4j.distributed.mpi;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * The MPI requests of an asynchronous collective in flight, completed by polling {@code MPI_Test}
 * until a deadline. MPI cannot cancel a collective, so past the deadline the job is aborted
 * ({@link MpiRuntime#abortJob}), the only way to make sure no rank waits forever. (Blocking
 * collectives are bounded by the {@link Watchdog} instead.)
 *
 * <p>Each poll takes {@link MpiLibrary#LOCK} for one {@code MPI_Test} and lets go, so other threads
 * of the process can make MPI calls in between. Waiting spins briefly, then yields the core at every
 * poll: ranks are often more than cores ({@code --oversubscribe}), and a spinning waiter would take
 * the time its peer needs to arrive.
 */
final class PendingRequests {
    private static final int SPINS_BEFORE_YIELD = 200;

    private final MpiLibrary mpi;
    private final MemorySegment requests;
    private final MemorySegment flag;
    private final boolean[] done;
    private int started;

    /** Room for {@code capacity} requests, allocated in {@code arena} (which must outlive the collective). */
    PendingRequests(MpiLibrary mpi, Arena arena, int capacity) {
        this.mpi = mpi;
        this.requests = arena.allocate(ADDRESS, capacity);
        this.flag = arena.allocate(JAVA_INT);
        this.done = new boolean[capacity];
    }

    /** The slot the next non-blocking call writes its {@code MPI_Request} to; returns it and counts it started. */
    MemorySegment next() {
        MemorySegment slot = requests.asSlice(started * ADDRESS.byteSize(), ADDRESS.byteSize());
        started++;
        return slot;
    }

    /** Whether request {@code i} has completed; one {@code MPI_Test} if it had not yet. */
    boolean test(int i) {
        if (done[i]) return true;
        MpiLibrary.LOCK.lock();
        try {
            done[i] = mpi.test(requests.asSlice(i * ADDRESS.byteSize(), ADDRESS.byteSize()), flag);
        } finally {
            MpiLibrary.LOCK.unlock();
        }
        return done[i];
    }

    /** Whether all started requests have completed, testing each that had not. */
    boolean testAll() {
        boolean all = true;
        for (int i = 0; i < started; i++) all &= test(i);
        return all;
    }

    /**
     * Like {@link #testAll()}, but answers false at once instead of waiting while another thread is
     * inside MPI (e.g. in a blocking collective), so that polling never blocks.
     */
    boolean tryTestAll() {
        if (!MpiLibrary.LOCK.tryLock()) return false;
        try {
            return testAll();
        } finally {
            MpiLibrary.LOCK.unlock();
        }
    }

    /** Waits for request {@code i}; past {@code deadlineNanos} (a {@link System#nanoTime} value) aborts the job with {@code what}. */
    void await(int i, long deadlineNanos, Object what) {
        int polls = 0;
        while (!test(i)) {
            polls = pause(polls, deadlineNanos, what);
        }
    }

    /** Waits for every started request (see {@link #await(int, long, Object)}). */
    void awaitAll(long deadlineNanos, Object what) {
        int polls = 0;
        while (!testAll()) {
            polls = pause(polls, deadlineNanos, what);
        }
    }

    private static int pause(int polls, long deadlineNanos, Object what) {
        if (System.nanoTime() - deadlineNanos > 0) MpiRuntime.abortJob(String.valueOf(what), MpiRuntime.EXIT_TIMEOUT);
        if (polls < SPINS_BEFORE_YIELD) {
            Thread.onSpinWait();
        } else {
            Thread.yield();
        }
        return polls + 1;
    }
}
