package moe4j.kernels.cpu;

import static moe4j.kernels.cpu.GemmReference.F;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import moe4j.tensor.Rng;
import org.junit.jupiter.api.Test;

class Transpose16Test {
    @Test
    void blockIsTheTransposeAndTouchesNothingElse() {
        assumeTrue(Transpose16.SUPPORTED, "needs 16-lane vectors");
        try (Arena arena = Arena.ofConfined()) {
            int ld = 37, src = 5, d = 3, stride = 48;
            MemorySegment b = GemmReference.random(arena, new Rng(4), src + 16L * ld);
            float[] dst = new float[d + 16 * stride];
            Arrays.fill(dst, -7f);
            Transpose16.block(b, src, ld, dst, d, stride);
            for (int q = 0; q < 16; q++) {
                for (int j = 0; j < stride; j++) {
                    float expected = j < 16 ? b.getAtIndex(F, src + (long) j * ld + q) : -7f;
                    assertEquals(expected, dst[d + q * stride + j], "dst row " + q + " col " + j);
                }
            }
            for (int i = 0; i < d; i++) assertEquals(-7f, dst[i]);
        }
    }
}
