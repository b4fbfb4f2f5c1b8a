package moe4j.distributed;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

class SplitTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(20);

    @Test
    void splitGroupsByColorAndOrdersByKeyThenRank() {
        List<int[]> got = Distributed.run(6, TIMEOUT, g -> {
            int r = g.rank();
            // colors: even and odd ranks; keys reverse the order; rank 5 stays out
            ProcessGroup sub = g.split(r == 5 ? -1 : r % 2, -r, "parity");
            if (r == 5) {
                assertNull(sub);
                return new int[0];
            }
            Tensor t = Tensor.full(r, 1);
            sub.allReduce(t, ReduceOp.SUM);
            int[] members = sub.globalRanks();
            return new int[] {sub.rank(), sub.size(), (int) t.get(0), members[0], members[members.length - 1]};
        });
        assertArrayEquals(new int[] {2, 3, 6, 4, 0}, got.get(0));
        assertArrayEquals(new int[] {1, 2, 4, 3, 1}, got.get(1));
        assertArrayEquals(new int[] {1, 3, 6, 4, 0}, got.get(2));
        assertArrayEquals(new int[] {0, 2, 4, 3, 1}, got.get(3));
        assertArrayEquals(new int[] {0, 3, 6, 4, 0}, got.get(4));
    }

    @Test
    void subgroupOfListedRanksAndItsFailuresNameWorldRanks() {
        List<String> got = Distributed.run(4, Duration.ofSeconds(2), g -> {
            ProcessGroup sub = g.subgroup(new int[] {3, 1}, "pair");
            if (g.rank() % 2 == 0) {
                assertNull(sub);
                return "";
            }
            assertEquals(g.rank() == 3 ? 0 : 1, sub.rank());
            assertArrayEquals(new int[] {3, 1}, sub.globalRanks());
            if (g.rank() == 3) return "left"; // ends without the collective its peer makes
            return assertThrows(CollectiveException.class, sub::barrier).getMessage();
        });
        String m = got.get(1);
        assertTrue(m.startsWith("barrier on group 'pair' (rank 1 of 2, call #1): rank(s) [0] (world [3])"), m);
    }
}
