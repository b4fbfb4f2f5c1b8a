package moe4j.nn;

import moe4j.ops.IntOps;
import moe4j.ops.Ops;
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
     * routing weight, scatter-added into token {@code tokenOfRow[i]} of a ({@code tokens}, D) result.
     */
    public Tensor weightAndCombine(Tensor rows, Tensor weights, int tokens) {
        Tensor rowWeights = Ops.indexSelect(Ops.reshape(weights, -1, 1), entryOfRow);
        return Ops.indexAdd(tokens, tokenOfRow, Ops.mulRows(rows, rowWeights));
    }

    /** Stable sort of the kept entries of {@code indices_TK} by global expert id. */
    public static Routing sortByExpert(Tensor indices, int numExperts) {
        int k = indices.rank() == 2 ? indices.dim(1) : 1;
        int[] flat = indices.toIntArray();
        int kept = 0;
        for (int v : flat) {
            if (v >= numExperts || v < -1) {
                throw new IllegalArgumentException("routing: expert id " + v + " outside [0, " + numExperts + ") (or -1 for a dropped entry)");
            }
            if (v >= 0) kept++;
        }
        int[] keptEntries = new int[kept];
        int[] keptExperts = new int[kept];
        int j = 0;
        for (int i = 0; i < flat.length; i++) {
            if (flat[i] >= 0) {
                keptEntries[j] = i;
                keptExperts[j++] = flat[i];
            }
        }
        int[] order = IntOps.stableArgsort(keptExperts, numExperts);
        int[] entryOfRow = new int[kept];
        int[] tokenOfRow = new int[kept];
        for (int r = 0; r < kept; r++) {
            entryOfRow[r] = keptEntries[order[r]];
            tokenOfRow[r] = entryOfRow[r] / k;
        }
        return new Routing(Tensor.ofInts(tokenOfRow, kept), Tensor.ofInts(entryOfRow, kept),
                IntOps.bincount(keptExperts, numExperts));
    }
}
