package moe4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.EnumMap;
import java.util.Map;
import moe4j.data.SyntheticTasks.Task;
import org.junit.jupiter.api.Test;

/**
 * Windows follow their task's rules; the exact unigram entropy and entropy rate agree with independent
 * estimates from samples; and a bigram model already beats the unigram entropy.
 */
class SyntheticTasksTest {
    static final int S = 64;
    final SyntheticTasks source = new SyntheticTasks(42);

    // ------------------------------------------------------------ an independent likelihood of a window

    /**
     * ln p(x_1..x_S | marker) under the rules as documented, written from the rules rather than from the
     * generator: -infinity when the window breaks its task's rule.
     */
    double logLikelihood(int[] w) {
        Task task = Task.values()[w[0]];
        assertEquals(task.marker, w[0]);
        return switch (task) {
            case COPY, REVERSE, SORT -> pairedLogLikelihood(task, w);
            case INCREMENT -> incrementLogLikelihood(w);
            case MARKOV -> markovLogLikelihood(w);
        };
    }

    static double pairedLogLikelihood(Task task, int[] w) {
        int choices = SyntheticTasks.MAX_SEGMENT - SyntheticTasks.MIN_SEGMENT + 1;
        double p = 0;
        for (int k = SyntheticTasks.MIN_SEGMENT; k <= SyntheticTasks.MAX_SEGMENT; k++) {
            int fresh = 0;
            boolean ok = true;
            for (int pos = 1; pos < w.length && ok; pos++) {
                int o = (pos - 1) % (2 * k + 2);
                if (o == k || o == 2 * k + 1) {
                    ok = w[pos] == SyntheticTasks.SEP;
                } else if (o < k) {
                    ok = task.owns(w[pos]);
                    fresh++;
                } else {
                    int[] segment = Arrays.copyOfRange(w, pos - o, pos - o + k);
                    int j = o - k - 1;
                    int expected = switch (task) {
                        case COPY -> segment[j];
                        case REVERSE -> segment[k - 1 - j];
                        default -> {
                            Arrays.sort(segment);
                            yield segment[j];
                        }
                    };
                    ok = w[pos] == expected;
                }
            }
            if (ok) p += Math.pow(task.alphabetSize, -fresh) / choices;
        }
        return Math.log(p);
    }

    static double incrementLogLikelihood(int[] w) {
        Task t = Task.INCREMENT;
        double p = 0;
        for (int d = 1; d <= SyntheticTasks.INCREMENT_MAX_STEP; d++) {
            boolean ok = t.owns(w[1]);
            for (int pos = 2; pos < w.length && ok; pos++) {
                ok = t.owns(w[pos]) && w[pos] - t.firstToken == (w[pos - 1] - t.firstToken + d) % t.alphabetSize;
            }
            if (ok) p += 1.0 / (t.alphabetSize * SyntheticTasks.INCREMENT_MAX_STEP);
        }
        return Math.log(p);
    }

    double markovLogLikelihood(int[] w) {
        Task t = Task.MARKOV;
        if (!t.owns(w[1])) return Double.NEGATIVE_INFINITY;
        double lp = -Math.log(t.alphabetSize);
        double[] probs = SyntheticTasks.markovProbabilities();
        for (int pos = 2; pos < w.length; pos++) {
            int[] next = source.markovSuccessors(w[pos - 1]);
            double q = 0;
            for (int j = 0; j < next.length; j++) if (next[j] == w[pos]) q += probs[j];
            lp += Math.log(q);
        }
        return lp;
    }

    // ------------------------------------------------------------ rules

    @Test
    void everyWindowFollowsItsTasksRule() {
        int[] w = new int[S + 1];
        Map<Task, Integer> seen = new EnumMap<>(Task.class);
        for (long i = 0; i < 500; i++) {
            source.window(i, w);
            assertEquals(source.taskOf(i).marker, w[0]);
            assertTrue(Double.isFinite(logLikelihood(w)), "window " + i + " breaks its rule: " + Arrays.toString(w));
            seen.merge(source.taskOf(i), 1, Integer::sum);
        }
        assertEquals(5, seen.size(), "all tasks occur: " + seen);
        for (int n : seen.values()) assertTrue(n > 60, "tasks are about equally frequent: " + seen);
    }

