package moe4j.cli;

import com.google.gson.JsonElement;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.Distributed;
import moe4j.distributed.MeshSizes;
import moe4j.hf.HfCheckpoint;
import moe4j.hf.HfConfig;
import moe4j.hf.HfWeightFiles;
import moe4j.kernels.ExecutionContext;
import moe4j.nn.Generator;
import moe4j.nn.MoETransformer;
import moe4j.tensor.Device;
import moe4j.text.BpeTokenizer;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code moe4j generate}: continues a prompt with a Hugging Face MoE model folder, greedy or top-p, with a
 * key/value cache; {@code --ep N} splits every MoE layer's experts over N ranks of this JVM.
 */
@Command(name = "generate", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
        description = "Continue a prompt with a Hugging Face MoE model folder (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE).")
public final class GenerateCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--model", required = true, description = "Model folder: config.json, model.safetensors (or shards with their index), tokenizer.json")
    Path model;

    @Option(names = "--prompt", required = true, description = "The text to continue")
    String prompt;

    @Option(names = "--max-new-tokens", defaultValue = "32", description = "Tokens to generate at most (default: ${DEFAULT-VALUE})")
    int maxNew;

    @Option(names = "--top-p", description = "Nucleus sampling with this top-p (default: greedy)")
    Double topP;

    @Option(names = "--temperature", defaultValue = "1.0", description = "Sampling temperature with --top-p (default: ${DEFAULT-VALUE})")
    double temperature;

    @Option(names = "--seed", defaultValue = "0", description = "Sampling seed (default: ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--ep", defaultValue = "1", description = "Expert-parallel ranks in this JVM (default: ${DEFAULT-VALUE})")
    int ep;

    @Option(names = "--threads", description = "GEMM threads per rank (default: the cores divided among the ranks)")
    Integer threads;

    @Option(names = "--ignore-eos", description = "Do not stop at the model's end-of-sequence token")
    boolean ignoreEos;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        if (!Files.isDirectory(model)) throw bad("--model " + model + " is not a folder");
        if (ep < 1) throw bad("--ep must be >= 1, got " + ep);
        if (maxNew < 1) throw bad("--max-new-tokens must be >= 1, got " + maxNew);
        if (topP != null && !(topP > 0 && topP <= 1)) throw bad("--top-p must be in (0, 1], got " + topP);
        if (!(temperature > 0)) throw bad("--temperature must be > 0, got " + temperature);
        Path tokenizerFile = model.resolve("tokenizer.json");
        if (!Files.isRegularFile(tokenizerFile)) throw bad("model folder " + model + " has no tokenizer.json");
        HfConfig config;
        BpeTokenizer tokenizer;
        try {
            config = HfConfig.read(model);
            tokenizer = BpeTokenizer.load(tokenizerFile);
        } catch (IllegalArgumentException e) {
            throw bad(e.getMessage());
        }
        if (config.model().numExperts() % ep != 0) {
            throw bad("--ep " + ep + " must divide the model's " + config.model().numExperts() + " experts");
        }
        int[] ids = tokenizer.encode(prompt, true);
        if (ids.length == 0) throw bad("--prompt gives no tokens");
        int stop = ignoreEos ? -1 : eosToken(config);
        Generator.Sampling sampling = topP == null ? Generator.Sampling.GREEDY : new Generator.Sampling(temperature, topP, seed);
        int gemmThreads = threads != null ? Math.max(1, threads) : Math.max(1, Runtime.getRuntime().availableProcessors() / ep);

        out.printf(Locale.ROOT, "moe4j generate: %s (%s, %d layers, %d experts top-%d) | ep %d | %s%n", model.getFileName(),
                config.family().modelType(), config.model().nLayers(), config.model().numExperts(), config.model().moeTopK(), ep,
                topP == null ? "greedy" : String.format(Locale.ROOT, "top-p %.3g, temperature %.3g, seed %d", topP, temperature, seed));
        StreamingText stream = new StreamingText(tokenizer, out);
        long loadStart = System.nanoTime();
        Generator.Result result;
        try (HfWeightFiles files = new HfWeightFiles(model)) {
            List<Generator.Result> ranks = Distributed.run(ep, Duration.ofMinutes(10), world -> {
                // each rank thread computes in its own context: its GEMM threads belong to it
                try (ExecutionContext ignored = ExecutionContext.enter(Device.CPU, gemmThreads)) {
                    DeviceMesh mesh = ep > 1 ? DeviceMesh.create(world, MeshSizes.defaults().ep(ep)) : null;
                    MoETransformer m = HfCheckpoint.load(config, files, mesh);
                    boolean printer = world.rank() == 0;
                    // every rank has loaded (and logged) before the text starts
                    world.barrier();
                    if (printer) {
                        out.print(prompt);
                        out.flush();
                    }
                    return Generator.generate(m, ids, maxNew, sampling, stop, printer ? stream::accept : t -> { });
                }
            });
            result = ranks.get(0);
        }
        double seconds = (System.nanoTime() - loadStart) / 1e9;
        stream.finish();
        out.println();
        out.printf(Locale.ROOT, "prompt %d tokens, prefill %.1f ms | %d new tokens, %.1f tokens/s decoding | %.2f s in all (loading included)%n",
                ids.length, result.prefillNanos() / 1e6, result.tokens().length, result.decodeTokensPerSecond(), seconds);
        out.flush();
        return 0;
    }

    private CommandLine.ParameterException bad(String message) {
        return new CommandLine.ParameterException(spec.commandLine(), message);
    }

    /** The first eos_token_id of config.json, or -1. */
    private static int eosToken(HfConfig config) {
        JsonElement e = config.json().get("eos_token_id");
        if (e == null || e.isJsonNull()) return -1;
        return e.isJsonArray() ? e.getAsJsonArray().get(0).getAsInt() : e.getAsInt();
    }

    /** Prints generated text as it comes, holding back an incomplete UTF-8 character until its last byte. */
    private static final class StreamingText {
        private final BpeTokenizer tokenizer;
        private final PrintWriter out;
        private final java.util.List<Integer> ids = new java.util.ArrayList<>();
        private int printed;

        StreamingText(BpeTokenizer tokenizer, PrintWriter out) {
            this.tokenizer = tokenizer;
            this.out = out;
        }

        void accept(int id) {
            ids.add(id);
            String text = tokenizer.decode(ids.stream().mapToInt(Integer::intValue).toArray());
            if (text.endsWith("\uFFFD")) return;
            if (text.length() > printed) {
                out.print(text.substring(printed));
                out.flush();
                printed = text.length();
            }
        }

        /** Prints what was held back (an incomplete character at the very end prints as U+FFFD). */
        void finish() {
            String text = tokenizer.decode(ids.stream().mapToInt(Integer::intValue).toArray());
            if (text.length() > printed) out.print(text.substring(printed));
            printed = text.length();
        }
    }
}
