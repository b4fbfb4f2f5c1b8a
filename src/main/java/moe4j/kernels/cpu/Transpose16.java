package moe4j.kernels.cpu;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * In-register transpose of 16×16 float blocks for packing op(B) = Bᵀ: sixteen row loads, four butterfly
 * stages of two-source lane permutes (each stage swaps the off-diagonal half-blocks of every 2h×2h block,
 * h = 8, 4, 2, 1, which taken together is the transpose), sixteen row stores. About 100 instructions per
 * 256 elements, against one load and one store per element for a scalar transpose.
 *
 * <p>Written for 16-lane (512-bit) vectors; {@link #SUPPORTED} is false elsewhere and callers then use
 * scalar packing. It uses only the 512-bit species, like the micro-kernel: mixing vector shapes in one
 * program has been seen to stop C2 from compiling the micro-kernel to plain vector code.
 */
final class Transpose16 {
    private Transpose16() {}

    private static final VectorSpecies<Float> S = GemmBlocked.S;
    static final boolean SUPPORTED = S.length() == 16;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    /** For stage h: lane indices into the pair (r_i, r_{i+h}) giving the new r_i (LO) and r_{i+h} (HI). */
    private static final float[] LO8 = indices(8, true), HI8 = indices(8, false);
    private static final float[] LO4 = indices(4, true), HI4 = indices(4, false);
    private static final float[] LO2 = indices(2, true), HI2 = indices(2, false);
    private static final float[] LO1 = indices(1, true), HI1 = indices(1, false);

    private static float[] indices(int h, boolean lo) {
        float[] idx = new float[16];
        for (int lane = 0; lane < 16; lane++) {
            boolean upper = (lane & h) != 0;
            // lanes 0..15 pick from the first vector, 16..31 from the second
            idx[lane] = lo ? (upper ? 16 + lane - h : lane) : (upper ? 16 + lane : lane + h);
        }
        return idx;
    }

    /**
     * Writes the transpose of the 16×16 block of {@code b} whose top-left element is at element index
     * {@code src} (row stride {@code ld}) into {@code dst}: block row q goes to
     * {@code dst[d + q·dstStride .. +16)}.
     */
    static void block(MemorySegment b, long src, int ld, float[] dst, int d, int dstStride) {
        long stride = (long) ld * Float.BYTES;
        long at = src * Float.BYTES;
        FloatVector r0 = FloatVector.fromMemorySegment(S, b, at + 0 * stride, NATIVE);
        FloatVector r1 = FloatVector.fromMemorySegment(S, b, at + 1 * stride, NATIVE);
        FloatVector r2 = FloatVector.fromMemorySegment(S, b, at + 2 * stride, NATIVE);
        FloatVector r3 = FloatVector.fromMemorySegment(S, b, at + 3 * stride, NATIVE);
        FloatVector r4 = FloatVector.fromMemorySegment(S, b, at + 4 * stride, NATIVE);
        FloatVector r5 = FloatVector.fromMemorySegment(S, b, at + 5 * stride, NATIVE);
        FloatVector r6 = FloatVector.fromMemorySegment(S, b, at + 6 * stride, NATIVE);
        FloatVector r7 = FloatVector.fromMemorySegment(S, b, at + 7 * stride, NATIVE);
        FloatVector r8 = FloatVector.fromMemorySegment(S, b, at + 8 * stride, NATIVE);
        FloatVector r9 = FloatVector.fromMemorySegment(S, b, at + 9 * stride, NATIVE);
        FloatVector r10 = FloatVector.fromMemorySegment(S, b, at + 10 * stride, NATIVE);
        FloatVector r11 = FloatVector.fromMemorySegment(S, b, at + 11 * stride, NATIVE);
        FloatVector r12 = FloatVector.fromMemorySegment(S, b, at + 12 * stride, NATIVE);
        FloatVector r13 = FloatVector.fromMemorySegment(S, b, at + 13 * stride, NATIVE);
        FloatVector r14 = FloatVector.fromMemorySegment(S, b, at + 14 * stride, NATIVE);
        FloatVector r15 = FloatVector.fromMemorySegment(S, b, at + 15 * stride, NATIVE);
        FloatVector lo8 = FloatVector.fromArray(S, LO8, 0), hi8 = FloatVector.fromArray(S, HI8, 0);
        FloatVector lo4 = FloatVector.fromArray(S, LO4, 0), hi4 = FloatVector.fromArray(S, HI4, 0);
        FloatVector lo2 = FloatVector.fromArray(S, LO2, 0), hi2 = FloatVector.fromArray(S, HI2, 0);
        FloatVector lo1 = FloatVector.fromArray(S, LO1, 0), hi1 = FloatVector.fromArray(S, HI1, 0);
        FloatVector t;
        t = lo8.selectFrom(r0, r8); r8 = hi8.selectFrom(r0, r8); r0 = t;
        t = lo8.selectFrom(r1, r9); r9 = hi8.selectFrom(r1, r9); r1 = t;
        t = lo8.selectFrom(r2, r10); r10 = hi8.selectFrom(r2, r10); r2 = t;
        t = lo8.selectFrom(r3, r11); r11 = hi8.selectFrom(r3, r11); r3 = t;
        t = lo8.selectFrom(r4, r12); r12 = hi8.selectFrom(r4, r12); r4 = t;
        t = lo8.selectFrom(r5, r13); r13 = hi8.selectFrom(r5, r13); r5 = t;
        t = lo8.selectFrom(r6, r14); r14 = hi8.selectFrom(r6, r14); r6 = t;
        t = lo8.selectFrom(r7, r15); r15 = hi8.selectFrom(r7, r15); r7 = t;
        t = lo4.selectFrom(r0, r4); r4 = hi4.selectFrom(r0, r4); r0 = t;
        t = lo4.selectFrom(r1, r5); r5 = hi4.selectFrom(r1, r5); r1 = t;
        t = lo4.selectFrom(r2, r6); r6 = hi4.selectFrom(r2, r6); r2 = t;
        t = lo4.selectFrom(r3, r7); r7 = hi4.selectFrom(r3, r7); r3 = t;
        t = lo4.selectFrom(r8, r12); r12 = hi4.selectFrom(r8, r12); r8 = t;
        t = lo4.selectFrom(r9, r13); r13 = hi4.selectFrom(r9, r13); r9 = t;
        t = lo4.selectFrom(r10, r14); r14 = hi4.selectFrom(r10, r14); r10 = t;
        t = lo4.selectFrom(r11, r15); r15 = hi4.selectFrom(r11, r15); r11 = t;
        t = lo2.selectFrom(r0, r2); r2 = hi2.selectFrom(r0, r2); r0 = t;
        t = lo2.selectFrom(r1, r3); r3 = hi2.selectFrom(r1, r3); r1 = t;
        t = lo2.selectFrom(r4, r6); r6 = hi2.selectFrom(r4, r6); r4 = t;
        t = lo2.selectFrom(r5, r7); r7 = hi2.selectFrom(r5, r7); r5 = t;
        t = lo2.selectFrom(r8, r10); r10 = hi2.selectFrom(r8, r10); r8 = t;
        t = lo2.selectFrom(r9, r11); r11 = hi2.selectFrom(r9, r11); r9 = t;
        t = lo2.selectFrom(r12, r14); r14 = hi2.selectFrom(r12, r14); r12 = t;
        t = lo2.selectFrom(r13, r15); r15 = hi2.selectFrom(r13, r15); r13 = t;
        t = lo1.selectFrom(r0, r1); r1 = hi1.selectFrom(r0, r1); r0 = t;
        t = lo1.selectFrom(r2, r3); r3 = hi1.selectFrom(r2, r3); r2 = t;
        t = lo1.selectFrom(r4, r5); r5 = hi1.selectFrom(r4, r5); r4 = t;
        t = lo1.selectFrom(r6, r7); r7 = hi1.selectFrom(r6, r7); r6 = t;
        t = lo1.selectFrom(r8, r9); r9 = hi1.selectFrom(r8, r9); r8 = t;
        t = lo1.selectFrom(r10, r11); r11 = hi1.selectFrom(r10, r11); r10 = t;
        t = lo1.selectFrom(r12, r13); r13 = hi1.selectFrom(r12, r13); r12 = t;
        t = lo1.selectFrom(r14, r15); r15 = hi1.selectFrom(r14, r15); r14 = t;
        r0.intoArray(dst, d + 0 * dstStride);
        r1.intoArray(dst, d + 1 * dstStride);
        r2.intoArray(dst, d + 2 * dstStride);
        r3.intoArray(dst, d + 3 * dstStride);
        r4.intoArray(dst, d + 4 * dstStride);
        r5.intoArray(dst, d + 5 * dstStride);
        r6.intoArray(dst, d + 6 * dstStride);
        r7.intoArray(dst, d + 7 * dstStride);
        r8.intoArray(dst, d + 8 * dstStride);
        r9.intoArray(dst, d + 9 * dstStride);
        r10.intoArray(dst, d + 10 * dstStride);
        r11.intoArray(dst, d + 11 * dstStride);
        r12.intoArray(dst, d + 12 * dstStride);
        r13.intoArray(dst, d + 13 * dstStride);
        r14.intoArray(dst, d + 14 * dstStride);
        r15.intoArray(dst, d + 15 * dstStride);
    }
}