    @Test
    void theRuleCheckCatchesBrokenWindows() {
        int[] w = new int[S + 1];
        for (long i = 0; i < 50; i++) {
            source.window(i, w);
            int pos = 10 + (int) (i % 20); // the transformed copy lies within the window
            w[pos] = w[pos] == Task.values()[w[0]].firstToken ? w[pos] + 1 : w[pos] - 1;
            assertFalse(Double.isFinite(logLikelihood(w)) && source.taskOf(i) != Task.MARKOV,
                    "a changed token must break a deterministic rule: " + Arrays.toString(w));
        }
    }

    @Test
    void handPickedExamplesOfEachTask() {
        int[] w = new int[S + 1];
        for (long i = 0; i < 200; i++) {
            source.window(i, w);
            Task t = source.taskOf(i);
            int k = 0;
            while (w[1 + k] != SyntheticTasks.SEP && t.isPaired()) k++;
            switch (t) {
                case COPY -> assertArrayEquals(Arrays.copyOfRange(w, 1, 1 + k), Arrays.copyOfRange(w, k + 2, 2 * k + 2));
                case REVERSE -> {
                    for (int j = 0; j < k; j++) assertEquals(w[1 + j], w[2 * k + 1 - j]);
                }
                case SORT -> {
                    int[] s = Arrays.copyOfRange(w, 1, 1 + k);
                    Arrays.sort(s);
                    assertArrayEquals(s, Arrays.copyOfRange(w, k + 2, 2 * k + 2));
                }
                case INCREMENT -> {
                    int d = Math.floorMod(w[2] - w[1], 32);
                    assertTrue(d >= 1 && d <= 3);
                    for (int p = 2; p <= S; p++) assertEquals(Math.floorMod(w[p] - w[p - 1], 32), d);
                }
                case MARKOV -> {
                    for (int p = 2; p <= S; p++) {
                        int prev = w[p - 1];
                        int cur = w[p];
                        assertTrue(Arrays.stream(source.markovSuccessors(prev)).anyMatch(x -> x == cur));
                    }
                }
            }
            if (t.isPaired()) assertTrue(k >= SyntheticTasks.MIN_SEGMENT && k <= SyntheticTasks.MAX_SEGMENT, "k=" + k);
        }
    }

    @Test
    void shorterWindowsArePrefixesAndTheSeedMatters() {
        int[] longW = new int[100];
        int[] shortW = new int[10];
        int[] other = new int[100];
        for (long i = 0; i < 20; i++) {
            source.window(i, longW);
            source.window(i, shortW);
            assertArrayEquals(Arrays.copyOf(longW, 10), shortW);
        }
        new SyntheticTasks(43).window(0, other);
        source.window(0, longW);
        assertFalse(Arrays.equals(longW, other));
        assertFalse(Arrays.equals(new SyntheticTasks(43).markovSuccessors(200), source.markovSuccessors(200)));
    }

    // ------------------------------------------------------------ exact statistics against samples

    @Test
    void unigramMatchesTokenCountsOverManyBatches() {
        int windows = 4096;
        DataLoader loader = new DataLoader(source, 64, S);
        long[] counts = new long[SyntheticTasks.VOCAB_SIZE];
        for (int step = 0; step < windows / 64; step++) {
            for (int t : loader.next().targets().toIntArray()) counts[t]++;
        }
        double n = (double) windows * S;
        double[] exact = source.unigram(S);
        double empiricalEntropy = 0;
        double sum = 0;
        for (int v = 0; v < counts.length; v++) {
            double p = counts[v] / n;
            if (p > 0) empiricalEntropy -= p * Math.log(p);
            sum += exact[v];
            // 5 binomial standard deviations per token
            assertEquals(exact[v], p, 5 * Math.sqrt(exact[v] / n) + 1e-4, "frequency of token " + v);
        }
        assertEquals(1.0, sum, 1e-9);
        // the plug-in estimate is biased low by about (V-1)/(2n) = 5e-4 nats
        assertEquals(source.unigramEntropy(S), empiricalEntropy, 0.01);
        // the Markov table, hence its token frequencies, depends on the seed
        assertEquals(5.29, source.unigramEntropy(S), 0.03, "the documented value");
    }

