package moe4j.cli;

import com.google.gson.GsonBuilder;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.Callable;
import moe4j.bench.ExpertParallelBenchmark;
import moe4j.nn.MoEConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code moe4j bench ep}: one expert-parallel MoE layer on P in-JVM ranks, with a per-phase breakdown. */
@Command(name = "ep", mixinStandardHelpOptions = true,
        description = "Benchmark one expert-parallel MoE layer (forward+backward) on P in-JVM ranks.")
public final class BenchEpCommand implements Callable<Integer> {
    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Option(names = "--ranks", description = "EP ranks P (default ${DEFAULT-VALUE})") int ranks = 4;
    @Option(names = "--dim", description = "model dim D (default ${DEFAULT-VALUE})") int dim = 1024;
    @Option(names = "--hidden", description = "expert hidden dim H (default ${DEFAULT-VALUE})") int hidden = 2816;
    @Option(names = "--experts", description = "experts E (default ${DEFAULT-VALUE})") int experts = 8;
    @Option(names = "--top-k", description = "experts per token K (default ${DEFAULT-VALUE})") int topK = 2;
    @Option(names = "--tokens", description = "tokens per rank (default ${DEFAULT-VALUE})") int tokens = 2048;
    @Option(names = "--list", description = "list layout instead of packed") boolean list;
    @Option(names = "--warmup", description = "warm-up steps (default ${DEFAULT-VALUE})") int warmup = 1;
    @Option(names = "--iters", description = "measured steps (default ${DEFAULT-VALUE})") int iters = 3;
    @Option(names = "--json", description = "end with one line holding the results as a JSON object") boolean json;
    @Option(names = "--device", description = "cpu (ranks are threads sharing the cores) or cuda (rank r on GPU r, rows moved "
            + "by NCCL; routing fixed by the CPU router) (default ${DEFAULT-VALUE})") String device = "cpu";

    @Override
    public Integer call() {
        MoEConfig config = MoEConfig.builder(dim, hidden, experts, topK).packed(!list).build();
        if (experts % ranks != 0) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(),
                    "num_experts (" + experts + ") must be divisible by ep (" + ranks + ")");
        }
        if (device.equals("cuda")) return callOnGpus(config);
        if (!device.equals("cpu")) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--device must be cpu or cuda, got '" + device + "'");
        }
        ExpertParallelBenchmark.Result r = ExpertParallelBenchmark.run(config, ranks, tokens, warmup, iters);
        System.out.print(ExpertParallelBenchmark.table(r));
        if (json) {
            Map<String, Object> o = new LinkedHashMap<>();
            o.put("benchmark", "ep");
            o.put("ranks", ranks);
            o.put("dim", dim);
            o.put("hidden", hidden);
            o.put("experts", experts);
            o.put("topK", topK);
            o.put("tokensPerRank", tokens);
            o.put("secondsPerStep", r.secondsPerStep());
            o.put("tokensPerSecond", r.tokensPerSecond());
            o.put("phaseSeconds", r.phaseSeconds());
            o.put("bytesSentPerRank", r.bytesSentPerRank());
            o.put("commAndPermuteShare", r.commAndPermuteShare());
            System.out.println(new GsonBuilder().serializeSpecialFloatingPointValues().create().toJson(o));
        }
        return 0;
    }

    private int callOnGpus(MoEConfig config) {
        ExpertParallelBenchmark.GpuResult r = ExpertParallelBenchmark.runOnGpus(config, ranks, tokens, warmup, iters);
        System.out.printf(java.util.Locale.ROOT, "MOE4J_EP_GPU ranks=%d D=%d H=%d E=%d K=%d tokens_per_rank=%d dtype=f32 median_step_ms=%.2f "
                        + "total_tokens_per_s=%.0f TFLOPs_per_gpu=%.1f sent_MiB_per_rank=%.1f dispatch_rows_to_peers=%d deduplicated=%d%n",
                r.ranks(), dim, hidden, experts, topK, tokens, r.medianSecondsPerStep() * 1e3, r.tokensPerSecond(), r.tflopsPerGpu(),
                r.bytesSentPerRank() / 1048576.0, r.dispatchRowsToPeers()[0], r.dispatchRowsToPeers()[1]);
        if (json) System.out.println(new GsonBuilder().serializeSpecialFloatingPointValues().create().toJson(r));
        return 0;
    }
}
