package moe4j.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import moe4j.kernels.Kernels;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

/**
 * The CPU's element-type conversion against a reference that picks the nearer of the two bf16 neighbours
 * of each value in double arithmetic (ties to the even one), over random values of many magnitudes and
 * the special ones; widening back is exact.
 */
class ConvertKernelTest {
    @Test
    void f32ToBf16RoundsToNearestEvenAndWidensExactly() {
        Rng rng = new Rng(4);
        int n = 4096;
        Tensor x = Tensor.zeros(n);
        for (int i = 0; i < n; i++) x.set(i, (float) (rng.nextGaussian() * Math.pow(2, rng.nextInt(60) - 30)));
        float[] special = {0f, -0f, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, Float.MAX_VALUE, -Float.MAX_VALUE,
            Float.MIN_VALUE, 0x1p-130f, 1f + 0x1p-8f, 1f + 0x1p-8f + 0x1p-9f, 1f + 0x1p-7f + 0x1p-8f, -(1f + 0x1p-8f)};
        for (int i = 0; i < special.length; i++) x.set(i, special[i]);
        Tensor bf16 = Tensor.zeros(DType.BF16, n);
        Kernels cpu = Kernels.of(Device.CPU);
        cpu.elementwise().convert(x, bf16);
        Tensor back = Tensor.zeros(n);
        cpu.elementwise().convert(bf16, back);
        for (int i = 0; i < n; i++) {
            float v = x.get(i);
            assertEquals(Float.floatToIntBits(nearestBf16(v)), Float.floatToIntBits(back.get(i)), "element " + i + ": " + v);
        }
        // ties: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 and goes to the even 1; 1 + 2^-7 + 2^-8 goes up to 1 + 2^-6
        assertEquals(1f, back.get(8));
        assertEquals(1f + 0x1p-6f, back.get(10));
        assertEquals(Float.POSITIVE_INFINITY, back.get(4), "the largest float rounds past bf16's largest finite value");

        Tensor nan = Tensor.of(new float[] {Float.NaN}, 1);
        Tensor nanBits = Tensor.zeros(DType.BF16, 1);
        cpu.elementwise().convert(nan, nanBits);
        Tensor nanBack = Tensor.zeros(1);
        cpu.elementwise().convert(nanBits, nanBack);
        assertTrue(Float.isNaN(nanBack.get(0)));

        Tensor same = Tensor.zeros(n);
        cpu.elementwise().convert(x, same);
        assertArrayEquals(x.toFloatArray(), same.toFloatArray(), "the same type is a copy");
    }

    /** The bf16 value nearest to v (ties to an even last bit), as a float; infinity beyond the largest finite bf16. */
    static float nearestBf16(float v) {
        if (Float.isNaN(v) || Float.isInfinite(v)) return v;
        int bits = Float.floatToRawIntBits(v);
        float below = Float.intBitsToFloat(bits & 0xFFFF0000); // toward zero
        int aboveBits = (bits & 0xFFFF0000) + 0x10000;          // away from zero (may reach infinity)
        float above = Float.intBitsToFloat(aboveBits);
        double dBelow = Math.abs((double) v - below);
        // past the largest finite bf16 the next step is 2^128, which rounds to infinity
        double dAbove = Math.abs((Float.isInfinite(above) ? Math.copySign(0x1p128, v) : (double) above) - v);
        if (dBelow < dAbove) return below;
        if (dAbove < dBelow) return above;
        return ((bits >>> 16) & 1) == 0 ? below : above;
    }
}
