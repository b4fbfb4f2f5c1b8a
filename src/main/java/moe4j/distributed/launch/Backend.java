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

    /**
     * This process's rank as its MPI launcher numbered it (Open MPI, PMIx, PMI or srun), or -1 when no
     * launcher started it: known before MPI is initialised, e.g. to let one process report a mistake
     * in arguments that every process of the job shares.
     */
    public static int launcherRank() {
        for (String v : List.of("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")) {
            String r = System.getenv(v);
            if (r != null) {
                try {
                    return Integer.parseInt(r.trim());
                } catch (NumberFormatException e) {
                    // not a number: try the next launcher's variable
                }
            }
        }
        return -1;
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
