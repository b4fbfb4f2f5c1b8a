package moe4j.distributed;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ConcurrentLinkedQueue;

/**
 * Launches an in-JVM world: {@code worldSize} ranks, each a thread named {@code moe4j-rank-<r>},
 * running one function with its own world {@link ProcessGroup}.
 *
 * <p>When a rank's function throws, every group is broken at once so the other ranks fail fast
 * instead of waiting for the collective deadline; when it returns, its groups learn that it will
 * never call another collective. {@link #run} returns only after every rank thread has ended.
 */
public final class Distributed {
    /** The default deadline of each collective. */
    public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(300);

    /**
     * The collective deadline every command uses: {@code -Dmoe4j.collective.timeout} or the environment
     * variable {@code MOE4J_COLLECTIVE_TIMEOUT} (seconds, or an ISO-8601 duration such as {@code PT30S}),
     * else {@link #DEFAULT_TIMEOUT}. The same on every backend, so that a stalled rank ends a job at the
     * same moment whether its ranks are threads or processes.
     */
    public static Duration configuredTimeout() {
        String s = System.getProperty("moe4j.collective.timeout");
        if (s == null || s.isBlank()) s = System.getenv("MOE4J_COLLECTIVE_TIMEOUT");
        if (s == null || s.isBlank()) return DEFAULT_TIMEOUT;
        Duration d;
        try {
            d = s.trim().toUpperCase(java.util.Locale.ROOT).startsWith("P") ? Duration.parse(s.trim())
                    : Duration.ofMillis(Math.round(Double.parseDouble(s.trim()) * 1000));
        } catch (RuntimeException e) {
            throw new IllegalArgumentException("collective timeout '" + s + "' (MOE4J_COLLECTIVE_TIMEOUT or -Dmoe4j.collective.timeout)"
                    + " is neither seconds nor an ISO-8601 duration such as PT30S", e);
        }
        if (d.isNegative() || d.isZero()) {
            throw new IllegalArgumentException("collective timeout (MOE4J_COLLECTIVE_TIMEOUT or -Dmoe4j.collective.timeout) must be"
                    + " positive, got " + s);
        }
        return d;
    }

    /** After a failure, how long ranks that are not inside a collective get to end before being interrupted. */
    private static final long GRACE_MILLIS = 2_000;

    private Distributed() {}

    /**
     * The world group of a single rank, used on the caller's thread: for code written against a
     * {@link ProcessGroup} that runs without parallelism. Its collectives copy or leave data as is.
     */
    public static ProcessGroup singleRank() {
        return new LocalWorld(1, DEFAULT_TIMEOUT).worldGroups().get(0);
    }

    /** {@link #run(int, Duration, RankFunction)} with the default 300 s collective deadline. */
    public static <T> List<T> run(int worldSize, RankFunction<T> fn) {
        return run(worldSize, DEFAULT_TIMEOUT, fn);
    }

    /**
     * Runs {@code fn} on {@code worldSize} rank threads and returns their results in rank order. If any
     * rank fails, throws the first failure (in time), with the other ranks' failures suppressed in it;
     * a checked exception is wrapped in a {@link RuntimeException}.
     */
    public static <T> List<T> run(int worldSize, Duration collectiveTimeout, RankFunction<T> fn) {
        LocalWorld world = new LocalWorld(worldSize, collectiveTimeout);
        List<ProcessGroup> groups = world.worldGroups();
        Object[] results = new Object[worldSize];
        ConcurrentLinkedQueue<Throwable> failures = new ConcurrentLinkedQueue<>();
        Thread[] threads = new Thread[worldSize];
        for (int r = 0; r < worldSize; r++) {
            int rank = r;
            threads[r] = new Thread(null, () -> {
                try {
                    results[rank] = fn.run(groups.get(rank));
                } catch (Throwable t) {
                    failures.add(t);
                    world.abortAll("rank " + rank + " failed: " + t);
                } finally {
                    world.rankEnded(rank);
                }
            }, "moe4j-rank-" + r, 0);
            threads[r].start();
        }
        joinAll(threads, failures);
        if (!failures.isEmpty()) throw firstFailure(failures);
        List<T> out = new ArrayList<>(worldSize);
        for (Object o : results) {
            @SuppressWarnings("unchecked")
            T t = (T) o;
            out.add(t);
        }
        return out;
    }

    /**
     * Waits for every rank. While all goes well, as long as they take; once one failed, the others
     * get a grace period (they are normally stopped by the broken groups at once), then are interrupted.
     */
    private static void joinAll(Thread[] threads, ConcurrentLinkedQueue<Throwable> failures) {
        long interruptAt = Long.MAX_VALUE;
        boolean interrupted = false;
        boolean callerInterrupted = false;
        while (Arrays.stream(threads).anyMatch(Thread::isAlive)) {
            if (!failures.isEmpty() && interruptAt == Long.MAX_VALUE) interruptAt = System.nanoTime() + GRACE_MILLIS * 1_000_000;
            if (!interrupted && System.nanoTime() - interruptAt >= 0) {
                for (Thread t : threads) t.interrupt();
                interrupted = true;
            }
            for (Thread t : threads) {
                try {
                    t.join(20);
                } catch (InterruptedException e) {
                    // the caller wants out: stop the ranks, then keep waiting for them to end
                    callerInterrupted = true;
                    failures.add(e);
                    for (Thread th : threads) th.interrupt();
                    interrupted = true;
                }
            }
        }
        if (callerInterrupted) Thread.currentThread().interrupt();
    }

    private static RuntimeException firstFailure(ConcurrentLinkedQueue<Throwable> failures) {
        Throwable first = failures.peek();
        RuntimeException thrown;
        if (first instanceof RuntimeException re) {
            thrown = re;
        } else if (first instanceof Error err) {
            for (Throwable t : failures) if (t != err) err.addSuppressed(t);
            throw err;
        } else {
            thrown = new RuntimeException("a rank failed: " + first, first);
        }
        for (Throwable t : failures) if (t != first) thrown.addSuppressed(t);
        return thrown;
    }
}
