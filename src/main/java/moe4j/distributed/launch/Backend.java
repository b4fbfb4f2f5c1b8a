package moe4j.distributed.launch;

import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import moe4j.distributed.Distributed;
import moe4j.distributed.RankFunction;
import moe4j.distributed.mpi.MpiRuntime;

/**
 * Where a job's ranks live: {@link #LOCAL} threads of this JVM ({@link Distributed#run}), or
 * {@link #MPI} processes started by {@code mpirun} / {@code srun}, one rank each
 * ({@link MpiRuntime}). The MPI library is loaded only when {@link #MPI} runs.
 *
 * <p>It sits above both kinds of process group, in its own package, so that {@code moe4j.distributed}
 * never names its MPI implementation.
 */
public enum Backend {
    LOCAL,
    MPI;

    /** {@link #MPI} when this process was started by an MPI launcher, else {@link #LOCAL}. */
    public static Backend detect() {
        return detect(System.getenv());
    }

    /** {@link #detect()} from the given environment. */
    public static Backend detect(Map<String, String> env) {
        return MpiRuntime.launchedByMpi(env) ? MPI : LOCAL;
    }

    /** {@code local}, {@code mpi}, or {@code auto} ({@link #detect()}); case does not matter. */
    public static Backend parse(String name) {
        return switch (name.trim().toLowerCase(Locale.ROOT)) {
            case "local" -> LOCAL;
            case "mpi" -> MPI;
            case "auto" -> detect();
            default -> throw new IllegalArgumentException("unknown backend '" + name + "', expected local, mpi or auto");
        };
    }

    /**
     * Runs {@code fn} on this backend's ranks. {@link #LOCAL}: {@code localRanks} threads, all results
     * in rank order. {@link #MPI}: this process is one rank of the job ({@code localRanks} is ignored,
     * the launcher decides the size); returns this rank's result alone, and a failure aborts the job.
     */
    public <T> List<T> run(int localRanks, Duration timeout, RankFunction<T> fn) {
        if (this == LOCAL) return Distributed.run(localRanks, timeout, fn);
        MpiRuntime.init(timeout);
        return java.util.Collections.singletonList(MpiRuntime.run(fn));
    }
}
