package moe4j.ops;

import static org.junit.jupiter.api.Assertions.*;

import java.util.Arrays;
import java.util.Comparator;
import moe4j.tensor.Rng;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class IntOpsTest {
    /** Reference: sort (key, position) pairs lexicographically, which is stable by construction. */
    static int[] argsortReference(int[] keys) {
        int[][] pairs = new int[keys.length][];
        for (int i = 0; i < keys.length; i++) pairs[i] = new int[] {keys[i], i};
        Arrays.sort(pairs, Comparator.<int[]>comparingInt(p -> p[0]).thenComparingInt(p -> p[1]));
        int[] order = new int[keys.length];
        for (int i = 0; i < keys.length; i++) order[i] = pairs[i][1];
        return order;
    }

    static int[] randomKeys(Rng r, int n, int bound) {
        int[] k = new int[n];
        for (int i = 0; i < n; i++) k[i] = r.nextInt(bound);
        return k;
    }

    @ParameterizedTest(name = "n = {0}")
    @ValueSource(ints = {0, 1, 7, 100, 1000})
    void boundedArgsortIsStableAndSorts(int n) {
        // few distinct keys: most keys are repeated, so stability is exercised
        int[] keys = randomKeys(new Rng(n), n, 5);
        assertArrayEquals(argsortReference(keys), IntOps.stableArgsort(keys, 5));
    }

    @Test
    void boundedArgsortAcceptsEmptyBins() {
        int[] keys = {7, 0, 7, 3, 0};
        assertArrayEquals(new int[] {1, 4, 3, 0, 2}, IntOps.stableArgsort(keys, 10));
    }

    @ParameterizedTest(name = "n = {0}")
    @ValueSource(ints = {0, 1, 7, 100, 1000})
    void generalArgsortIsStableAndSortsAnyRange(int n) {
        Rng r = new Rng(100 + n);
        int[] keys = new int[n];
        int[] pool = {Integer.MIN_VALUE, -5, -1, 0, 3, 1 << 20, Integer.MAX_VALUE};
        for (int i = 0; i < n; i++) keys[i] = pool[r.nextInt(pool.length)];
        assertArrayEquals(argsortReference(keys), IntOps.stableArgsort(keys));
    }

    @Test
    void bothArgsortsAgreeOnBoundedKeys() {
        int[] keys = randomKeys(new Rng(3), 500, 17);
        assertArrayEquals(IntOps.stableArgsort(keys), IntOps.stableArgsort(keys, 17));
    }

    @Test
    void boundedArgsortRefusesKeysOutOfRange() {
        var e = assertThrows(IllegalArgumentException.class, () -> IntOps.stableArgsort(new int[] {0, 4, 1}, 4));
        assertTrue(e.getMessage().contains("stableArgsort") && e.getMessage().contains("4")
                && e.getMessage().contains("[0, 4)"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> IntOps.stableArgsort(new int[] {-1}, 4));
    }

    @Test
    void bincountCountsEveryValue() {
        int[] values = randomKeys(new Rng(4), 300, 9);
        int[] want = new int[11];
        for (int v : values) want[v]++;
        assertArrayEquals(want, IntOps.bincount(values, 11));
        assertArrayEquals(new int[3], IntOps.bincount(new int[0], 3));
    }

    @Test
    void bincountRefusesValuesOutOfRangeAndNegativeBound() {
        var e = assertThrows(IllegalArgumentException.class, () -> IntOps.bincount(new int[] {1, 2, -3}, 3));
        assertTrue(e.getMessage().contains("bincount") && e.getMessage().contains("-3")
                && e.getMessage().contains("position 2"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> IntOps.bincount(new int[0], -1));
        assertTrue(e.getMessage().contains("bincount") && e.getMessage().contains("-1"), e.getMessage());
    }

    @Test
    void inversePermutationUndoesThePermutation() {
        int n = 257;
        int[] perm = OpsTest.shuffled(new Rng(5), n);
        int[] inv = IntOps.inversePermutation(perm);
        for (int i = 0; i < n; i++) {
            assertEquals(i, inv[perm[i]]);
            assertEquals(i, perm[inv[i]]);
        }
        assertArrayEquals(new int[0], IntOps.inversePermutation(new int[0]));
    }

    @Test
    void inversePermutationRefusesNonPermutations() {
        var e = assertThrows(IllegalArgumentException.class, () -> IntOps.inversePermutation(new int[] {0, 2, 2}));
        assertTrue(e.getMessage().contains("inversePermutation") && e.getMessage().contains("value 2")
                && e.getMessage().contains("position 2"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> IntOps.inversePermutation(new int[] {0, 3, 1}));
        assertTrue(e.getMessage().contains("value 3"), e.getMessage());
    }
}
