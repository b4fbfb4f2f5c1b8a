package moe4j.distributed.launch;

import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import moe4j.distributed.Distributed;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.RankFunction;
import moe4j.distributed.mpi.MpiRuntime;
import moe4j.distributed.nccl.NcclProcessGroup;
import moe4j.tensor.Device;

/**
 * Where a job's ranks live and how their tensors travel: {@link #LOCAL} threads of this JVM
 * ({@link Distributed#run}), {@link #MPI} processes started by {@code mpirun} / {@code srun}, one rank each
 * ({@link MpiRuntime}), or {@link #NCCL}: one rank per GPU, their GPU tensors moved by NCCL, the ranks
 * being threads of this JVM or, under an MPI launcher, its processes. The MPI and NCCL libraries are
 * loaded only when their backend runs.
 *
 * <p>It sits above every kind of process group, in its own package, so that {@code moe4j.distributed}
 * never names its MPI or NCCL implementation.
 */
public enum Backend {
    LOCAL,
    MPI,
    NCCL;

    /** Under an MPI launcher, the variables naming a process's rank among those of its node. */
    private static final List<String> LOCAL_RANK_VARIABLES = List.of("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
            "SLURM_LOCALID");

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

    /** {@code local}, {@code mpi}, {@code nccl}, or {@code auto} ({@link #detect()}); case does not matter. */
    public static Backend parse(String name) {
        return parse(name, false);
    }

    /**
     * As {@link #parse(String)}, where {@code auto} picks {@link #NCCL} when the ranks compute on GPUs
     * ({@code gpus}), else {@link #detect()}.
     */
    public static Backend parse(String name, boolean gpus) {
        return switch (name.trim().toLowerCase(Locale.ROOT)) {
            case "local" -> LOCAL;
            case "mpi" -> MPI;
            case "nccl" -> NCCL;
            case "auto" -> gpus ? NCCL : detect();
            default -> throw new IllegalArgumentException("unknown backend '" + name + "', expected local, mpi, nccl or auto");
        };
    }

    /** Whether this process is one rank of a multi-process job (MPI, or NCCL under an MPI launcher). */
    public boolean oneRankPerProcess() {
        return this == MPI || this == NCCL && MpiRuntime.launchedByMpi();
    }

    /**
     * Runs {@code fn} on this backend's ranks. {@link #LOCAL}: {@code localRanks} threads, all results
     * in rank order. {@link #MPI}: this process is one rank of the job ({@code localRanks} is ignored,
     * the launcher decides the size); returns this rank's result alone, and a failure aborts the job.
     * {@link #NCCL}: as {@link #LOCAL} (rank r on GPU r) or, under an MPI launcher, as {@link #MPI} (the
     * process on the GPU of its node-local rank), each rank's group an {@link NcclProcessGroup} over
     * that host group.
     */
    public <T> List<T> run(int localRanks, Duration timeout, RankFunction<T> fn) {
        return switch (this) {
            case LOCAL -> Distributed.run(localRanks, timeout, fn);
            case MPI -> {
                MpiRuntime.init(timeout);
                yield java.util.Collections.singletonList(MpiRuntime.run(fn));
            }
            case NCCL -> {
                if (!MpiRuntime.launchedByMpi()) {
                    yield Distributed.run(localRanks, timeout, host -> onGpu(host, Device.cuda(host.rank()), fn));
                }
                MpiRuntime.init(timeout);
                int gpu = localRank(System.getenv());
                yield java.util.Collections.singletonList(MpiRuntime.run(host -> onGpu(host, Device.cuda(gpu < 0 ? host.rank() : gpu), fn)));
            }
        };
    }

    private static <T> T onGpu(ProcessGroup host, Device gpu, RankFunction<T> fn) throws Exception {
        try (NcclProcessGroup group = NcclProcessGroup.create(host, gpu)) {
            try {
                return fn.run(group);
            } catch (Throwable t) {
                // the peers may be waiting on this rank inside a collective on the GPU: end theirs now
                group.abort("rank " + host.rank() + " failed: " + t);
                throw t;
            }
        }
    }

    /** This process's rank among its node's processes, from the launcher's variables; -1 when none is set. */
    static int localRank(Map<String, String> env) {
        for (String v : LOCAL_RANK_VARIABLES) {
            String s = env.get(v);
            if (s != null && !s.isBlank()) {
                try {
                    return Integer.parseInt(s.trim());
                } catch (NumberFormatException e) {
                    throw new IllegalStateException(v + "='" + s + "' is not a process index");
                }
            }
        }
        return -1;
    }
}
