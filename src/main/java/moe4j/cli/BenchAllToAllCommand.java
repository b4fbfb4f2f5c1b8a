package moe4j.cli;

import com.google.gson.GsonBuilder;
import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import moe4j.bench.AllToAllBenchmark;
import moe4j.bench.MpiAllToAllBenchmark;
import moe4j.distributed.launch.Backend;
import moe4j.distributed.mpi.MpiRuntime;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code moe4j bench alltoall}: the in-JVM all-to-all's throughput against the copy ceiling, and small-exchange latency. */
@Command(name = "alltoall", mixinStandardHelpOptions = true,
        description = "Measure the all-to-all: throughput (in-JVM: next to the memory-copy ceiling) and the latency of small"
                + " exchanges. With --backend mpi, run it under mpirun: each process is one rank.")
public final class BenchAllToAllCommand implements Callable<Integer> {
    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Option(names = "--ranks", defaultValue = "4", description = "ranks (threads) for the throughput test; with --backend mpi the launcher decides (default ${DEFAULT-VALUE})")
    int ranks;

    @Option(names = "--mib", defaultValue = "64", description = "MiB each rank sends per all-to-all (default ${DEFAULT-VALUE})")
    long mib;

    @Option(names = "--iters", defaultValue = "20", description = "timed all-to-alls; the best is reported (default ${DEFAULT-VALUE})")
    int iters;

    @Option(names = "--latency-ranks", split = ",", defaultValue = "2,4,8",
            description = "rank counts for the small-exchange latency (default ${DEFAULT-VALUE})")
    List<Integer> latencyRanks;

    @Option(names = "--latency-iters", defaultValue = "2000", description = "calls per latency round (default ${DEFAULT-VALUE})")
    int latencyIters;

    @Option(names = "--host-warmup", defaultValue = "5000",
            description = "--backend nccl: exchanges of one 4 KiB row per peer made before the timed sizes, so that these"
                    + " run JIT-compiled host code; 0 times a cold JVM (default ${DEFAULT-VALUE})")
    int hostWarmup;

    @Option(names = "--json", description = "end with one line holding all results as a JSON object")
    boolean json;

    @Option(names = "--backend", defaultValue = "local",
            description = "local (ranks are threads of this JVM), mpi (run under mpirun/srun: one rank per process), nccl"
                    + " (--ranks GPUs of this machine, one rank thread each) or auto (default ${DEFAULT-VALUE})")
    String backend;

