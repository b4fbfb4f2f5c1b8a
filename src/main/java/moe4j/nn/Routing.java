package moe4j.nn;

import java.util.Arrays;
import moe4j.kernels.Kernels;
import moe4j.ops.Ops;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.Tensor;

/**
 * The kept (token, slot) entries of a routing decision in expert order: row i of the grouped layout is
 * entry {@code entryOfRow[i]} (flat index t·K + k), token {@code tokenOfRow[i]}; {@code rowsPerExpert[e]}
 * rows belong to global expert e. Entries with index −1 (dropped by capacity) are absent.
 */
public record Routing(Tensor tokenOfRow, Tensor entryOfRow, int[] rowsPerExpert) {

    public int rowCount() {
        return tokenOfRow.dim(0);
    }

    /**
     * The combine step: row i of {@code rows} (expert outputs in this routing's order) times its entry's
     * routing weight, summed into token {@code tokenOfRow[i]} of a (T, D) result for {@code weights} (T, K).
     */
    public Tensor weightAndCombine(Tensor rows, Tensor weights) {
        return Ops.weightedCombine(rows, weights, entryOfRow);
    }

    /**
     * Stable sort of the kept entries of {@code indices_TK} by global expert id, on the indices' device.
     * The per-expert counts come back to the host: they size the dispatch (and its all-to-all), the one
     * small copy a dispatch makes.
     */
    public static Routing sortByExpert(Tensor indices, int numExperts) {
        Tensor counts = Tensor.zeros(indices.device(), DType.I32, numExperts);
        Grouped grouped = group(indices, numExperts, counts);
        return grouped.kept(indices, counts.to(Device.CPU).toIntArray());
    }

    /**
     * The kept entries by expert ({@link #sortByExpert}) and, for a dispatch that sends each token once per
     * rank, the (token, rank) pairs: one row per token and rank that owns at least one of its kept entries
     * (expert e belongs to rank {@code e / (numExperts / ranks)}), by rank and then by token, as a routing
     * whose groups are the ranks ({@code byRank.rowsPerExpert()[r]} pairs for rank r, {@code tokenOfRow}
     * their tokens, {@code entryOfRow} the first entry of each pair). Both sets of counts come to the host
     * in the one copy a dispatch makes.
     */
    public static ByExpertAndRank sortByExpertAndRank(Tensor indices, int numExperts, int ranks) {
        if (ranks < 1 || numExperts % ranks != 0) {
            throw new IllegalArgumentException("sortByExpertAndRank: " + numExperts + " experts do not split over " + ranks + " ranks");
        }
        Device device = indices.device();
        Tensor counts = Tensor.zeros(device, DType.I32, numExperts + ranks);
        Grouped byExpert = group(indices, numExperts, counts.rows(0, numExperts));
        Tensor firstSlots = Tensor.zeros(device, DType.I32, indices.shape());
        Kernels.of(device).routing().firstSlotPerRank(indices, numExperts / ranks, firstSlots);
        Grouped byRank = group(firstSlots, ranks, counts.rows(numExperts, numExperts + ranks));
        int[] host = counts.to(Device.CPU).toIntArray();
        return new ByExpertAndRank(byExpert.kept(indices, Arrays.copyOfRange(host, 0, numExperts)),
                byRank.kept(firstSlots, Arrays.copyOfRange(host, numExperts, numExperts + ranks)));
    }

    /** The two groupings of {@link #sortByExpertAndRank}. */
    public record ByExpertAndRank(Routing byExpert, Routing byRank) {}

    /**
     * The stable grouping of {@code indices} (T, K) ids in [0, groups) or −1, whose group sizes the caller
     * already holds on the host ({@code rowsPerGroup}, e.g. from a count exchange): no copy to the host.
     */
    public static Routing groupWithKnownCounts(Tensor indices, int groups, int[] rowsPerGroup) {
        if (rowsPerGroup.length != groups) {
            throw new IllegalArgumentException("groupWithKnownCounts: " + rowsPerGroup.length + " group sizes for " + groups + " groups");
        }
        Tensor unread = Tensor.zeros(indices.device(), DType.I32, groups);
        return group(indices, groups, unread).kept(indices, rowsPerGroup);
    }

    /** Every entry of a (T, K) id tensor by group, −1 last: entry t·K + k and token t of each row. */
    private record Grouped(Tensor entryOfRow, Tensor tokenOfRow) {
        /** The rows holding a kept entry, given the host's copy of the group sizes. */
        Routing kept(Tensor indices, int[] rowsPerGroup) {
            int kept = 0;
            for (int c : rowsPerGroup) kept += c;
            // the grouping kernel writes token and entry numbers of indices only: no range check needed downstream
            return new Routing(tokenOfRow.rows(0, kept).markIndicesBelow(indices.dim(0)),
                    entryOfRow.rows(0, kept).markIndicesBelow(Math.toIntExact(indices.numel())), rowsPerGroup);
        }
    }

    /** Groups the entries of {@code indices} by value on their device, writing the group sizes into {@code counts} there. */
    private static Grouped group(Tensor indices, int groups, Tensor counts) {
        Device device = indices.device();
        int n = Math.toIntExact(indices.numel());
        Tensor entryOfRow = Tensor.zeros(device, DType.I32, n);
        Tensor tokenOfRow = Tensor.zeros(device, DType.I32, n);
        Kernels.of(device).routing().groupByExpert(indices, groups, entryOfRow, tokenOfRow, counts);
        return new Grouped(entryOfRow, tokenOfRow);
    }
}
