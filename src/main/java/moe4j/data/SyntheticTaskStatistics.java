package moe4j.data;

import moe4j.data.SyntheticTasks.Task;

/**
 * Exact statistics of {@link SyntheticTasks}' windows, worked out from the generator's distributions
 * rather than sampled: expected token counts and window entropies over the target positions
 * {@code 1..seqLen} of a window of one task.
 */
final class SyntheticTaskStatistics {
    private SyntheticTaskStatistics() {}

    private static final int SEGMENT_CHOICES = SyntheticTasks.MAX_SEGMENT - SyntheticTasks.MIN_SEGMENT + 1;

    /** Expected number of times each token appears at positions {@code 1..seqLen} of a window of {@code task}. */
    static double[] expectedCounts(Task task, int seqLen, int[][] successors, double[] probabilities) {
        double[] counts = new double[SyntheticTasks.VOCAB_SIZE];
        int m = task.alphabetSize;
        switch (task) {
            case INCREMENT -> {
                // a uniform start makes every position uniform over the band
                for (int v = 0; v < m; v++) counts[task.firstToken + v] = seqLen / (double) m;
            }
            case MARKOV -> {
                double[] p = new double[m];
                java.util.Arrays.fill(p, 1.0 / m);
                for (int t = 1; t <= seqLen; t++) {
                    for (int v = 0; v < m; v++) counts[task.firstToken + v] += p[v];
                    if (t < seqLen) p = markovStep(p, successors, probabilities);
                }
            }
            default -> {
                double pk = 1.0 / SEGMENT_CHOICES;
                for (int k = SyntheticTasks.MIN_SEGMENT; k <= SyntheticTasks.MAX_SEGMENT; k++) {
                    int period = 2 * (k + 1);
                    double[][] orderStatistics = task == Task.SORT ? orderStatistics(k, m) : null;
                    for (int p = 1; p <= seqLen; p++) {
                        int o = (p - 1) % period;
                        if (o == k || o == period - 1) {
                            counts[SyntheticTasks.SEP] += pk;
                        } else if (o < k || orderStatistics == null) {
                            // fresh tokens are uniform, and so are copies and reversals of them
                            for (int v = 0; v < m; v++) counts[task.firstToken + v] += pk / m;
                        } else {
                            double[] pmf = orderStatistics[o - k - 1];
                            for (int v = 0; v < m; v++) counts[task.firstToken + v] += pk * pmf[v];
                        }
                    }
                }
            }
        }
        return counts;
    }

    /**
     * {@code H(x_1..x_seqLen | task)} in nats. The window is an injective image of the random choices it
     * reveals, so its entropy is the entropy of those choices.
     */
    static double windowEntropy(Task task, int seqLen, double[] probabilities) {
        int m = task.alphabetSize;
        switch (task) {
            case INCREMENT -> {
                // start a; the step d shows from the second token on (1..3 are distinct modulo 32)
                return Math.log(m) + (seqLen >= 2 ? Math.log(SyntheticTasks.INCREMENT_MAX_STEP) : 0);
            }
            case MARKOV -> {
                // every token has the same successor distribution, so each transition adds its entropy
                double perStep = 0;
                for (double q : probabilities) perStep -= q * Math.log(q);
                return Math.log(m) + (seqLen - 1) * perStep;
            }
            default -> {
                // k shows by the first SEP at position k+1; windows too short for it only reveal "k >= seqLen".
                // Given k, the fresh (first-half) tokens are uniform and independent; the rest follow from them.
                double pk = 1.0 / SEGMENT_CHOICES;
                double hidden = 0;
                double h = 0;
                for (int k = SyntheticTasks.MIN_SEGMENT; k <= SyntheticTasks.MAX_SEGMENT; k++) {
                    if (k < seqLen) {
                        h -= pk * Math.log(pk);
                    } else {
                        hidden += pk;
                    }
                    h += pk * freshPositions(k, seqLen) * Math.log(m);
                }
                if (hidden > 0) h -= hidden * Math.log(hidden);
                return h;
            }
        }
    }

    /** How many of positions {@code 1..seqLen} hold freshly drawn segment tokens for segment length {@code k}. */
    static int freshPositions(int k, int seqLen) {
        int period = 2 * (k + 1);
        int full = seqLen / period;
        int rest = seqLen % period;
        return full * k + Math.min(rest, k);
    }

    private static double[] markovStep(double[] p, int[][] successors, double[] probabilities) {
        double[] next = new double[p.length];
        for (int s = 0; s < p.length; s++) {
            for (int j = 0; j < probabilities.length; j++) next[successors[s][j]] += p[s] * probabilities[j];
        }
        return next;
    }

    /**
     * {@code pmf[j][v]}: probability that the j-th smallest (0-based) of {@code k} independent uniform
     * draws from {@code 0..m-1} equals {@code v}. {@code X_(j) <= v} iff at least j+1 draws are {@code <= v}.
     */
    static double[][] orderStatistics(int k, int m) {
        double[][] pmf = new double[k][m];
        for (int j = 0; j < k; j++) {
            double previous = 0;
            for (int v = 0; v < m; v++) {
                double cdf = binomialTailAtLeast(k, (v + 1) / (double) m, j + 1);
                pmf[j][v] = cdf - previous;
                previous = cdf;
            }
        }
        return pmf;
    }

    private static double binomialTailAtLeast(int n, double q, int atLeast) {
        double sum = 0;
        for (int i = atLeast; i <= n; i++) sum += binomial(n, i) * Math.pow(q, i) * Math.pow(1 - q, n - i);
        return Math.min(sum, 1.0);
    }

    private static double binomial(int n, int i) {
        double c = 1;
        for (int t = 1; t <= i; t++) c = c * (n - i + t) / t;
        return c;
    }
}
