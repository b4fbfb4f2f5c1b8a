package moe4j.distributed.nccl;

import java.util.Locale;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.locks.LockSupport;

/**
 * Bounds every NCCL collective of this process. NCCL's kernels wait on the GPU for their peers and
 * cannot be interrupted from the host; only {@code ncclCommAbort} ends them. So one daemon thread looks
 * at each group with an outstanding collective every {@link #INTERVAL_NANOS}: when NCCL reports an
 * asynchronous error (a peer failed, a network error) or the collective's deadline has passed, it breaks
 * the group and aborts its communicator ({@link NcclProcessGroup#expire}); the rank thread waiting for
 * the stream then throws.
 */
final class NcclWatchdog {
    static final long INTERVAL_NANOS = 10_000_000;

    private static volatile NcclWatchdog instance;

    private final Set<NcclProcessGroup> groups = ConcurrentHashMap.newKeySet();

    private NcclWatchdog() {
        Thread t = new Thread(this::watch, "moe4j-nccl-watchdog");
        t.setDaemon(true);
        t.start();
    }

    static NcclWatchdog get() {
        NcclWatchdog w = instance;
        if (w != null) return w;
        synchronized (NcclWatchdog.class) {
            if (instance == null) instance = new NcclWatchdog();
            return instance;
        }
    }

    void watch(NcclProcessGroup group) {
        groups.add(group);
    }

    void forget(NcclProcessGroup group) {
        groups.remove(group);
    }

    private void watch() {
        while (true) {
            LockSupport.parkNanos(INTERVAL_NANOS);
            for (NcclProcessGroup g : groups) {
                try {
                    check(g);
                } catch (RuntimeException e) {
                    // a failed query of one communicator must not stop the watch over the others
                    g.expire("the NCCL watchdog could not query the communicator: " + e.getMessage());
                    groups.remove(g);
                }
            }
        }
    }

    private void check(NcclProcessGroup g) {
        NcclProcessGroup.Pending p = g.pending;
        if (p == null) return;
        String broken = g.clique().broken;
        if (broken != null) {
            // a rank of this JVM broke the clique: end this rank's queued kernels too
            g.expire(broken);
            groups.remove(g);
            return;
        }
        int state = g.asyncError();
        if (state != NcclLibrary.SUCCESS && state != NcclLibrary.IN_PROGRESS) {
            g.expire(p.collective() + " #" + p.call() + " on group '" + g.name() + "' (rank " + g.rank() + " of " + g.size()
                    + ", ranks " + java.util.Arrays.toString(g.globalRanks()) + "): NCCL reported "
                    + NcclException.message("the communicator", state, g.library().errorString(state), ""));
            groups.remove(g);
        } else if (System.nanoTime() - p.deadlineNanos() > 0) {
            g.expire(timedOut(p.collective(), p.call(), g.name(), g.rank(), g.size(), g.globalRanks(),
                    g.timeout().toMillis() / 1000.0));
            groups.remove(g);
        }
    }

    /** The reason every rank reports when a collective outlived its deadline. */
    static String timedOut(String collective, long call, String group, int rank, int size, int[] globalRanks, double seconds) {
        return String.format(Locale.ROOT, "%s #%d on group '%s' did not complete within %.1f s on rank %d of %d "
                + "(world ranks %s): a peer stalled, left or called another collective; the communicator was aborted",
                collective, call, group, seconds, rank, size, java.util.Arrays.toString(globalRanks));
    }
}
