package moe4j.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import moe4j.tensor.Rng;

/** Float64 reference GEMM and test-data helpers shared by the kernel tests. */
final class GemmReference {
    private GemmReference() {}

    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT;

    /** A segment of {@code count} floats, uniform in [-1, 1). */
    static MemorySegment random(Arena arena, Rng rng, long count) {
        MemorySegment s = arena.allocate(Math.max(1, count) * Float.BYTES, 64);
        for (long i = 0; i < count; i++) s.setAtIndex(F, i, (float) (rng.nextDouble() * 2 - 1));
        return s;
    }

    static MemorySegment copy(Arena arena, MemorySegment src) {
        MemorySegment s = arena.allocate(src.byteSize(), 64);
        s.copyFrom(src);
        return s;
    }

    /**
     * Checks C (after the kernel) against alpha·op(A)·op(B) + beta·C0 computed in float64. The tolerance
     * is the standard bound for a float32 sum of k products: (k + 2)·u·Σ|terms|, u = 2⁻²⁴, plus a tiny
     * absolute floor. Elements outside the m×n block (padding between ld and the width) must be unchanged.
     */
    static void check(String what, boolean transA, boolean transB, int m, int n, int k, float alpha,
                      MemorySegment a, long aOff, int lda, MemorySegment b, long bOff, int ldb,
                      float beta, MemorySegment c0, MemorySegment c, long cOff, int ldc) {
        double u = Math.ulp(1f) / 2;
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                double sum = 0, abs = 0;
                for (int p = 0; p < k; p++) {
                    double av = transA ? a.getAtIndex(F, aOff + (long) p * lda + i) : a.getAtIndex(F, aOff + (long) i * lda + p);
                    double bv = transB ? b.getAtIndex(F, bOff + (long) j * ldb + p) : b.getAtIndex(F, bOff + (long) p * ldb + j);
                    sum += av * bv;
                    abs += Math.abs(av * bv);
                }
                long ci = cOff + (long) i * ldc + j;
                double old = beta == 0f ? 0 : beta * (double) c0.getAtIndex(F, ci);
                double expected = alpha * sum + old;
                double tol = (k + 3) * u * (Math.abs(alpha) * abs + Math.abs(old)) + 1e-30;
                float got = c.getAtIndex(F, ci);
                if (!(Math.abs(got - expected) <= tol)) {
                    throw new AssertionError(what + ": C[" + i + "][" + j + "] = " + got + ", expected " + expected
                            + " ± " + tol);
                }
            }
        }
        // nothing outside the block may change
        long total = c.byteSize() / Float.BYTES;
        for (long idx = 0; idx < total; idx++) {
            long rel = idx - cOff;
            boolean inside = rel >= 0 && rel / ldc < m && rel % ldc < n;
            if (!inside) {
                float before = c0.getAtIndex(F, idx), after = c.getAtIndex(F, idx);
                assertTrue(Float.compare(before, after) == 0,
                        what + ": element " + idx + " outside C's block changed from " + before + " to " + after);
            }
        }
    }
}
