package moe4j.tensor;

import java.lang.foreign.MemorySegment;

/** Element conversions between storage types; float32 and int32 are the compute types. */
final class DTypeConversion {
    private DTypeConversion() {}

    static void convert(Tensor src, Tensor dst) {
        MemorySegment s = src.data();
        MemorySegment d = dst.data();
        long n = src.numel();
        DType from = src.dtype();
        DType to = dst.dtype();
        if (from.isFloating() && to.isFloating()) {
            for (long i = 0; i < n; i++) writeFloat(d, to, i, readFloat(s, from, i));
        } else if (!from.isFloating() && !to.isFloating()) {
            for (long i = 0; i < n; i++) {
                long v = from == DType.I64 ? s.getAtIndex(Tensor.I64, i) : s.getAtIndex(Tensor.I32, i);
                if (to == DType.I64) {
                    d.setAtIndex(Tensor.I64, i, v);
                } else {
                    if (v < Integer.MIN_VALUE || v > Integer.MAX_VALUE) {
                        throw new IllegalArgumentException("value " + v + " at element " + i + " does not fit in I32");
                    }
                    d.setAtIndex(Tensor.I32, i, (int) v);
                }
            }
        } else {
            throw new IllegalArgumentException("no conversion between " + from + " and " + to
                    + ": floating and integer tensors do not convert into each other");
        }
    }

    static float readFloat(MemorySegment s, DType t, long i) {
        return switch (t) {
            case F32 -> s.getAtIndex(Tensor.F32, i);
            case BF16 -> bf16ToFloat(s.getAtIndex(Tensor.I16, i));
            case F16 -> Float.float16ToFloat(s.getAtIndex(Tensor.I16, i));
            default -> throw new IllegalStateException(t.toString());
        };
    }

    static void writeFloat(MemorySegment d, DType t, long i, float v) {
        switch (t) {
            case F32 -> d.setAtIndex(Tensor.F32, i, v);
            case BF16 -> d.setAtIndex(Tensor.I16, i, floatToBf16(v));
            case F16 -> d.setAtIndex(Tensor.I16, i, Float.floatToFloat16(v));
            default -> throw new IllegalStateException(t.toString());
        }
    }

    static float bf16ToFloat(short bits) {
        return Float.intBitsToFloat((bits & 0xFFFF) << 16);
    }

    /** Round to nearest even, NaN kept a (quiet) NaN. */
    static short floatToBf16(float v) {
        int bits = Float.floatToRawIntBits(v);
        if ((bits & 0x7FFFFFFF) > 0x7F800000) return (short) ((bits >>> 16) | 0x0040);
        int rounding = 0x7FFF + ((bits >>> 16) & 1);
        return (short) ((bits + rounding) >>> 16);
    }
}
