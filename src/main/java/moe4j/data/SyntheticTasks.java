package moe4j.data;

import java.util.Arrays;
import moe4j.tensor.Rng;

/**
 * A built-in multi-task token data set: every window is one of five token-level tasks, chosen at
 * random, announced by a task-marker token and then following that task's rule. Each task draws its
 * content from its own band of the vocabulary, so the tasks differ both in which tokens they use and in
 * what structure links them: something for a router to pick up and for experts to specialise on.
 *
 * <p>Vocabulary (256 tokens): {@code 0..4} the task markers, {@link #SEP} = 5 the separator, 6 and 7
 * unused, and the content bands of {@link Task}. A window of length {@code L} is
 * {@code marker, x_1, ..., x_{L-1}}:
 * <ul>
 *   <li>{@link Task#COPY}: segment length {@code k} uniform in [{@value #MIN_SEGMENT}, {@value #MAX_SEGMENT}]
 *       once per window; then repeated pairs {@code s SEP s SEP} with a fresh random segment {@code s}
 *       of {@code k} tokens per pair;
 *   <li>{@link Task#REVERSE}: pairs {@code s SEP reverse(s) SEP};
 *   <li>{@link Task#SORT}: pairs {@code s SEP sorted(s) SEP} (ascending token ids);
 *   <li>{@link Task#INCREMENT}: {@code a, a+d, a+2d, ...} modulo the band size 32, with {@code a}
 *       uniform and step {@code d} uniform in {1, 2, 3};
 *   <li>{@link Task#MARKOV}: a first-order Markov chain over its 56 tokens, uniform start; each token has
 *       {@value #MARKOV_SUCCESSORS} successors, drawn from the seed, taken with probabilities
 *       {@link #markovProbabilities()} (0.4, 0.3, 0.2, 0.1).
 * </ul>
 *
 * <p>Window {@code i} is drawn from {@code Rng.forStream(seed, i)}, so it is a fixed function of
 * (seed, i), and a shorter window is a prefix of a longer one.
 *
 * <p>Losses are in <b>nats</b> (natural log, as cross-entropy losses are), averaged over the
 * {@code seqLen} target positions {@code 1..seqLen} of a window. Both are computed exactly from the
 * generator's distributions, not estimated: {@link #unigramEntropy(int)} is the best loss a model that
 * ignores context can reach; {@link #optimalLoss(int)} is the entropy rate of the data, the loss of a
 * perfect model that has worked out every rule (no model can beat it).
 *
 * <p>Reference values (nats per target token):
 * <pre>
 *   seqLen   unigram entropy        bigram model (held-out)   optimal loss
 *   64       5.29 (5.28-5.31)       2.82                      1.433
 *   128      5.28                   -                         1.346
 * </pre>
 * (the unigram entropy varies a little with the seed through the Markov table). Loss below the unigram
 * entropy means a model uses context at all; about 2.8 is what the previous token alone gives (token
 * bands, the Markov table, increments); going well below needs in-context copying of segments. For a
 * short training run a sound target is "below 4.5" (learning happens), for a longer one "below 2.8".
 */
public final class SyntheticTasks implements TokenSource {
    public static final int VOCAB_SIZE = 256;
    /** Separates a segment from its transformation, and pairs from each other. */
    public static final int SEP = 5;
    public static final int MIN_SEGMENT = 4;
    public static final int MAX_SEGMENT = 12;
    public static final int INCREMENT_MAX_STEP = 3;
    public static final int MARKOV_SUCCESSORS = 4;
    private static final double[] MARKOV_PROBABILITIES = {0.4, 0.3, 0.2, 0.1};
    /** The Markov table's random stream; window streams use ids >= 0. */
    private static final long TABLE_STREAM = -1;

    /** The tasks, each with its marker token and content band {@code [firstToken, firstToken + alphabetSize)}. */
    public enum Task {
        COPY(0, 8, 64),
        REVERSE(1, 72, 64),
        INCREMENT(2, 136, 32),
        SORT(3, 168, 32),
        MARKOV(4, 200, 56);

        public final int marker;
        public final int firstToken;
        public final int alphabetSize;

        Task(int marker, int firstToken, int alphabetSize) {
            this.marker = marker;
            this.firstToken = firstToken;
            this.alphabetSize = alphabetSize;
        }

        /** Whether {@code token} lies in this task's content band. */
        public boolean owns(int token) {
            return token >= firstToken && token < firstToken + alphabetSize;
        }

        /** Tasks built of {@code segment SEP transformed(segment) SEP} pairs. */
        boolean isPaired() {
            return this == COPY || this == REVERSE || this == SORT;
        }
    }

    private static final Task[] TASKS = Task.values();

    private final long seed;
    /** {@code successors[s][j]}: band offset of the j-th successor of band offset s. */
    private final int[][] successors;

    public SyntheticTasks(long seed) {
        this.seed = seed;
        this.successors = drawMarkovTable(seed);
    }

    private static int[][] drawMarkovTable(long seed) {
        Rng rng = Rng.forStream(seed, TABLE_STREAM);
        int n = Task.MARKOV.alphabetSize;
        int[][] table = new int[n][];
        int[] pool = new int[n];
        for (int s = 0; s < n; s++) {
            for (int i = 0; i < n; i++) pool[i] = i;
            // partial Fisher-Yates: distinct successors
            for (int j = 0; j < MARKOV_SUCCESSORS; j++) {
                int pick = j + rng.nextInt(n - j);
                int t = pool[j];
                pool[j] = pool[pick];
                pool[pick] = t;
            }
            table[s] = Arrays.copyOf(pool, MARKOV_SUCCESSORS);
        }
        return table;
    }

