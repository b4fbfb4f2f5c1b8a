package moe4j.distributed;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import moe4j.tensor.DType;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

/**
 * No hang, ever: failed, absent and mismatched ranks end in a clear exception on every rank, within
 * the collective deadline, and leave no rank thread behind.
 */
class FailureTest {
    private static final Duration SHORT = Duration.ofSeconds(2);

    /** Runs {@code fn} expecting every rank to fail with a CollectiveException; returns their messages in rank order. */
    private static List<String> collectiveFailures(int p, Duration timeout, RankFunction<Void> fn) {
        return Distributed.run(p, timeout, g -> {
            CollectiveException e = assertThrows(CollectiveException.class, () -> fn.run(g), "rank " + g.rank());
            // the group is broken from now on: the next collective fails at once, it does not wait
            long t0 = System.nanoTime();
            assertThrows(CollectiveException.class, g::barrier);
            assertTrue(System.nanoTime() - t0 < timeout.toNanos() / 2, "a broken group fails at once");
            return e.getMessage();
        });
    }

    @Test
    void aRankThatThrowsFailsItsPeersFastAndIsRethrownFirst() {
        Duration longTimeout = Duration.ofSeconds(60);
        long t0 = System.nanoTime();
        IllegalStateException thrown = assertThrows(IllegalStateException.class, () -> Distributed.run(4, longTimeout, g -> {
            if (g.rank() == 2) throw new IllegalStateException("boom on rank 2");
            g.allReduce(Tensor.zeros(8), ReduceOp.SUM);
            return null;
        }));
        assertTrue(System.nanoTime() - t0 < longTimeout.toNanos() / 4, "peers must not wait for the deadline");
        assertEquals("boom on rank 2", thrown.getMessage());
        assertEquals(3, thrown.getSuppressed().length);
        for (Throwable s : thrown.getSuppressed()) {
            CollectiveException ce = assertInstanceOf(CollectiveException.class, s);
            assertEquals("allReduce", ce.collective());
            assertEquals("world", ce.group());
            assertTrue(ce.getMessage().contains("rank 2 failed: java.lang.IllegalStateException: boom on rank 2"), ce.getMessage());
        }
        assertNoRankThreadLeft();
    }

    @Test
    void aRankThatNeverArrivesTimesOutNamingIt() {
        RuntimeException thrown = assertThrows(RuntimeException.class, () -> Distributed.run(3, SHORT, g -> {
            if (g.rank() == 1) {
                Thread.sleep(60_000); // stuck outside any collective: interrupted once the others failed
                return null;
            }
            g.allToAll(new int[3], 1);
            return null;
        }));
        CollectiveException first = assertInstanceOf(CollectiveException.class, thrown);
        assertTrue(first.getMessage().contains("allToAll on group 'world'"), first.getMessage());
        assertTrue(first.getMessage().contains("timed out after 2 s waiting for rank(s) [1]"), first.getMessage());
        assertEquals(2, thrown.getSuppressed().length, "the other waiting rank and the interrupted sleeper");
        assertNoRankThreadLeft();
    }

    @Test
    void aRankThatEndsWithoutCallingFailsItsPeersFast() {
        long t0 = System.nanoTime();
        Duration longTimeout = Duration.ofSeconds(60);
        List<String> messages = Distributed.run(3, longTimeout, g -> {
            if (g.rank() == 0) return "skipped";
            CollectiveException e = assertThrows(CollectiveException.class, () -> g.allReduce(Tensor.zeros(4), ReduceOp.SUM));
            return e.getMessage();
        });
        assertTrue(System.nanoTime() - t0 < longTimeout.toNanos() / 4);
        for (int r = 1; r < 3; r++) {
            assertTrue(messages.get(r).startsWith("allReduce on group 'world' (rank " + r + " of 3, call #1)"), messages.get(r));
            assertTrue(messages.get(r).contains("rank(s) [0]"), messages.get(r));
            assertTrue(messages.get(r).contains("ended their work without calling it"), messages.get(r));
        }
    }

    @Test
    void aRankThatSkipsACollectiveIsAMismatchOnEveryRank() {
        List<String> messages = collectiveFailures(3, SHORT, g -> {
            if (g.rank() != 1) g.allReduce(Tensor.zeros(4), ReduceOp.SUM);
            g.barrier();
            return null;
        });
        for (String m : messages) {
            assertTrue(m.contains("the ranks' calls do not match: rank 0: allReduce #1 F32[4] SUM; rank 1: barrier #1;"
                    + " rank 2: allReduce #1 F32[4] SUM"), m);
        }
    }

