package moe4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

/** {@code moe4j bench attention} without a GPU: its FLOP count, its argument errors, and a tiny run on the cpu. */
class BenchAttentionCommandTest {
    private static int run(StringWriter err, String... args) {
        CommandLine cli = Main.commandLine();
        cli.setOut(new PrintWriter(new StringWriter()));
        cli.setErr(new PrintWriter(err));
        return cli.execute(args);
    }

    @Test
    void visiblePairsCountTheKeysEveryRowSees() {
        for (int s : new int[] {1, 7, 64, 129}) {
            for (int window : new int[] {0, 1, 5, 64, 200}) {
                long pairs = 0;
                for (int i = 0; i < s; i++) pairs += i - (window > 0 ? Math.max(0, i - window + 1) : 0) + 1;
                assertEquals((double) pairs, BenchAttentionCommand.visiblePairs(s, window), "S=" + s + " window=" + window);
            }
        }
    }

    @Test
    void flopsOfTheMeasuredShape() {
        // 4·S(S+1)/2·hd·Hq·B forward, 2.5× backward
        double forward = 4.0 * 2048 * 2049 / 2 * 128 * 16 * 4;
        assertEquals(forward, BenchAttentionCommand.forwardFlops(4, 2048, 16, 128, 0));
        assertEquals(2.5 * forward, BenchAttentionCommand.backwardFlops(4, 2048, 16, 128, 0));
    }

    @Test
    void badArgumentsAreOneSentenceAndExitCodeTwo() {
        StringWriter err = new StringWriter();
        assertEquals(2, run(err, "bench", "attention", "--heads", "16", "--kv-heads", "3"));
        assertTrue(err.toString().contains("--kv-heads 3 must divide --heads 16"), err.toString());
        err = new StringWriter();
        assertEquals(2, run(err, "bench", "attention", "--device", "cpu", "--dtype", "bf16"));
        assertTrue(err.toString().contains("--dtype bf16 needs a cuda device"), err.toString());
        err = new StringWriter();
        assertEquals(2, run(err, "bench", "attention", "--dtype", "f16"));
        assertTrue(err.toString().contains("--dtype must be bf16 or f32, got 'f16'"), err.toString());
    }

    @Test
    void runsOnTheCpu() {
        StringWriter err = new StringWriter();
        assertEquals(0, run(err, "bench", "attention", "--device", "cpu", "--dtype", "f32", "--batch", "1", "--seq", "20", "--heads", "2",
                "--kv-heads", "1", "--head-dim", "8", "--warmup", "0", "--iters", "1"), err.toString());
    }
}
