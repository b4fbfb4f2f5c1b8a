package moe4j.kernels.cpu;

import moe4j.kernels.IndexKernels;
import moe4j.tensor.Tensor;

/** Row gather/scatter-add through {@link RowCopy}; column gathers as plain loops. */
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
}
