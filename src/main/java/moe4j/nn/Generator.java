package moe4j.nn;

import java.util.Arrays;
import java.util.function.IntConsumer;
import moe4j.autograd.Autograd;
import moe4j.tensor.Device;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * Autoregressive decoding with a {@link KvCache}: the prompt runs once (prefill), then each new token
 * runs alone against the cached keys and values. Greedy (argmax, the first of equal maxima, as PyTorch) or
 * nucleus sampling: the smallest set of most likely tokens whose probabilities reach {@code topP}, after
 * dividing the logits by the temperature, sampled from {@link Rng} with the given seed.
 *
 * <p>Under expert parallelism every rank runs the same tokens (and the same seed), so every rank's MoE
 * layers take part in each step's all-to-alls and all ranks produce the same sequence.
 */
public final class Generator {
    /** How the next token is chosen: greedy when {@code topP} is 0 or the temperature is 0. */
    public record Sampling(double temperature, double topP, long seed) {
        public static final Sampling GREEDY = new Sampling(0, 0, 0);

        public Sampling {
            if (!(temperature >= 0)) throw new IllegalArgumentException("temperature must be >= 0, got " + temperature);
            if (!(topP >= 0 && topP <= 1)) throw new IllegalArgumentException("top-p must be in [0, 1], got " + topP);
        }

        boolean greedy() {
            return temperature == 0 || topP == 0;
        }
    }

    /** What a run produced, and how long its two phases took. */
    public record Result(int[] tokens, long prefillNanos, long decodeNanos) {
        /** New tokens per second of the decode phase (the first token comes from the prefill). */
        public double decodeTokensPerSecond() {
            return tokens.length <= 1 || decodeNanos == 0 ? 0 : (tokens.length - 1) / (decodeNanos / 1e9);
        }
    }

    private Generator() {}

    /**
     * Up to {@code maxNew} tokens after {@code prompt}, stopping after {@code stopToken} (-1: never);
     * {@code onToken} sees each as it is chosen.
     */
    public static Result generate(MoETransformer model, int[] prompt, int maxNew, Sampling sampling, int stopToken, IntConsumer onToken) {
        if (prompt.length == 0) throw new IllegalArgumentException("generate: the prompt has no tokens");
        if (maxNew < 1) throw new IllegalArgumentException("generate: max new tokens must be >= 1, got " + maxNew);
        int capacity = prompt.length + maxNew;
        if (capacity > model.config().maxSeqLen()) {
            throw new IllegalArgumentException("generate: prompt (" + prompt.length + ") + new tokens (" + maxNew + ") exceed the model's max_seq_len "
                    + model.config().maxSeqLen());
        }
        model.train(false);
        KvCache cache = new KvCache(model, capacity);
        Rng rng = new Rng(sampling.seed());
        int[] out = new int[maxNew];
        int n = 0;
        long t0 = System.nanoTime();
        long prefill = 0;
        int next;
        try (MemoryScope scope = MemoryScope.open()) {
            next = choose(Autograd.noGrad(() -> model.forwardCached(Tensor.ofInts(prompt, prompt.length), cache)), sampling, rng);
        }
        prefill = System.nanoTime() - t0;
        long t1 = System.nanoTime();
        while (true) {
            out[n++] = next;
            onToken.accept(next);
            if (n == maxNew || next == stopToken) break;
            int token = next;
            try (MemoryScope scope = MemoryScope.open()) {
                next = choose(Autograd.noGrad(() -> model.forwardCached(Tensor.ofInts(new int[] {token}, 1), cache)), sampling, rng);
            }
        }
        return new Result(Arrays.copyOf(out, n), prefill, System.nanoTime() - t1);
    }

    /** The next token from the last row of {@code logits} (n, V). */
    static int choose(Tensor logits, Sampling sampling, Rng rng) {
        int v = logits.dim(1);
        // choosing runs on the host: an explicit copy of the one row of V logits it needs
        Tensor last = logits.rows(logits.dim(0) - 1, logits.dim(0)).to(Device.CPU);
        long base = 0;
        if (sampling.greedy()) {
            int best = 0;
            for (int i = 1; i < v; i++) if (last.get(base + i) > last.get(base + best)) best = i;
            return best;
        }
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < v; i++) max = Math.max(max, last.get(base + i));
        double[] p = new double[v];
        double sum = 0;
        for (int i = 0; i < v; i++) {
            p[i] = Math.exp((last.get(base + i) - max) / sampling.temperature());
            sum += p[i];
        }
        Integer[] order = new Integer[v];
        for (int i = 0; i < v; i++) {
            order[i] = i;
            p[i] /= sum;
        }
        Arrays.sort(order, (a, b) -> Double.compare(p[b], p[a]));
        // the nucleus: most likely tokens until their mass reaches top-p (always at least one)
        int keep = 0;
        double mass = 0;
        while (keep < v && (keep == 0 || mass < sampling.topP())) mass += p[order[keep++]];
        double u = rng.nextDouble() * mass;
        double acc = 0;
        for (int i = 0; i < keep; i++) {
            acc += p[order[i]];
            if (u < acc) return order[i];
        }
        return order[keep - 1];
    }
}
