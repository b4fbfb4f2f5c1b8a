package moe4j.ops;

import java.util.Arrays;

/** Integer helpers of the routing path: stable argsort, bincount, inverse permutation. Never differentiable. */
public final class IntOps {
    private IntOps() {}

    /**
     * Indices that sort {@code keys} ascending, equal keys keeping their original order. Keys in
     * {@code [0, bound)} take a counting sort (linear, the common case of expert ids).
     */
    public static int[] stableArgsort(int[] keys, int bound) {
        int[] counts = bincount(keys, bound, "stableArgsort");
        int[] next = new int[bound];
        for (int b = 1; b < bound; b++) next[b] = next[b - 1] + counts[b - 1];
        int[] order = new int[keys.length];
        for (int i = 0; i < keys.length; i++) order[next[keys[i]]++] = i;
        return order;
    }

    /** Indices that sort {@code keys} ascending, stably, for keys of any range. */
    public static int[] stableArgsort(int[] keys) {
        Integer[] boxed = new Integer[keys.length];
        for (int i = 0; i < keys.length; i++) boxed[i] = i;
        Arrays.sort(boxed, (a, b) -> Integer.compare(keys[a], keys[b])); // TimSort is stable
        int[] order = new int[keys.length];
        for (int i = 0; i < keys.length; i++) order[i] = boxed[i];
        return order;
    }

    /** counts[v] = number of occurrences of v, for values in {@code [0, bound)}. */
    public static int[] bincount(int[] values, int bound) {
        return bincount(values, bound, "bincount");
    }

    /** {@link #bincount(int[], int)} with errors reported as {@code op}'s. */
    private static int[] bincount(int[] values, int bound, String op) {
        if (bound < 0) throw new IllegalArgumentException(op + ": bound must be >= 0, got " + bound);
        int[] counts = new int[bound];
        for (int i = 0; i < values.length; i++) {
            int v = values[i];
            if (v < 0 || v >= bound) {
                throw new IllegalArgumentException(op + ": value " + v + " at position " + i + " outside [0, " + bound + ")");
            }
            counts[v]++;
        }
        return counts;
    }

    /** inv[perm[i]] = i; {@code perm} must be a permutation of {@code [0, n)}. */
    public static int[] inversePermutation(int[] perm) {
        int[] inv = new int[perm.length];
        Arrays.fill(inv, -1);
        for (int i = 0; i < perm.length; i++) {
            int p = perm[i];
            if (p < 0 || p >= perm.length || inv[p] != -1) {
                throw new IllegalArgumentException("inversePermutation: not a permutation of [0, " + perm.length
                        + "): value " + p + " at position " + i);
            }
            inv[p] = i;
        }
        return inv;
    }
}
