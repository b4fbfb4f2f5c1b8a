package moe4j.kernels;

import moe4j.tensor.Tensor;

/**
 * The integer side of routing, on int32 tensors of the device: top-k selection, counting, stable sorting
 * by expert and inverse permutations. A GPU computes these where the router's scores are, and only the
 * per-expert counts travel to the host (to size an all-to-all).
 */
public interface RoutingKernels {
    /** idx[i, s] = column of the s-th largest value of row i of a (N, D); ties go to the lower column, NaN last. */
    void topK(Tensor a, Tensor idx);

    /**
     * Group-limited selection (DeepSeek-V3's {@code n_group}, {@code topk_group}): the D columns of a (N, D)
     * form {@code groups} equal groups, each scored per row by the sum of its two largest values; out = a with
     * every column outside the row's best {@code topKGroups} groups set to −∞ (ties go to the lower group).
     * Groups hold at least two columns.
     */
    void limitToTopGroups(Tensor a, int groups, int topKGroups, Tensor out);

    /** counts[v] = occurrences of v in values, for values in [0, counts.numel()). */
    void bincount(Tensor values, Tensor counts);

    /** order = the indices that sort keys (in [0, bound)) ascending, equal keys in their original order. */
    void stableArgsort(Tensor keys, int bound, Tensor order);

    /** inv[perm[i]] = i for a permutation perm of [0, n). */
    void inversePermutation(Tensor perm, Tensor inv);

    /**
     * Groups the (token, slot) entries of {@code indices_TK} (global expert ids, −1 for an entry dropped
     * by capacity) by expert: {@code entryOfRow[r]} is the flat entry t·K + k of row r, in expert order
     * and, within an expert, in entry order; {@code tokenOfRow[r]} = entryOfRow[r] / K; dropped entries
     * come last. {@code counts[e]} (int32, numExperts) is the number of rows of expert e, so the first
     * Σ counts rows are the kept ones.
     *
     * @throws IllegalArgumentException for an id outside [0, numExperts) other than −1
     */
    void groupByExpert(Tensor indices, int numExperts, Tensor entryOfRow, Tensor tokenOfRow, Tensor counts);

    /**
     * For a dispatch that sends each token once per rank: {@code out[t, k]} = the rank that owns expert
     * {@code indices[t, k]} (expert e belongs to rank {@code e / expertsPerRank}) when no earlier kept slot of
     * token t goes to that rank, −1 otherwise (a repeat, or a dropped entry). Grouped by rank
     * ({@link #groupByExpert} with one group per rank), out lists every (token, rank) pair with at least
     * one kept entry exactly once, by rank and then by token.
     *
     * @throws IllegalArgumentException for an id below −1 (a device may report ids at or above E·ranks
     *         at the grouping instead)
     */
    void firstSlotPerRank(Tensor indices, int expertsPerRank, Tensor out);

    /**
     * {@code out[i] = indices[i] − first} for an expert id in [first, first + count), −1 for any other
     * (another rank's expert, or a dropped entry): routing decisions made on another rank, seen by the
     * local experts of the rank that owns [first, first + count).
     */
    void localExperts(Tensor indices, int first, int count, Tensor out);

    /**
     * out = indices_TK with, for each slot k and each expert, the entries beyond the first {@code capacity}
     * tokens (in token order) set to −1.
     */
    void dropOverCapacity(Tensor indices, int numExperts, int capacity, Tensor out);
}