    @Override
    public Integer call() {
        Backend chosen;
        try {
            chosen = Backend.parse(backend);
        } catch (IllegalArgumentException e) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--backend: " + e.getMessage(), e);
        }
        if (chosen == Backend.MPI) return callMpi();
        if (chosen == Backend.NCCL) return callNccl();
        // on a shared machine the numbers mean little without the load they were taken under
        double load = ManagementFactory.getOperatingSystemMXBean().getSystemLoadAverage();
        int cpus = Runtime.getRuntime().availableProcessors();
        System.out.printf("machine      %d cpus, load average %.2f%n", cpus, load);
        AllToAllBenchmark.Throughput t = AllToAllBenchmark.throughput(ranks, mib << 20, iters);
        System.out.printf("all-to-all   %d ranks x %d MiB: %.3f ms, %.2f GB/s per rank, %.2f GB/s summed%n", t.ranks(),
                t.bytesPerRank() >> 20, t.allToAllSeconds() * 1e3, t.allToAllBytesPerSecondPerRank() / 1e9,
                t.allToAllBytesPerSecondSummed() / 1e9);
        System.out.printf("copy ceiling %d threads x %d MiB: %.3f ms, %.2f GB/s summed -> all-to-all reaches %.0f%% of it%n",
                t.ranks(), t.bytesPerRank() >> 20, t.copySeconds() * 1e3, t.copyBytesPerSecondSummed() / 1e9,
                100 * t.fractionOfCeiling());
        List<AllToAllBenchmark.Latency> latencies = new ArrayList<>();
        for (int p : latencyRanks) {
            AllToAllBenchmark.Latency l = AllToAllBenchmark.latency(p, latencyIters);
            latencies.add(l);
            System.out.printf("latency      %d ranks: count exchange (8 ints per peer) %.2f us, one row per peer %.2f us%n",
                    p, l.countExchangeMicros(), l.smallRowAllToAllMicros());
        }
        if (json) {
            Map<String, Object> all = new LinkedHashMap<>();
            all.put("throughput", t);
            all.put("latency", latencies);
            all.put("cpus", cpus);
            all.put("loadAverage", load);
            System.out.println(new GsonBuilder().disableHtmlEscaping().create().toJson(all));
        }
        return 0;
    }

    /** The NCCL backend: --ranks GPUs of this machine; sizes as the peer's nccl_a2a.py (16, 64, 256 MiB per rank). */
    private int callNccl() {
        if (hostWarmup < 0) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--host-warmup " + hostWarmup + ": expected 0 or more exchanges");
        }
        List<moe4j.bench.NcclAllToAllBenchmark.Result> results = moe4j.bench.NcclAllToAllBenchmark.measure(ranks, List.of(16, 64, 256),
                hostWarmup);
        System.out.printf("nccl         %s, %d GPUs of this machine, one rank thread each, %d host warm-up exchanges%n",
                moe4j.distributed.nccl.NcclProcessGroup.ncclVersion(), ranks, hostWarmup);
        for (moe4j.bench.NcclAllToAllBenchmark.Result r : results) {
            // host_us_per_call: rank 0's time to queue one timed exchange; near ms*1000 the host set the pace
            System.out.printf("MOE4J_NCCL_A2A ranks=%d MiB_per_rank=%d ms=%.3f GBps_per_rank_sent=%.1f host_us_per_call=%.1f%n",
                    r.ranks(), r.mibPerRank(), r.millis(), r.gibPerSecondSentPerRank(), r.hostMicrosPerCall());
        }
        if (json) {
            Map<String, Object> all = new LinkedHashMap<>();
            all.put("backend", "nccl");
            all.put("throughput", results);
            System.out.println(new GsonBuilder().disableHtmlEscaping().create().toJson(all));
        }
        return 0;
    }

    /** The MPI backend: the world of this mpirun job; rank 0 prints. */
    private int callMpi() {
        return MpiRuntime.run(world -> {
            List<MpiAllToAllBenchmark.Result> results = MpiAllToAllBenchmark.measure(world, iters, mib);
            AllToAllBenchmark.Latency l = MpiAllToAllBenchmark.latency(world, latencyIters);
            if (world.rank() == 0) {
                MpiAllToAllBenchmark.Result t = results.get(0);
                System.out.printf("all-to-all   mpi, %d ranks x %d MiB: best %.3f ms, median %.3f ms, %.2f GB/s per rank%n",
                        t.ranks(), t.mib(), t.bestMillis(), t.medianMillis(), t.bestGigabytesPerSecondPerRank());
                System.out.printf("latency      mpi, %d ranks: count exchange (8 ints per peer) %.2f us, one row per peer %.2f us%n",
                        l.ranks(), l.countExchangeMicros(), l.smallRowAllToAllMicros());
                if (json) {
                    Map<String, Object> all = new LinkedHashMap<>();
                    all.put("backend", "mpi");
                    all.put("throughput", t);
                    all.put("latency", l);
                    all.put("cpus", Runtime.getRuntime().availableProcessors());
                    System.out.println(new GsonBuilder().disableHtmlEscaping().create().toJson(all));
                }
                System.out.flush();
            }
            return 0;
        });
    }

    public static void main(String[] args) {
        System.exit(new picocli.CommandLine(new BenchAllToAllCommand()).execute(args));
    }
}
