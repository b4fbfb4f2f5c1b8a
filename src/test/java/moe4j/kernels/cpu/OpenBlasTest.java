package moe4j.kernels.cpu;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import moe4j.tensor.Rng;
import org.junit.jupiter.api.Test;

class OpenBlasTest {
    @Test
    void agreesWithReferenceAndGemmInAllLayouts() {
        assumeTrue(OpenBlas.isAvailable(), () -> "skipped: " + OpenBlas.unavailableReason());
        Rng rng = new Rng(17);
        int m = 37, n = 70, k = 300;
        for (int layout = 0; layout < 4; layout++) {
            boolean ta = (layout & 1) != 0, tb = (layout & 2) != 0;
            try (Arena arena = Arena.ofConfined()) {
                int lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 2, ldc = n + 3;
                MemorySegment a = GemmReference.random(arena, rng, 1 + (long) (ta ? k : m) * lda);
                MemorySegment b = GemmReference.random(arena, rng, 1 + (long) (tb ? n : k) * ldb);
                MemorySegment c0 = GemmReference.random(arena, rng, 1 + (long) m * ldc);
                MemorySegment cBlas = GemmReference.copy(arena, c0), cOurs = GemmReference.copy(arena, c0);
                OpenBlas.sgemm(ta, tb, m, n, k, 0.5f, a, 1, lda, b, 1, ldb, 2f, cBlas, 1, ldc);
                Gemm.sgemm(ta, tb, m, n, k, 0.5f, a, 1, lda, b, 1, ldb, 2f, cOurs, 1, ldc);
                String what = "layout " + (ta ? "T" : "N") + (tb ? "T" : "N");
                GemmReference.check("OpenBLAS " + what, ta, tb, m, n, k, 0.5f, a, 1, lda, b, 1, ldb, 2f, c0, cBlas, 1, ldc);
                GemmReference.check("moe4j " + what, ta, tb, m, n, k, 0.5f, a, 1, lda, b, 1, ldb, 2f, c0, cOurs, 1, ldc);
            }
        }
    }
}