    public long seed() {
        return seed;
    }

    @Override
    public String name() {
        return "synthetic(seed=" + seed + ")";
    }

    @Override
    public int vocabSize() {
        return VOCAB_SIZE;
    }

    /** The task of window {@code index}. */
    public Task taskOf(long index) {
        return TASKS[Rng.forStream(seed, index).nextInt(TASKS.length)];
    }

    /** The successors of Markov token {@code token}, most likely first (probabilities {@link #markovProbabilities()}). */
    public int[] markovSuccessors(int token) {
        if (!Task.MARKOV.owns(token)) {
            throw new IllegalArgumentException("markovSuccessors: token " + token + " is outside the Markov band ["
                    + Task.MARKOV.firstToken + ", " + (Task.MARKOV.firstToken + Task.MARKOV.alphabetSize) + ")");
        }
        int[] s = successors[token - Task.MARKOV.firstToken].clone();
        for (int j = 0; j < s.length; j++) s[j] += Task.MARKOV.firstToken;
        return s;
    }

    public static double[] markovProbabilities() {
        return MARKOV_PROBABILITIES.clone();
    }

    @Override
    public void window(long index, int[] w) {
        if (index < 0) throw new IllegalArgumentException(name() + ": window index must be >= 0, got " + index);
        Rng rng = Rng.forStream(seed, index);
        Task task = TASKS[rng.nextInt(TASKS.length)];
        w[0] = task.marker;
        switch (task) {
            case COPY, REVERSE, SORT -> fillPairs(task, rng, w);
            case INCREMENT -> fillIncrement(rng, w);
            case MARKOV -> fillMarkov(rng, w);
        }
    }

    private static void fillPairs(Task task, Rng rng, int[] w) {
        int k = MIN_SEGMENT + rng.nextInt(MAX_SEGMENT - MIN_SEGMENT + 1);
        int[] segment = new int[k];
        int[] transformed = new int[k];
        int p = 1;
        while (p < w.length) {
            for (int i = 0; i < k; i++) segment[i] = task.firstToken + rng.nextInt(task.alphabetSize);
            switch (task) {
                case REVERSE -> {
                    for (int i = 0; i < k; i++) transformed[i] = segment[k - 1 - i];
                }
                case SORT -> {
                    System.arraycopy(segment, 0, transformed, 0, k);
                    Arrays.sort(transformed);
                }
                default -> System.arraycopy(segment, 0, transformed, 0, k);
            }
            p = put(w, p, segment);
            p = put(w, p, SEP);
            p = put(w, p, transformed);
            p = put(w, p, SEP);
        }
    }

    private static int put(int[] w, int p, int[] tokens) {
        int n = Math.min(tokens.length, w.length - p);
        if (n > 0) System.arraycopy(tokens, 0, w, p, n);
        return p + Math.max(n, 0);
    }

    private static int put(int[] w, int p, int token) {
        if (p < w.length) w[p++] = token;
        return p;
    }

    private static void fillIncrement(Rng rng, int[] w) {
        int m = Task.INCREMENT.alphabetSize;
        int value = rng.nextInt(m);
        int step = 1 + rng.nextInt(INCREMENT_MAX_STEP);
        for (int p = 1; p < w.length; p++) {
            w[p] = Task.INCREMENT.firstToken + value;
            value = (value + step) % m;
        }
    }

    private void fillMarkov(Rng rng, int[] w) {
        int state = rng.nextInt(Task.MARKOV.alphabetSize);
        for (int p = 1; p < w.length; p++) {
            w[p] = Task.MARKOV.firstToken + state;
            state = successors[state][pickSuccessor(rng.nextDouble())];
        }
    }

    private static int pickSuccessor(double u) {
        double cumulative = 0;
        for (int j = 0; j < MARKOV_SUCCESSORS - 1; j++) {
            cumulative += MARKOV_PROBABILITIES[j];
            if (u < cumulative) return j;
        }
        return MARKOV_SUCCESSORS - 1;
    }

    // ---------------------------------------------------------------- exact statistics

    /**
     * The exact frequency of each token over the target positions {@code 1..seqLen} of a window (sums
     * to 1).
     */
    public double[] unigram(int seqLen) {
        requireSeqLen(seqLen, "unigram");
        double[] q = new double[VOCAB_SIZE];
        for (Task task : TASKS) {
            double[] counts = SyntheticTaskStatistics.expectedCounts(task, seqLen, successors, MARKOV_PROBABILITIES);
            for (int v = 0; v < VOCAB_SIZE; v++) q[v] += counts[v] / (TASKS.length * (double) seqLen);
        }
        return q;
    }

    /** Entropy in nats of {@link #unigram(int)}: the loss of the best context-free predictor. */
    public double unigramEntropy(int seqLen) {
        double h = 0;
        for (double p : unigram(seqLen)) {
            if (p > 0) h -= p * Math.log(p);
        }
        return h;
    }

    /**
     * The entropy rate in nats per target token of windows of {@code seqLen + 1} tokens,
     * {@code H(x_1..x_seqLen | marker) / seqLen}: the expected loss of the Bayes-optimal predictor, a
     * floor no model can beat.
     */
    public double optimalLoss(int seqLen) {
        requireSeqLen(seqLen, "optimalLoss");
        double h = 0;
        for (Task task : TASKS) h += SyntheticTaskStatistics.windowEntropy(task, seqLen, MARKOV_PROBABILITIES);
        return h / (TASKS.length * (double) seqLen);
    }

    private static void requireSeqLen(int seqLen, String op) {
        if (seqLen < 1) throw new IllegalArgumentException(op + ": seqLen must be >= 1, got " + seqLen);
    }
}
