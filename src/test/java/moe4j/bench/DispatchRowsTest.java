package moe4j.bench;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

import org.junit.jupiter.api.Test;

/** The row counts bench ep reports for the dispatch, with and without one row per token and destination rank. */
class DispatchRowsTest {
    @Test
    void countsEntriesAndTokenDestinationPairsLeavingTheRank() {
        // 4 experts on 2 ranks (rank 0 owns 0 and 1), K = 2; -1 is a dropped entry
        int[] indices = {0, 1, 2, 3, 1, 3, -1, 2};
        // token 0 stays; token 1 sends two rows to rank 1 (one deduplicated); tokens 2 and 3 one each
        assertArrayEquals(new long[] {4, 3}, ExpertParallelBenchmark.dispatchRowsToPeers(indices, 2, 4, 2, 0));
        // from rank 1's side the same routing sends experts 0 and 1 away
        assertArrayEquals(new long[] {3, 2}, ExpertParallelBenchmark.dispatchRowsToPeers(indices, 2, 4, 2, 1));
    }
}
