package moe4j.cli;

import com.google.gson.GsonBuilder;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.Callable;
import moe4j.bench.MoELayerBenchmark;
import moe4j.nn.MoEConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code moe4j bench moe-layer}: forward+backward tokens/s of one MoE layer with a time breakdown. */
@Command(name = "moe-layer", mixinStandardHelpOptions = true,
        description = "Benchmark one MoE layer (forward+backward) on one rank, with a per-phase breakdown.")
public final class BenchMoeLayerCommand implements Callable<Integer> {
    @Option(names = "--dim", description = "model dim D (default ${DEFAULT-VALUE})") int dim = 1024;
    @Option(names = "--hidden", description = "expert hidden dim H (default ${DEFAULT-VALUE})") int hidden = 2816;
    @Option(names = "--experts", description = "experts E (default ${DEFAULT-VALUE})") int experts = 8;
    @Option(names = "--top-k", description = "experts per token K (default ${DEFAULT-VALUE})") int topK = 2;
    @Option(names = "--tokens", description = "tokens T (default ${DEFAULT-VALUE})") int tokens = 4096;
    @Option(names = "--activation", description = "silu, gelu or relu (default ${DEFAULT-VALUE})") String activation = "silu";
    @Option(names = "--list", description = "list layout instead of packed") boolean list;
    @Option(names = "--warmup", description = "warm-up steps (default ${DEFAULT-VALUE})") int warmup = 2;
    @Option(names = "--iters", description = "measured steps (default ${DEFAULT-VALUE})") int iters = 3;
    @Option(names = "--json", description = "end with one line holding the results as a JSON object") boolean json;
    @Option(names = "--device", description = "cpu or cuda[:N] (default ${DEFAULT-VALUE})") String device = "cpu";
    @Option(names = "--dtype", description = "cuda only: bf16 (fp32 accumulation) or f32 (TF32 off) (default ${DEFAULT-VALUE})")
    String dtype = "bf16";
    @Option(names = "--router", description = "softmax_topk or sigmoid_topk (default ${DEFAULT-VALUE})") String router = "softmax_topk";
    @Option(names = "--layout", description = "cuda only: auto, compact (ragged products), padded (one batched product per "
            + "projection) or bucketed (experts of similar size batched together) (default ${DEFAULT-VALUE})") String layout = "auto";

    @Option(names = "--expert-counts", split = ",", paramLabel = "N", description = "cuda only: time the forward expert products "
            + "alone over these rows per expert (E comma-separated counts), in each row layout") int[] expertCounts;

    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        if (!device.equals("cpu")) return callCuda();
        MoEConfig config = MoEConfig.builder(dim, hidden, experts, topK).activation(activation).packed(!list).build();
        MoELayerBenchmark.Result r = MoELayerBenchmark.run(config, tokens, warmup, iters);
        System.out.print(MoELayerBenchmark.table(r));
        if (json) {
            Map<String, Object> o = new LinkedHashMap<>();
            o.put("benchmark", "moe-layer");
            o.put("dim", dim);
            o.put("hidden", hidden);
            o.put("experts", experts);
            o.put("topK", topK);
            o.put("tokens", tokens);
            o.put("packed", !list);
            o.put("secondsPerStep", r.secondsPerStep());
            o.put("tokensPerSecond", r.tokensPerSecond());
            o.put("phaseSeconds", r.phaseSeconds());
            o.put("groupedGemmGflops", r.groupedGemmGflops());
            o.put("denseGemmGflops", r.denseGemmGflops());
            o.put("nonGemmShare", r.nonGemmShare());
            System.out.println(new GsonBuilder().serializeSpecialFloatingPointValues().create().toJson(o));
        }
        return 0;
    }

    /** The layer on one GPU: forward + backward timed like the peer's benchmark, phases from CUDA events. */
    private int callCuda() {
        int gpu = CudaVerify.ordinal(spec.commandLine(), device);
        if (!dtype.equals("bf16") && !dtype.equals("f32")) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--dtype must be bf16 or f32, got '" + dtype + "'");
        }
        if (!java.util.List.of("auto", "compact", "padded", "bucketed").contains(layout)) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--layout must be auto, compact, padded or bucketed, got '"
                    + layout + "'");
        }
        MoEConfig config = MoEConfig.builder(dim, hidden, experts, topK).activation(activation).router(router).packed(true).build();
        if (expertCounts != null) {
            if (expertCounts.length != experts) {
                throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--expert-counts needs " + experts + " counts (one per"
                        + " expert), got " + expertCounts.length);
            }
            for (int c : expertCounts) {
                if (c < 0) throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--expert-counts: " + c + " is negative");
            }
            System.out.print(moe4j.bench.CudaLayerCheck.groupedOnly(config, dtype, expertCounts, gpu));
            return 0;
        }
        moe4j.bench.CudaLayerCheck.BenchOutput r = moe4j.bench.CudaLayerCheck.bench(config, dtype, layout, tokens, Math.max(warmup, 3),
                Math.max(iters, 10), gpu);
        System.out.print(r.report());
        if (json) System.out.println(new GsonBuilder().serializeSpecialFloatingPointValues().create().toJson(r.json()));
        return 0;
    }

    public static void main(String[] args) {
        System.exit(new picocli.CommandLine(new BenchMoeLayerCommand()).execute(args));
    }
}