    @Test
    void entropyRateMatchesTheMeanNegativeLogLikelihoodOfSamples() {
        int[] w = new int[S + 1];
        Map<Task, double[]> sums = new EnumMap<>(Task.class); // n, sum, sum of squares
        for (long i = 0; i < 5000; i++) {
            source.window(i, w);
            double nll = -logLikelihood(w);
            double[] s = sums.computeIfAbsent(source.taskOf(i), t -> new double[3]);
            s[0]++;
            s[1] += nll;
            s[2] += nll * nll;
        }
        double total = 0;
        for (Task t : Task.values()) {
            double[] s = sums.get(t);
            double mean = s[1] / s[0];
            double standardError = Math.sqrt(Math.max(s[2] / s[0] - mean * mean, 0) / s[0]);
            double exact = SyntheticTaskStatistics.windowEntropy(t, S, SyntheticTasks.markovProbabilities());
            assertEquals(exact, mean, 5 * standardError + 1e-9, t + " window entropy");
            total += exact;
        }
        assertEquals(total / (5.0 * S), source.optimalLoss(S), 1e-12);
        assertEquals(1.4328, source.optimalLoss(S), 1e-3, "the documented value");
    }

    @Test
    void shortWindowsHideTheSegmentLength() {
        // with seqLen 4 no SEP is visible for any k >= 4: four uniform tokens of the band
        assertEquals(4 * Math.log(64), SyntheticTaskStatistics.windowEntropy(Task.COPY, 4, SyntheticTasks.markovProbabilities()), 1e-12);
        // with seqLen 6, k = 4 and 5 show, k >= 6 do not (7 of 9 choices)
        double h = 2 * (Math.log(9) / 9) - (7 / 9.0) * Math.log(7 / 9.0) + (4 + 5 + 7 * 6) / 9.0 * Math.log(64);
        assertEquals(h, SyntheticTaskStatistics.windowEntropy(Task.COPY, 6, SyntheticTasks.markovProbabilities()), 1e-12);
    }

    @Test
    void orderStatisticsAreDistributions() {
        double[][] pmf = SyntheticTaskStatistics.orderStatistics(5, 32);
        double meanOfMeans = 0;
        for (double[] row : pmf) {
            assertEquals(1.0, Arrays.stream(row).sum(), 1e-12);
            for (int v = 0; v < 32; v++) meanOfMeans += v * row[v] / pmf.length;
        }
        // the order statistics together are the sample: their average mean is the uniform mean
        assertEquals(15.5, meanOfMeans, 1e-9);
        assertTrue(pmf[0][0] > pmf[4][0] && pmf[4][31] > pmf[0][31]);
    }

    // ------------------------------------------------------------ there is structure to learn

    @Test
    void aBigramModelBeatsTheUnigramEntropy() {
        int v = SyntheticTasks.VOCAB_SIZE;
        long[][] counts = new long[v][v];
        long[] rowTotals = new long[v];
        int[] w = new int[S + 1];
        int train = 20000;
        for (long i = 0; i < train; i++) {
            source.window(i, w);
            for (int p = 1; p <= S; p++) {
                counts[w[p - 1]][w[p]]++;
                rowTotals[w[p - 1]]++;
            }
        }
        double alpha = 0.01;
        double nll = 0;
        long n = 0;
        for (long i = train; i < train + 2000; i++) {
            source.window(i, w);
            for (int p = 1; p <= S; p++) {
                double q = (counts[w[p - 1]][w[p]] + alpha) / (rowTotals[w[p - 1]] + alpha * v);
                nll -= Math.log(q);
                n++;
            }
        }
        double bigram = nll / n;
        double unigram = source.unigramEntropy(S);
        System.out.printf("seqLen %d: unigram %.4f, held-out bigram %.4f, optimal %.4f nats%n",
                S, unigram, bigram, source.optimalLoss(S));
        assertTrue(bigram < unigram - 1.5, "bigram " + bigram + " vs unigram " + unigram);
        assertTrue(bigram > source.optimalLoss(S), "nothing beats the entropy rate");
    }

    @Test
    void generationIsSafeToShareBetweenThreads() throws Exception {
        int[][] expected = new int[200][S + 1];
        for (int i = 0; i < expected.length; i++) source.window(i, expected[i]);
        Thread[] threads = new Thread[2];
        boolean[] ok = {true, true};
        for (int t = 0; t < 2; t++) {
            int id = t;
            threads[t] = new Thread(() -> {
                int[] w = new int[S + 1];
                for (int rep = 0; rep < 5; rep++) {
                    for (int i = id; i < expected.length; i += 2) {
                        source.window(i, w);
                        if (!Arrays.equals(w, expected[i])) ok[id] = false;
                    }
                }
            });
            threads[t].start();
        }
        for (Thread t : threads) t.join();
        assertTrue(ok[0] && ok[1]);
    }
}
