package moe4j.bench;

import java.util.ArrayList;
import java.util.List;
import moe4j.kernels.ExecutionContext;
import moe4j.nn.Generator;
import moe4j.nn.ModelConfig;
import moe4j.nn.MoETransformer;
import moe4j.nn.TransformerOptions;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;

/**
 * Decoding speed (key/value cache, greedy, one sequence, one rank) of a model shape with random weights:
 * the speed does not depend on the weights' values, so a Hugging Face config.json's shape can be timed
 * without its checkpoint.
 */
public final class GenerateBenchmark {
    private GenerateBenchmark() {}

    /**
     * One untimed warm-up generation, then {@code repeats} timed ones of {@code newTokens} tokens after a
     * random prompt of {@code promptTokens} (seed 1), on {@code threads} CPU threads.
     */
    public static List<Generator.Result> run(ModelConfig model, TransformerOptions options, int promptTokens, int newTokens,
                                             int threads, int repeats) {
        try (ExecutionContext ignored = ExecutionContext.enter(Device.CPU, threads)) {
            MoETransformer transformer = new MoETransformer(model, options);
            Rng rng = new Rng(1);
            int[] prompt = new int[promptTokens];
            for (int i = 0; i < prompt.length; i++) prompt[i] = rng.nextInt(model.vocabSize());
            Generator.generate(transformer, prompt, newTokens, Generator.Sampling.GREEDY, -1, t -> { });
            List<Generator.Result> runs = new ArrayList<>();
            for (int r = 0; r < repeats; r++) {
                runs.add(Generator.generate(transformer, prompt, newTokens, Generator.Sampling.GREEDY, -1, t -> { }));
            }
            return runs;
        }
    }
}
