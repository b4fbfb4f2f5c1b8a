package moe4j.distributed.mpi;

import java.util.concurrent.locks.LockSupport;

/**
 * Bounds the blocking MPI calls of this process. A blocking collective is MPI's fastest path (its
 * tuned algorithms; the non-blocking forms go through a slower generic engine), but MPI cannot
 * interrupt or cancel it. So before each blocking call the caller {@link #arm arms} the watchdog with
 * the call's deadline, and disarms it after; if the deadline passes first, the watchdog thread
 * prints which rank waited in which collective of which group, and ends this process with
 * {@link MpiRuntime#EXIT_TIMEOUT}. {@code mpirun} then ends the whole job (a process exited without
 * finalizing); under launchers that do not, every other waiting rank's own watchdog ends it at its
 * deadline, so no rank waits forever.
 *
 * <p>Only one blocking MPI call is in progress per process at a time (they hold
 * {@link MpiLibrary#LOCK}), so one slot suffices. Arming is two volatile writes; the watchdog thread
 * checks the slot every {@link #checkIntervalNanos} (a tenth of the deadline, at most 100 ms).
 */
final class Watchdog {
    private static volatile Watchdog instance;

    private final long checkIntervalNanos;
    private volatile long deadline;
    /** What is being waited for (its toString is the message), or null when disarmed. */
    private volatile Object armed;

    private Watchdog(long timeoutNanos) {
        this.checkIntervalNanos = Math.max(1_000_000, Math.min(100_000_000, timeoutNanos / 10));
        Thread t = new Thread(this::watch, "moe4j-mpi-watchdog");
        t.setDaemon(true);
        t.start();
    }

    /** The process's watchdog, started on first use with a check interval suited to {@code timeoutNanos}. */
    static Watchdog get(long timeoutNanos) {
        Watchdog w = instance;
        if (w != null) return w;
        synchronized (Watchdog.class) {
            if (instance == null) instance = new Watchdog(timeoutNanos);
            return instance;
        }
    }

    /** Watches a call that must end by {@code deadlineNanos} ({@link System#nanoTime} time); {@code what} describes it. */
    void arm(long deadlineNanos, Object what) {
        deadline = deadlineNanos;
        armed = what;
    }

    void disarm() {
        armed = null;
    }

    private void watch() {
        while (true) {
            LockSupport.parkNanos(checkIntervalNanos);
            Object what = armed;
            if (what != null && System.nanoTime() - deadline > 0 && armed == what) {
                System.err.println("moe4j mpi: ABORTING JOB (world rank " + MpiRuntime.worldRank() + "): " + what);
                System.err.flush();
                System.out.flush();
                Runtime.getRuntime().halt(MpiRuntime.EXIT_TIMEOUT);
            }
        }
    }
}
