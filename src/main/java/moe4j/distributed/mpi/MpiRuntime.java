package moe4j.distributed.mpi;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.IntStream;
import moe4j.distributed.AgreedFailure;
import moe4j.distributed.Distributed;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.RankFunction;

/**
 * The MPI side of a process: initialises MPI once, hands out the world group, and ends the process
 * in one of two ways: {@code MPI_Finalize} when its work succeeded, {@code MPI_Abort} when anything
 * failed, so that no rank is left waiting for a peer that will never come.
 *
 * <pre>{@code
 * // each process started by mpirun / srun:
 * int result = MpiRuntime.run(world -> train(world));
 * }</pre>
 *
 * <p>The collective deadline is {@link Distributed#configuredTimeout()}, as on the local backend.
 */
public final class MpiRuntime {
    /** Exit code when a rank's work threw. */
    public static final int EXIT_FAILURE = 1;
    /** Exit code when a rank's input was wrong (an {@link IllegalArgumentException}): the command line's usage code. */
    public static final int EXIT_USAGE = 2;
    /** Exit code when a collective missed its deadline. */
    public static final int EXIT_TIMEOUT = 3;

    private static final Duration FINALIZE_TIMEOUT = Duration.ofSeconds(60);

    private static MpiProcessGroup world;
    private static volatile int worldRank = -1;

    private MpiRuntime() {}

    /** Whether this process looks started by an MPI launcher (Open MPI's mpirun, or PMI / SLURM's srun). */
    public static boolean launchedByMpi() {
        return launchedByMpi(System.getenv());
    }

    /** Environment variables that MPI launchers set in every process they start. */
    private static final List<String> LAUNCHER_VARIABLES = List.of("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK");

    /** {@link #launchedByMpi()} judged from the given environment. */
    public static boolean launchedByMpi(Map<String, String> env) {
        for (String v : LAUNCHER_VARIABLES) if (env.containsKey(v)) return true;
        // srun sets both for every task; SLURM_NTASKS alone is also set inside a batch script's shell
        return env.containsKey("SLURM_PROCID") && env.containsKey("SLURM_STEP_ID");
    }

    /** {@link #init(Duration)} with the configured deadline. */
    public static ProcessGroup init() {
        return init(Distributed.configuredTimeout());
    }

    /**
     * Initialises MPI (once per process; later calls return the same group) and returns the world
     * group, named {@code world}, with collective deadline {@code timeout}.
     */
    public static synchronized ProcessGroup init(Duration timeout) {
        if (world != null) return world;
        MpiLibrary mpi = MpiLibrary.get();
        MpiLibrary.LOCK.lock();
        try {
            if (mpi.initialized()) throw new IllegalStateException("mpi: MPI was initialised outside moe4j");
            int provided = mpi.initThread(MpiLibrary.MPI_THREAD_SERIALIZED);
            if (provided < MpiLibrary.MPI_THREAD_SERIALIZED) {
                abortJob("the MPI library provides thread level " + provided + " but moe4j needs MPI_THREAD_SERIALIZED ("
                        + MpiLibrary.MPI_THREAD_SERIALIZED + ")", EXIT_FAILURE);
            }
        } finally {
            MpiLibrary.LOCK.unlock();
        }
        int size;
        MpiLibrary.LOCK.lock();
        try {
            size = mpi.commSize(mpi.commWorld);
        } finally {
            MpiLibrary.LOCK.unlock();
        }
        world = new MpiProcessGroup(mpi, mpi.commWorld, IntStream.range(0, size).toArray(), "world", timeout);
        worldRank = world.rank();
        return world;
    }

    /**
     * Runs one rank's work: initialises MPI, calls {@code fn} with the world group, and finalizes MPI
     * when it returns. If {@code fn} throws, prints the failure and aborts the job (this method does
     * not return then).
     */
    public static <T> T run(RankFunction<T> fn) {
        ProcessGroup g = init();
        T result;
        try {
            result = fn.run(g);
        } catch (AgreedFailure agreed) {
            finish(); // every rank failed here together: none waits for another, so the job ends cleanly
            throw agreed;
        } catch (Throwable t) {
            String what = t.toString();
            if (debug()) {
                StringWriter trace = new StringWriter();
                t.printStackTrace(new PrintWriter(trace));
                what = trace.toString();
            }
            abortJob("world rank " + g.rank() + " of " + g.size() + " failed: " + what,
                    t instanceof IllegalArgumentException ? EXIT_USAGE : EXIT_FAILURE);
            throw new AssertionError("unreachable");
        }
        finish();
        return result;
    }

    /**
     * Ends MPI after a successful run: a barrier bounded by {@link #FINALIZE_TIMEOUT} (so a missing
     * peer ends the job instead of hanging {@code MPI_Finalize}), then {@code MPI_Finalize}.
     */
    public static synchronized void finish() {
        if (world == null) return;
        MpiLibrary mpi = MpiLibrary.get();
        Watchdog watchdog = Watchdog.get(FINALIZE_TIMEOUT.toNanos());
        String what = "world rank " + worldRank + ": the final barrier before MPI_Finalize did not complete within "
                + FINALIZE_TIMEOUT + " (a peer failed or is still working)";
        MpiLibrary.LOCK.lock();
        watchdog.arm(System.nanoTime() + FINALIZE_TIMEOUT.toNanos(), what);
        try {
            mpi.barrier(mpi.commWorld);
            mpi.finalizeMpi();
        } finally {
            watchdog.disarm();
            MpiLibrary.LOCK.unlock();
        }
        world = null;
    }

    /** Whether failures print their stack trace: {@code --debug} (the property moe4j.debug) or MOE4J_DEBUG=1. */
    public static boolean debug() {
        return Boolean.getBoolean("moe4j.debug") || "1".equals(System.getenv("MOE4J_DEBUG"));
    }

    /** This process's rank in the world group, or -1 before {@link #init}. */
    public static int worldRank() {
        return worldRank;
    }

    /**
     * Prints {@code message} to stderr and ends the whole job with {@code MPI_Abort}; never returns.
     * If MPI cannot be reached (another thread holds it for too long, or it is not initialised) the
     * process halts with {@code code}, which the MPI launcher also turns into the end of the job.
     */
    public static void abortJob(String message, int code) {
        System.err.println("moe4j mpi: ABORTING JOB (world rank " + worldRank + "): " + message);
        System.err.flush();
        System.out.flush();
        try {
            if (MpiLibrary.LOCK.tryLock(5, TimeUnit.SECONDS)) {
                MpiLibrary mpi = MpiLibrary.get();
                mpi.abort(mpi.commWorld, code);
            }
        } catch (Throwable t) {
            System.err.println("moe4j mpi: MPI_Abort failed (" + t + "); halting");
        }
        Runtime.getRuntime().halt(code);
    }
}
