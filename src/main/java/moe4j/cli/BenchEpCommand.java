package moe4j.cli;

import com.google.gson.GsonBuilder;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.Callable;
import moe4j.bench.ExpertParallelBenchmark;
import moe4j.nn.MoEConfig;
import moe4j.nn.WireType;
import moe4j.tensor.DType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code moe4j bench ep}: one expert-parallel MoE layer on P in-JVM ranks, with a per-phase breakdown; with
 * {@code --device cuda}, rank r on GPU r over NCCL, printed as one {@code MOE4J_EP_GPU key=value ...} line.
 */
@Command(name = "ep", mixinStandardHelpOptions = true,
        description = "Benchmark one expert-parallel MoE layer (forward+backward) on P in-JVM ranks (threads on the CPU, "
                + "or one GPU each).")
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
    @Option(names = "--warmup", description = "warm-up steps (default 1 on the cpu, 3 on cuda)") Integer warmup;
    @Option(names = "--iters", description = "measured steps (default 3 on the cpu, 10 on cuda)") Integer iters;
    @Option(names = "--json", description = "end with one line holding the results as a JSON object") boolean json;
    @Option(names = "--device", description = "cpu (ranks are threads sharing the cores) or cuda (rank r on GPU r, rows moved "
            + "by NCCL, the layer's own router on the GPU) (default ${DEFAULT-VALUE})") String device = "cpu";
    @Option(names = "--dtype", description = "the matrix products' operands with --device cuda: bf16 (fp32 accumulation) or f32 "
            + "(TF32 off) (default bf16 on cuda; the cpu computes in f32)") String dtype;
    @Option(names = "--wire", description = "the type rows travel in between ranks: auto (bf16 when the products are bf16), f32 "
            + "or bf16 (default ${DEFAULT-VALUE})") String wire = "auto";
    @Option(names = "--dedup", description = "send each token once per rank that owns one of its experts (expanded there, and "
            + "its experts' weighted outputs summed there before one row goes back) instead of once per chosen expert")
    boolean dedup;
    @Option(names = "--profiled", description = "with --device cuda: steps run after the timed ones, waiting for the GPU at "
            + "every phase, for the phases' device time and the all-to-all bandwidth (default ${DEFAULT-VALUE})") int profiled = 2;

    @Override
    public Integer call() {
        if (ranks < 1) throw usage("--ranks must be >= 1, got " + ranks);
        if (experts % ranks != 0) throw usage("num_experts (" + experts + ") must be divisible by ep (" + ranks + ")");
        if (warmup != null && warmup < 0) throw usage("--warmup must be >= 0, got " + warmup);
        if (iters != null && iters < 1) throw usage("--iters must be >= 1, got " + iters);
        if (profiled < 0) throw usage("--profiled must be >= 0, got " + profiled);
        MoEConfig config;
        try {
            config = MoEConfig.builder(dim, hidden, experts, topK).packed(!list).wire(WireType.parse(wire, "--wire")).dedup(dedup)
                    .build();
        } catch (IllegalArgumentException e) {
            throw usage(e.getMessage());
        }
        if (device.equals("cuda")) return callOnGpus(config);
        if (!device.equals("cpu")) throw usage("--device must be cpu or cuda, got '" + device + "'");
        if (dtype != null && !dtype.equals("f32")) throw usage("--dtype " + dtype + " needs --device cuda: the cpu computes in f32");
        ExpertParallelBenchmark.Result r = ExpertParallelBenchmark.run(config, ranks, tokens, warmup == null ? 1 : warmup,
                iters == null ? 3 : iters);
        java.io.PrintWriter out = spec.commandLine().getOut();
        out.print(ExpertParallelBenchmark.table(r));
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
            putDispatch(o, r.dispatch());
            out.println(new GsonBuilder().serializeSpecialFloatingPointValues().create().toJson(o));
        }
        out.flush();
        return 0;
    }

    private int callOnGpus(MoEConfig config) {
        DType products = switch (dtype == null ? "bf16" : dtype) {
            case "bf16" -> DType.BF16;
            case "f32" -> DType.F32;
            default -> throw usage("--dtype must be bf16 or f32, got '" + dtype + "'");
        };
        ExpertParallelBenchmark.GpuResult r = ExpertParallelBenchmark.runOnGpus(config, ranks, tokens, products,
                warmup == null ? 3 : warmup, iters == null ? 10 : iters, profiled);
        java.io.PrintWriter out = spec.commandLine().getOut();
        out.println(ExpertParallelBenchmark.gpuLine(r));
        if (json) {
            Map<String, Object> o = new LinkedHashMap<>();
            o.put("benchmark", "ep");
            o.put("device", "cuda");
            o.put("ranks", r.ranks());
            o.put("dim", dim);
            o.put("hidden", hidden);
            o.put("experts", experts);
            o.put("topK", topK);
            o.put("tokensPerRank", tokens);
            o.put("dtype", r.products().name().toLowerCase(java.util.Locale.ROOT));
            o.put("wire", r.wire().name().toLowerCase(java.util.Locale.ROOT));
            o.put("medianSecondsPerStep", r.medianSecondsPerStep());
            o.put("tokensPerSecond", r.tokensPerSecond());
            o.put("tflopsPerGpu", r.tflopsPerGpu());
            o.put("rowBytesSentPerRank", r.rowBytesSentPerRank());
            o.put("allToAllSecondsPerStep", r.allToAllSecondsPerStep());
            o.put("allToAllGiBPerSecond", r.allToAllGiBPerSecond());
            o.put("phaseSeconds", r.phaseSeconds());
            putDispatch(o, r.dispatch());
            o.put("buildSeconds", r.buildSeconds());
            out.println(new GsonBuilder().serializeSpecialFloatingPointValues().create().toJson(o));
        }
        out.flush();
        return 0;
    }

    /** One dispatch's traffic to peers per rank: rows counted both ways, bytes measured with the dedup setting of the run. */
    private void putDispatch(Map<String, Object> o, ExpertParallelBenchmark.DispatchTraffic d) {
        o.put("dedup", dedup);
        if (d == null) return;
        o.put("dispatchRowsToPeers", d.rowsPerEntry());
        o.put("dispatchRowsToPeersDeduplicated", d.rowsDeduplicated());
        o.put("dispatchBytesToPeers", d.rowBytes());
        o.put("dispatchIdBytesToPeers", d.idBytes());
    }

    private picocli.CommandLine.ParameterException usage(String message) {
        return new picocli.CommandLine.ParameterException(spec.commandLine(), message);
    }
}
