package moe4j.kernels.cpu;

import java.lang.foreign.MemorySegment;
import moe4j.kernels.MatmulKernels;
import moe4j.tensor.Tensor;

/** {@link Gemm} and {@link GroupedGemm} on tensors' host memory. */
final class CpuMatmul implements MatmulKernels {
    @Override
    public void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha, Tensor a, long aOff, int lda,
                     Tensor b, long bOff, int ldb, float beta, Tensor c, long cOff, int ldc) {
        Gemm.sgemm(transA, transB, m, n, k, alpha, a.data(), aOff, lda, b.data(), bOff, ldb, beta, c.data(), cOff, ldc);
    }

    @Override
    public void groupedGemm(int[] offsets, int k, int n, Tensor x, Tensor[] w, long[] wOff, boolean transW, Tensor y, float beta) {
        GroupedGemm.forward(w.length, offsets, k, n, x.data(), 0, segments(w), wOff, transW, y.data(), 0, beta);
    }

    @Override
    public void groupedWeightGrad(int[] offsets, int k, int n, Tensor x, Tensor dy, Tensor[] dw, long[] dwOff, float beta) {
        GroupedGemm.weightGrad(dw.length, offsets, k, n, x.data(), 0, dy.data(), 0, segments(dw), dwOff, beta);
    }

    private static MemorySegment[] segments(Tensor[] ts) {
        MemorySegment[] segs = new MemorySegment[ts.length];
        for (int i = 0; i < ts.length; i++) segs[i] = ts[i].data();
        return segs;
    }
}
