package moe4j.autograd;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Where a step's time goes, by named phase, forward and backward alike. Code marks a phase with
 * {@code try (var p = Profiler.phase("permute")) { ... }}; ops recorded inside it remember the phase, and
 * the autograd engine charges their backward rules to it (so do not wrap {@code backward} itself in a
 * phase: its rules already report their own). Off by default, and then nearly free: one
 * thread-local read per phase and per recorded op.
 */
public final class Profiler {
    private static final ThreadLocal<Profiler> ACTIVE = new ThreadLocal<>();

    private final Map<String, long[]> nanos = new LinkedHashMap<>();
    private final Runnable waitForDevice;
    private String current;

    private Profiler(Runnable waitForDevice) {
        this.waitForDevice = waitForDevice;
    }

    /** Starts collecting on this thread (replacing an earlier profiler) and returns the collector. */
    public static Profiler start() {
        return start(() -> {});
    }

    /**
     * {@link #start()} for a device that computes asynchronously (a GPU stream): {@code waitForDevice}
     * returns once the work this thread queued is done, and is run before every clock reading, so each
     * phase is charged with the device time of its own work rather than the time it took to queue it.
     */
    public static Profiler start(Runnable waitForDevice) {
        Profiler p = new Profiler(waitForDevice);
        ACTIVE.set(p);
        return p;
    }

    /** Now, in nanoseconds, after the active profiler's device has caught up (plain nanoTime without one). */
    static long clock() {
        Profiler p = ACTIVE.get();
        if (p != null) p.waitForDevice.run();
        return System.nanoTime();
    }

    /** Stops collecting on this thread. */
    public static void stop() {
        ACTIVE.remove();
    }

    /** Marks a phase until closed; nested phases charge their time to the innermost one only. */
    public static Phase phase(String name) {
        Profiler p = ACTIVE.get();
        return p == null ? Phase.NONE : p.enter(name);
    }

    /** The phase open on this thread, or null. */
    static String currentPhase() {
        Profiler p = ACTIVE.get();
        return p == null ? null : p.current;
    }

    /** Charges {@code elapsed} nanoseconds to a phase of this thread's profiler (used for backward rules). */
    static void charge(String phase, long elapsed) {
        Profiler p = ACTIVE.get();
        if (p != null && phase != null) p.nanos.computeIfAbsent(phase, k -> new long[1])[0] += elapsed;
    }

    private Phase enter(String name) {
        String outer = current;
        long start = clock();
        current = name;
        return new Phase(() -> {
            long elapsed = clock() - start;
            charge(name, elapsed);
            current = outer;
            // the outer phase must not count this inner time again: it is subtracted from it
            if (outer != null) charge(outer, -elapsed);
        });
    }

    /** Seconds per phase, in first-seen order. */
    public Map<String, Double> seconds() {
        Map<String, Double> out = new LinkedHashMap<>();
        nanos.forEach((k, v) -> out.put(k, v[0] / 1e9));
        return out;
    }

    public void reset() {
        nanos.clear();
    }

    /** An open phase; closing it stops the clock. */
    public static final class Phase implements AutoCloseable {
        static final Phase NONE = new Phase(null);
        private final Runnable onClose;

        private Phase(Runnable onClose) {
            this.onClose = onClose;
        }

        @Override
        public void close() {
            if (onClose != null) onClose.run();
        }
    }
}
