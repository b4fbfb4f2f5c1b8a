package moe4j.kernels.cpu;

import java.lang.foreign.MemorySegment;
import moe4j.kernels.IndexKernels;
import moe4j.tensor.Tensor;

/** Row gather/scatter-add through {@link RowCopy}; column gathers as plain loops; the weighted combine row by row. */
final class CpuIndexing implements IndexKernels {
    @Override
    public void checkIndices(Tensor idx, int bound, String op) {
        for (long i = 0; i < idx.numel(); i++) {
            int v = idx.getInt(i);
            if (v < 0 || v >= bound) {
                throw new IllegalArgumentException(op + ": index " + v + " at position " + i + " outside [0, " + bound + ")");
            }
        }
    }

    @Override
    public void gatherRows(Tensor src, Tensor idx, Tensor dst) {
        RowCopy.gather(src.data(), src.rowWidth(), idx.toIntArray(), dst.data());
    }

    @Override
    public void scatterAddRows(Tensor src, Tensor idx, Tensor dst) {
        RowCopy.scatterAdd(src.data(), dst.rowWidth(), idx.toIntArray(), dst.data());
    }

    @Override
    public void gatherColumns(Tensor a, Tensor idx, Tensor out) {
        int n = a.dim(0);
        int d = a.dim(1);
        int k = idx.dim(1);
        for (int i = 0; i < n; i++) {
            for (int s = 0; s < k; s++) out.set((long) i * k + s, a.get((long) i * d + idx.getInt((long) i * k + s)));
        }
    }

    @Override
    public void scatterAddColumns(Tensor g, Tensor idx, Tensor gradIn) {
        int n = gradIn.dim(0);
        int d = gradIn.dim(1);
        int k = idx.dim(1);
        for (int i = 0; i < n; i++) {
            for (int s = 0; s < k; s++) {
                long at = (long) i * d + idx.getInt((long) i * k + s);
                gradIn.set(at, gradIn.get(at) + g.get((long) i * k + s));
            }
        }
    }

    @Override
    public void weightedCombine(Tensor rows, Tensor weights, Tensor entryOfRow, Tensor out) {
        int k = weights.dim(1);
        int d = out.rowWidth();
        int[] entries = distinctEntries(entryOfRow, Math.toIntExact(weights.numel()));
        MemorySegment dst = out.data();
        dst.fill((byte) 0);
        // row by row in ascending order into each row's token: a token's sum sees its rows in that order
        for (int i = 0; i < entries.length; i++) {
            int e = entries[i];
            Elementwise.addProduct(d, weights.get(e), rows.data(), (long) i * d, dst, (long) (e / k) * d);
        }
    }

    @Override
    public void weightedCombineBackward(Tensor gradOut, Tensor rows, Tensor weights, Tensor entryOfRow, Tensor gradRows,
                                        Tensor gradWeights) {
        int k = weights.dim(1);
        int d = gradOut.rowWidth();
        int[] entries = distinctEntries(entryOfRow, Math.toIntExact(weights.numel()));
        if (gradWeights != null) gradWeights.data().fill((byte) 0);
        for (int i = 0; i < entries.length; i++) {
            int e = entries[i];
            long token = (long) (e / k) * d;
            if (gradRows != null) Elementwise.scale(d, weights.get(e), gradOut.data(), token, gradRows.data(), (long) i * d);
            // 0 + dot: a dot that rounds to −0 is stored as +0, like every other sum into a zeroed gradient
            if (gradWeights != null) gradWeights.set(e, 0f + (float) CpuReductions.dot(d, gradOut, token, rows, (long) i * d));
        }
    }

    /**
     * The entries of {@code entryOfRow}, checked to lie in [0, entries) and to appear at most once (a
     * combine reads each routing weight for one row).
     */
    private static int[] distinctEntries(Tensor entryOfRow, int entries) {
        int[] e = entryOfRow.toIntArray();
        boolean[] seen = new boolean[entries];
        for (int i = 0; i < e.length; i++) {
            if (e[i] < 0 || e[i] >= entries) {
                throw new IllegalArgumentException("weightedCombine: entry " + e[i] + " of row " + i + " outside [0, " + entries + ")");
            }
            if (seen[e[i]]) throw new IllegalArgumentException("weightedCombine: entry " + e[i] + " appears twice (again at row " + i + ")");
            seen[e[i]] = true;
        }
        return e;
    }
}
