package moe4j.nn;

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
     * routing weight, scatter-added into token {@code tokenOfRow[i]} of a ({@code tokens}, D) result.
     */
    public Tensor weightAndCombine(Tensor rows, Tensor weights, int tokens) {
        Tensor rowWeights = Ops.indexSelect(Ops.reshape(weights, -1, 1), entryOfRow);
        return Ops.indexAdd(tokens, tokenOfRow, Ops.mulRows(rows, rowWeights));
    }

    /**
     * Stable sort of the kept entries of {@code indices_TK} by global expert id, on the indices' device.
     * The per-expert counts come back to the host: they size the dispatch (and its all-to-all), the one
     * small copy a dispatch makes.
     */
    public static Routing sortByExpert(Tensor indices, int numExperts) {
        Device device = indices.device();
        int n = Math.toIntExact(indices.numel());
        Tensor entryOfRow = Tensor.zeros(device, DType.I32, n);
        Tensor tokenOfRow = Tensor.zeros(device, DType.I32, n);
        Tensor counts = Tensor.zeros(device, DType.I32, numExperts);
        Kernels.of(device).routing().groupByExpert(indices, numExperts, entryOfRow, tokenOfRow, counts);
        int[] rowsPerExpert = counts.to(Device.CPU).toIntArray();
        int kept = 0;
        for (int c : rowsPerExpert) kept += c;
        // the grouping kernel writes token and entry numbers of indices_TK only: no range check needed downstream
        return new Routing(tokenOfRow.rows(0, kept).markIndicesBelow(indices.dim(0)), entryOfRow.rows(0, kept).markIndicesBelow(n),
                rowsPerExpert);
    }
}
