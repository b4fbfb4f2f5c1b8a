package moe4j.kernels.cpu;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Single-precision GEMM on off-heap row-major matrices:
 * {@code C = alpha · op(A) · op(B) + beta · C}, with {@code op(X)} = X or Xᵀ.
 * Offsets and leading dimensions are in elements (floats).
 */
public final class Gemm {
    private Gemm() {}

    private static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT;

    public static void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                             MemorySegment a, long aOff, int lda,
                             MemorySegment b, long bOff, int ldb,
                             float beta, MemorySegment c, long cOff, int ldc) {
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                float acc = 0;
                for (int p = 0; p < k; p++) {
                    float av = transA ? a.getAtIndex(F, aOff + (long) p * lda + i) : a.getAtIndex(F, aOff + (long) i * lda + p);
                    float bv = transB ? b.getAtIndex(F, bOff + (long) j * ldb + p) : b.getAtIndex(F, bOff + (long) p * ldb + j);
                    acc += av * bv;
                }
                long ci = cOff + (long) i * ldc + j;
                float prev = beta == 0f ? 0f : beta * c.getAtIndex(F, ci);
                c.setAtIndex(F, ci, alpha * acc + prev);
            }
        }
    }
}
