package moe4j.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import moe4j.bench.GenerateBenchmark;
import moe4j.hf.HfConfig;
import moe4j.nn.Generator;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code moe4j bench generate}: decoding speed (KV cache, greedy, one sequence) of the model a Hugging Face
 * config.json describes, with random weights (speed does not depend on their values), so that the same
 * shape can be timed in transformers (bench/hf/ has such a config and transformers' figures).
 */
@Command(name = "generate", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
        description = "Decoding speed of a Hugging Face config's model shape, random weights, one rank.")
public final class BenchGenerateCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--config", required = true, description = "a Hugging Face config.json") Path config;
    @Option(names = "--prompt-tokens", description = "prompt length (default ${DEFAULT-VALUE})") int promptTokens = 16;
    @Option(names = "--new-tokens", description = "tokens to decode (default ${DEFAULT-VALUE})") int newTokens = 64;
    @Option(names = "--threads", description = "GEMM threads (default ${DEFAULT-VALUE})") int threads = 1;
    @Option(names = "--repeats", description = "timed runs after one warm-up run; the best is reported (default ${DEFAULT-VALUE})") int repeats = 3;

    @Override
    public Integer call() throws Exception {
        if (!Files.isRegularFile(config)) throw new CommandLine.ParameterException(spec.commandLine(), "--config " + config + " is not a file");
        if (threads < 1 || repeats < 1 || promptTokens < 1 || newTokens < 2) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--threads, --repeats and --prompt-tokens must be >= 1 and --new-tokens >= 2");
        }
        HfConfig hf;
        try {
            hf = HfConfig.parse(com.google.gson.JsonParser.parseString(Files.readString(config)).getAsJsonObject(), config.toString());
        } catch (IllegalArgumentException | IllegalStateException e) {
            throw new CommandLine.ParameterException(spec.commandLine(), e.getMessage());
        }
        var out = spec.commandLine().getOut();
        double best = 0;
        List<Generator.Result> runs = GenerateBenchmark.run(hf.model(), hf.options(), promptTokens, newTokens, threads, repeats);
        for (int r = 0; r < runs.size(); r++) {
            Generator.Result res = runs.get(r);
            best = Math.max(best, res.decodeTokensPerSecond());
            out.printf(Locale.ROOT, "run %d: prefill %d tokens %.1f ms, decode %.1f tokens/s%n", r + 1, promptTokens, res.prefillNanos() / 1e6,
                    res.decodeTokensPerSecond());
        }
        out.printf(Locale.ROOT, "moe4j bench generate: %s (%s, dim %d, %d layers, %d experts top-%d, vocab %d) | %d threads | best decode %.1f tokens/s%n",
                config, hf.family().modelType(), hf.model().dim(), hf.model().nLayers(), hf.model().numExperts(), hf.model().moeTopK(),
                hf.model().vocabSize(), threads, best);
        out.flush();
        return 0;
    }
}