    @Test
    void mismatchedCollectiveKindsFailOnEveryRank() {
        List<String> messages = collectiveFailures(2, SHORT, g -> {
            if (g.rank() == 0) g.allReduce(Tensor.zeros(4), ReduceOp.SUM);
            else g.allToAll(new int[2], 1);
            return null;
        });
        assertTrue(messages.get(0).startsWith("allReduce on group 'world' (rank 0 of 2, call #1): "), messages.get(0));
        assertTrue(messages.get(1).startsWith("allToAll on group 'world' (rank 1 of 2, call #1): "), messages.get(1));
        for (String m : messages) {
            assertTrue(m.contains("rank 0: allReduce #1 F32[4] SUM; rank 1: allToAll #1 chunk of 1"), m);
        }
    }

    @Test
    void mismatchedDtypesAndShapesFailOnEveryRank() {
        List<String> messages = collectiveFailures(2, SHORT, g -> {
            g.allReduce(g.rank() == 0 ? Tensor.zeros(4) : Tensor.zeros(DType.I32, 4), ReduceOp.SUM);
            return null;
        });
        for (String m : messages) assertTrue(m.contains("rank 0: allReduce #1 F32[4] SUM; rank 1: allReduce #1 I32[4] SUM"), m);

        messages = collectiveFailures(2, SHORT, g -> {
            g.broadcast(Tensor.zeros(g.rank() + 2, 3), 0);
            return null;
        });
        for (String m : messages) assertTrue(m.contains("F32[2, 3] from root 0; rank 1: broadcast #1 F32[3, 3] from root 0"), m);
    }

    @Test
    void mismatchedAllToAllSplitsFailOnEveryRank() {
        List<String> messages = collectiveFailures(2, SHORT, g -> {
            // rank 0 sends 5 rows to rank 1, rank 1 expects 4 from rank 0
            int[] inSplits = g.rank() == 0 ? new int[] {1, 5} : new int[] {2, 2};
            int[] outSplits = g.rank() == 0 ? new int[] {1, 2} : new int[] {4, 2};
            Tensor in = Tensor.zeros(inSplits[0] + inSplits[1], 8);
            Tensor out = Tensor.zeros(outSplits[0] + outSplits[1], 8);
            g.allToAllSingle(out, in, outSplits, inSplits);
            return null;
        });
        for (String m : messages) {
            assertTrue(m.contains("the splits do not agree: rank 0 sends 5 rows to rank 1 but rank 1 expects 4"), m);
        }
    }

    @Test
    void badLocalArgumentsAreRejectedAndBreakTheGroup() {
        List<String> messages = Distributed.run(2, SHORT, g -> {
            if (g.rank() == 0) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                        () -> g.allToAllSingle(Tensor.zeros(3, 2), Tensor.zeros(3, 2), new int[] {1, 2}, new int[] {2, 2}));
                return e.getMessage();
            }
            return assertThrows(CollectiveException.class,
                    () -> g.allToAllSingle(Tensor.zeros(2, 2), Tensor.zeros(2, 2), new int[] {1, 1}, new int[] {1, 1})).getMessage();
        });
        assertEquals("allToAllSingle on group 'world' (rank 0): inSplits [2, 2] sums to 4 rows but the tensor [3, 2] has 3",
                messages.get(0));
        assertTrue(messages.get(1).contains("rank 0 called allToAllSingle with bad arguments: inSplits [2, 2] sums to 4"),
                messages.get(1));
    }

    @Test
    void anAllToAllInPlaceIsRejected() {
        String m = assertThrows(IllegalArgumentException.class, () -> Distributed.run(1, SHORT, g -> {
            Tensor t = Tensor.zeros(4, 2);
            g.allToAllSingle(t.rows(1, 3), t.rows(0, 2), new int[] {2}, new int[] {2});
            return null;
        })).getMessage();
        assertEquals("allToAllSingle on group 'world' (rank 0): out [2, 2] and in [2, 2] share memory; it cannot run in place", m);
    }

    private static void assertNoRankThreadLeft() {
        for (Thread t : Thread.getAllStackTraces().keySet()) {
            assertTrue(!t.getName().startsWith("moe4j-rank-") || !t.isAlive(), "thread left behind: " + t.getName());
        }
    }
}
