package moe4j.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

/** The CPU routing kernels against plain references written from their definitions. */
class RoutingKernelsTest {
    static final RoutingKernels K = Kernels.of(Device.CPU).routing();

    static int[] randomIds(Rng rng, int n, int bound, boolean withDropped) {
        int[] v = new int[n];
        for (int i = 0; i < n; i++) v[i] = withDropped && rng.nextDouble() < 0.2 ? -1 : (int) (rng.nextDouble() * bound);
        return v;
    }

    @Test
    void bincountAndStableArgsortMatchTheirDefinitions() {
        Rng rng = new Rng(5);
        int bound = 7;
        int[] keys = randomIds(rng, 101, bound, false);
        Tensor counts = Tensor.zeros(DType.I32, bound);
        K.bincount(Tensor.ofInts(keys, keys.length), counts);
        int[] expected = new int[bound];
        for (int v : keys) expected[v]++;
        assertArrayEquals(expected, counts.toIntArray());

        Tensor order = Tensor.zeros(DType.I32, keys.length);
        K.stableArgsort(Tensor.ofInts(keys, keys.length), bound, order);
        List<Integer> ref = new ArrayList<>();
        for (int i = 0; i < keys.length; i++) ref.add(i);
        ref.sort(Comparator.comparingInt(i -> keys[i])); // List.sort is stable
        assertArrayEquals(ref.stream().mapToInt(Integer::intValue).toArray(), order.toIntArray());
    }

    @Test
    void inversePermutationInvertsAndRejectsNonPermutations() {
        int[] perm = {3, 0, 4, 1, 2};
        Tensor inv = Tensor.zeros(DType.I32, 5);
        K.inversePermutation(Tensor.ofInts(perm, 5), inv);
        int[] v = inv.toIntArray();
        for (int i = 0; i < 5; i++) assertTrue(v[perm[i]] == i);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> K.inversePermutation(Tensor.ofInts(new int[] {0, 0, 1}, 3), Tensor.zeros(DType.I32, 3)));
        assertTrue(e.getMessage().contains("value 0 at position 1"), e.getMessage());
    }

    @Test
    void groupByExpertSortsKeptEntriesByExpertAndDroppedOnesLast() {
        Rng rng = new Rng(9);
        int t = 23, k = 3, experts = 5;
        int[] ids = randomIds(rng, t * k, experts, true);
        Tensor entry = Tensor.zeros(DType.I32, t * k);
        Tensor token = Tensor.zeros(DType.I32, t * k);
        Tensor counts = Tensor.zeros(DType.I32, experts);
        K.groupByExpert(Tensor.ofInts(ids, t, k), experts, entry, token, counts);
        // reference: entries ordered by (expert, entry), the dropped ones (id −1) after all experts
        List<Integer> ref = new ArrayList<>();
        for (int i = 0; i < ids.length; i++) ref.add(i);
        ref.sort(Comparator.comparingInt(i -> ids[i] < 0 ? experts : ids[i]));
        int[] expectedEntry = ref.stream().mapToInt(Integer::intValue).toArray();
        int[] expectedToken = new int[expectedEntry.length];
        for (int r = 0; r < expectedEntry.length; r++) expectedToken[r] = expectedEntry[r] / k;
        int[] expectedCounts = new int[experts];
        for (int v : ids) if (v >= 0) expectedCounts[v]++;
        assertArrayEquals(expectedEntry, entry.toIntArray());
        assertArrayEquals(expectedToken, token.toIntArray());
        assertArrayEquals(expectedCounts, counts.toIntArray());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> K.groupByExpert(
                Tensor.ofInts(new int[] {0, 5}, 1, 2), experts, Tensor.zeros(DType.I32, 2), Tensor.zeros(DType.I32, 2),
                Tensor.zeros(DType.I32, experts)));
        assertTrue(e.getMessage().contains("expert id 5 outside [0, 5)"), e.getMessage());
    }

    @Test
    void firstSlotPerRankMarksEachTokenAndOwnerOnceAndLocalExpertsKeepsOneBlock() {
        Rng rng = new Rng(17);
        int t = 23, k = 4, e = 12, perRank = 3;
        int[] ids = randomIds(rng, t * k, e, true);
        Tensor indices = Tensor.ofInts(ids, t, k);
        Tensor first = Tensor.zeros(DType.I32, t, k);
        K.firstSlotPerRank(indices, perRank, first);
        int[] expected = new int[t * k];
        for (int i = 0; i < t; i++) {
            for (int s = 0; s < k; s++) {
                int v = ids[i * k + s];
                boolean repeat = false;
                for (int j = 0; j < s; j++) repeat |= v >= 0 && ids[i * k + j] >= 0 && ids[i * k + j] / perRank == v / perRank;
                expected[i * k + s] = v < 0 || repeat ? -1 : v / perRank;
            }
        }
        assertArrayEquals(expected, first.toIntArray());
        assertThrows(IllegalArgumentException.class, () -> K.firstSlotPerRank(Tensor.ofInts(new int[] {0, -2}, 1, 2), perRank,
                Tensor.zeros(DType.I32, 1, 2)));

        Tensor local = Tensor.zeros(DType.I32, t, k);
        K.localExperts(indices, 6, 3, local);
        for (int i = 0; i < t * k; i++) {
            assertTrue(local.toIntArray()[i] == (ids[i] >= 6 && ids[i] < 9 ? ids[i] - 6 : -1), "entry " + i + " id " + ids[i]);
        }
    }

    @Test
    void dropOverCapacityKeepsTheFirstTokensPerSlotAndExpert() {
        Rng rng = new Rng(13);
        int t = 31, k = 2, experts = 4, capacity = 5;
        int[] ids = randomIds(rng, t * k, experts, false);
        Tensor out = Tensor.zeros(DType.I32, t, k);
        K.dropOverCapacity(Tensor.ofInts(ids, t, k), experts, capacity, out);
        int[] expected = ids.clone();
        for (int s = 0; s < k; s++) {
            for (int e = 0; e < experts; e++) {
                int seen = 0;
                for (int i = 0; i < t; i++) {
                    if (ids[i * k + s] == e && ++seen > capacity) expected[i * k + s] = -1;
                }
            }
        }
        assertArrayEquals(expected, out.toIntArray());
    }

    @Test
    void topKPrefersLargerValuesThenLowerColumns() {
        Tensor a = Tensor.of(new float[] {1, 3, 3, 2, Float.NaN, 0}, 2, 3);
        Tensor idx = Tensor.zeros(DType.I32, 2, 2);
        K.topK(a, idx);
        assertArrayEquals(new int[] {1, 2, 0, 2}, idx.toIntArray());
    }
}
