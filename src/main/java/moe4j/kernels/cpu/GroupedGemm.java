package moe4j.kernels.cpu;

import java.lang.foreign.MemorySegment;

/** Ragged grouped GEMM (first version: one GEMM call per non-empty group). */
public final class GroupedGemm {
    private GroupedGemm() {}

    public static void forward(int groups, int[] offsets, int k, int n, MemorySegment x, long xOff,
                               MemorySegment[] w, long[] wOff, boolean transW, MemorySegment y, long yOff, float beta) {
        for (int g = 0; g < groups; g++) {
            int rows = offsets[g + 1] - offsets[g];
            if (rows == 0) continue;
            Gemm.sgemm(false, transW, rows, n, k, 1f, x, xOff + (long) offsets[g] * k, k,
                    w[g], wOff[g], transW ? k : n, beta, y, yOff + (long) offsets[g] * n, n);
        }
    }

    public static void weightGrad(int groups, int[] offsets, int k, int n, MemorySegment x, long xOff,
                                  MemorySegment dy, long dyOff, MemorySegment[] dw, long[] dwOff, float beta) {
        for (int g = 0; g < groups; g++) {
            int rows = offsets[g + 1] - offsets[g];
            Gemm.sgemm(true, false, k, n, rows, 1f, x, xOff + (long) offsets[g] * k, k,
                    dy, dyOff + (long) offsets[g] * n, n, beta, dw[g], dwOff[g], n);
        }
    }
}
