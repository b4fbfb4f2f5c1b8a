package moe4j.tensor;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * bf16 and f16 conversion against references computed here: bf16 by choosing between the two
 * neighbouring bf16 values in float64, f16 by rounding to the grid of half precision in float64.
 */
class DTypeConversionTest {
    /** Round-to-nearest-even to bf16, decided by comparing distances to both neighbours in float64. */
    static short bf16Reference(float v) {
        int bits = Float.floatToRawIntBits(v);
        int lo = bits & 0xFFFF0000; // truncation: the neighbour towards zero
        if ((bits & 0xFFFF) == 0) return (short) (lo >>> 16);
        int hi = lo + 0x10000; // the neighbour away from zero
        double loV = Float.intBitsToFloat(lo);
        // past the largest finite bf16 the next grid point would be 2^128: rounding there means infinity
        double hiV = (hi & 0x7FFFFFFF) == 0x7F800000 ? Math.copySign(0x1p128, v) : Float.intBitsToFloat(hi);
        double dLo = Math.abs(v - loV);
        double dHi = Math.abs(hiV - v);
        int pick = dLo < dHi ? lo : dHi < dLo ? hi : ((lo >>> 16) & 1) == 0 ? lo : hi;
        return (short) (pick >>> 16);
    }

    /** Round-to-nearest-even to f16: the grid step is 2^(e − 10) for exponent e ≥ −14, 2^−24 below. */
    static double f16Reference(float v) {
        double x = v;
        if (x == 0 || Double.isNaN(x) || Double.isInfinite(x)) return x;
        int e = Math.max(Math.getExponent(x), -14);
        double step = Math.scalb(1.0, e - 10);
        double r = Math.rint(x / step) * step; // rint rounds halves to even
        return Math.abs(r) > 65504 ? Math.copySign(Double.POSITIVE_INFINITY, x) : r;
    }

    static List<Float> testValues() {
        List<Float> v = new ArrayList<>();
        Rng r = new Rng(11);
        for (int i = 0; i < 20000; i++) {
            float f = Float.intBitsToFloat((int) r.nextLong());
            if (!Float.isNaN(f)) v.add(f);
        }
        for (int i = 0; i < 5000; i++) v.add((float) (r.nextGaussian() * Math.pow(10, r.nextInt(12) - 6)));
        // exact halfway cases for bf16, with even and odd kept parts, and near the overflow threshold
        for (int i = 0; i < 2000; i++) {
            float tie = Float.intBitsToFloat(((int) r.nextLong() & 0xFFFF0000) | 0x8000);
            if (!Float.isNaN(tie)) v.add(tie);
        }
        v.addAll(List.of(0f, -0f, Float.MIN_VALUE, -Float.MIN_VALUE, Float.MIN_NORMAL, Float.MAX_VALUE, -Float.MAX_VALUE,
                Float.intBitsToFloat(0x7F7F8000), Float.intBitsToFloat(0x7F7F7FFF), 1f, 1.00390625f, 1.005859375f,
                65504f, 65519.99f, 65520f, 6.1035156e-5f, 5.9604645e-8f, 2.9802322e-8f, 2.9802326e-8f, 1e-10f));
        return v;
    }

    @Test
    void bf16RoundsToNearestEven() {
        for (float v : testValues()) {
            short want = bf16Reference(v);
            assertEquals(want, DTypeConversion.floatToBf16(v),
                    () -> "bf16 of " + v + " (0x" + Integer.toHexString(Float.floatToRawIntBits(v)) + ")");
        }
        // ties: 1 + 2^-8 lies between 1 (even) and 1 + 2^-7 (odd); 1 + 3·2^-8 between odd and even 1 + 2^-6
        assertEquals(1f, DTypeConversion.bf16ToFloat(DTypeConversion.floatToBf16(1.00390625f)));
        assertEquals(1.015625f, DTypeConversion.bf16ToFloat(DTypeConversion.floatToBf16(1.01171875f)));
    }

    @Test
    void bf16KeepsInfinityAndNaN() {
        assertEquals(Float.POSITIVE_INFINITY, DTypeConversion.bf16ToFloat(DTypeConversion.floatToBf16(Float.POSITIVE_INFINITY)));
        assertEquals(Float.NEGATIVE_INFINITY, DTypeConversion.bf16ToFloat(DTypeConversion.floatToBf16(Float.NEGATIVE_INFINITY)));
        assertEquals(Float.POSITIVE_INFINITY, DTypeConversion.bf16ToFloat(DTypeConversion.floatToBf16(Float.MAX_VALUE)),
                "beyond the largest bf16 rounds to infinity");
        // NaNs whose payload sits only in the low 16 bits must not become infinity when truncated
        for (int bits : new int[] {0x7F800001, 0xFF800001, 0x7FC00000, 0x7F80FFFF, 0x7FFFFFFF}) {
            short h = DTypeConversion.floatToBf16(Float.intBitsToFloat(bits));
            assertTrue(Float.isNaN(DTypeConversion.bf16ToFloat(h)), "NaN 0x" + Integer.toHexString(bits));
            assertEquals(bits >>> 31, (h >>> 15) & 1, "sign of NaN 0x" + Integer.toHexString(bits));
        }
    }

    @Test
    void bf16ValuesSurviveTheRoundTripExactly() {
        for (int h = 0; h < 0x10000; h++) {
            float f = DTypeConversion.bf16ToFloat((short) h);
            if (Float.isNaN(f)) continue;
            assertEquals((short) h, DTypeConversion.floatToBf16(f), "bf16 0x" + Integer.toHexString(h));
        }
    }

    @Test
    void tensorConversionToBf16AndF16MatchesReferences() {
        List<Float> values = testValues();
        float[] f = new float[values.size()];
        for (int i = 0; i < f.length; i++) f[i] = values.get(i);
        try (MemoryScope s = MemoryScope.open()) {
            Tensor t = Tensor.of(f, f.length);
            Tensor bf = t.to(DType.BF16);
            Tensor half = t.to(DType.F16);
            assertEquals(DType.BF16, bf.dtype());
            assertArrayEquals(t.shape(), half.shape());
            float[] backFromBf = bf.to(DType.F32).toFloatArray();
            float[] backFromHalf = half.to(DType.F32).toFloatArray();
            for (int i = 0; i < f.length; i++) {
                float v = f[i];
                assertEquals(DTypeConversion.bf16ToFloat(bf16Reference(v)), backFromBf[i], "bf16 of " + v);
                assertEquals((float) f16Reference(v), backFromHalf[i], "f16 of " + v);
            }
            assertSame(t, t.to(DType.F32), "conversion to the same type is the identity");
        }
    }

    @Test
    void integerConversionsCheckRangeAndFloatsDoNotBecomeIntegers() {
        try (MemoryScope s = MemoryScope.open()) {
            Tensor ints = Tensor.ofInts(new int[] {-7, 0, Integer.MAX_VALUE}, 3);
            Tensor longs = ints.to(DType.I64);
            assertEquals(Integer.MAX_VALUE, longs.data().getAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, 2));
            assertArrayEquals(new int[] {-7, 0, Integer.MAX_VALUE}, longs.to(DType.I32).toIntArray());
            longs.data().setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, 1, 1L << 40);
            var e = assertThrows(IllegalArgumentException.class, () -> longs.to(DType.I32));
            assertTrue(e.getMessage().contains(String.valueOf(1L << 40)) && e.getMessage().contains("element 1"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> Tensor.zeros(3).to(DType.I32));
            assertTrue(e.getMessage().contains("F32") && e.getMessage().contains("I32"), e.getMessage());
        }
    }
}
