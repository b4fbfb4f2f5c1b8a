package moe4j.kernels.cpu;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * The register-tile micro-kernels of {@link GemmBlocked}: {@code tile[MR][NR] = Σ_p A[p][0..MR) ⊗ B[p][0..NR)}
 * over one K slab, A from a packed panel ({@code pa[aBase + p·MR + r]}), the result written row-major to
 * {@code tile} from index {@code t0} on. Each keeps its whole tile in named accumulators so that C2 holds it in vector registers.
 *
 * <p>Two tile shapes, both 24 accumulators of one vector each (see {@link GemmTuning} for which runs where):
 * <ul>
 *   <li>8 rows × 3 vectors: 3 B loads and 8 broadcasts per 24 FMAs. With the three B vectors and the
 *       broadcasts C2 schedules early it needs one register more than the 32 there are and keeps one
 *       accumulator on the stack (a store and a reload every step). Where a 512-bit FMA issues once a
 *       cycle (AMD Zen 4) that reload hides behind the FMAs;</li>
 *   <li>12 rows × 2 vectors: 2 B loads and 12 broadcasts per 24 FMAs; 24 + 2 + 2 registers, nothing
 *       spilled. Where two 512-bit FMAs issue per cycle the reload chain shows: on Intel Ice Lake this tile
 *       ran about a quarter faster in a micro-kernel benchmark. AMD Zen 5 also issues two per cycle and
 *       gets this tile too (not measured there).</li>
 * </ul>
 *
 * <p>The 8x3 tile exists twice, reading B from a packed {@code float[]} panel ({@link #tile8x3}) or in place
 * from a row-major segment ({@link #tile8x3Direct}, row p at {@code bAt + p·ldbBytes}), for short products
 * where packing B costs as much as the arithmetic. The bodies are the same arithmetic in the same order, so
 * both give the same bits. They are kept apart on purpose: one kernel over a segment for both cases (the
 * packed panel off-heap) was measured slower, because the segment's bounds checks (C2 does not hoist them
 * out of this loop) and the long address arithmetic cost the general registers the loop needs, and it
 * spilled loop state to the stack; the packed path is where most of the time goes. The 12x2 tile has no
 * in-place variant: at two FMAs per cycle that integer work makes the loop issue-bound, and packing B
 * was measured faster for every group size of the grouped benchmark (10–300 rows).
 */
final class MicroKernels {
    private MicroKernels() {}

    private static final VectorSpecies<Float> S = GemmBlocked.S;
    private static final int L = GemmBlocked.L;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    static void tile8x3(int kc, float[] pa, int aBase, float[] pb, int bBase, float[] tile, int t0) {
        FloatVector z = FloatVector.zero(S);
        FloatVector c00 = z, c01 = z, c02 = z, c10 = z, c11 = z, c12 = z;
        FloatVector c20 = z, c21 = z, c22 = z, c30 = z, c31 = z, c32 = z;
        FloatVector c40 = z, c41 = z, c42 = z, c50 = z, c51 = z, c52 = z;
        FloatVector c60 = z, c61 = z, c62 = z, c70 = z, c71 = z, c72 = z;
        int ai = aBase, bi = bBase;
        for (int p = 0; p < kc; p++, ai += 8, bi += 3 * L) {
            FloatVector b0 = FloatVector.fromArray(S, pb, bi);
            FloatVector b1 = FloatVector.fromArray(S, pb, bi + L);
            FloatVector b2 = FloatVector.fromArray(S, pb, bi + 2 * L);
            FloatVector av = FloatVector.broadcast(S, pa[ai]);
            c00 = av.fma(b0, c00); c01 = av.fma(b1, c01); c02 = av.fma(b2, c02);
            av = FloatVector.broadcast(S, pa[ai + 1]);
            c10 = av.fma(b0, c10); c11 = av.fma(b1, c11); c12 = av.fma(b2, c12);
            av = FloatVector.broadcast(S, pa[ai + 2]);
            c20 = av.fma(b0, c20); c21 = av.fma(b1, c21); c22 = av.fma(b2, c22);
            av = FloatVector.broadcast(S, pa[ai + 3]);
            c30 = av.fma(b0, c30); c31 = av.fma(b1, c31); c32 = av.fma(b2, c32);
            av = FloatVector.broadcast(S, pa[ai + 4]);
            c40 = av.fma(b0, c40); c41 = av.fma(b1, c41); c42 = av.fma(b2, c42);
            av = FloatVector.broadcast(S, pa[ai + 5]);
            c50 = av.fma(b0, c50); c51 = av.fma(b1, c51); c52 = av.fma(b2, c52);
            av = FloatVector.broadcast(S, pa[ai + 6]);
            c60 = av.fma(b0, c60); c61 = av.fma(b1, c61); c62 = av.fma(b2, c62);
            av = FloatVector.broadcast(S, pa[ai + 7]);
            c70 = av.fma(b0, c70); c71 = av.fma(b1, c71); c72 = av.fma(b2, c72);
        }
        int nr = 3 * L;
        c00.intoArray(tile, t0 + 0); c01.intoArray(tile, t0 + L); c02.intoArray(tile, t0 + 2 * L);
        c10.intoArray(tile, t0 + nr); c11.intoArray(tile, t0 + nr + L); c12.intoArray(tile, t0 + nr + 2 * L);
        c20.intoArray(tile, t0 + 2 * nr); c21.intoArray(tile, t0 + 2 * nr + L); c22.intoArray(tile, t0 + 2 * nr + 2 * L);
        c30.intoArray(tile, t0 + 3 * nr); c31.intoArray(tile, t0 + 3 * nr + L); c32.intoArray(tile, t0 + 3 * nr + 2 * L);
        c40.intoArray(tile, t0 + 4 * nr); c41.intoArray(tile, t0 + 4 * nr + L); c42.intoArray(tile, t0 + 4 * nr + 2 * L);
        c50.intoArray(tile, t0 + 5 * nr); c51.intoArray(tile, t0 + 5 * nr + L); c52.intoArray(tile, t0 + 5 * nr + 2 * L);
        c60.intoArray(tile, t0 + 6 * nr); c61.intoArray(tile, t0 + 6 * nr + L); c62.intoArray(tile, t0 + 6 * nr + 2 * L);
        c70.intoArray(tile, t0 + 7 * nr); c71.intoArray(tile, t0 + 7 * nr + L); c72.intoArray(tile, t0 + 7 * nr + 2 * L);
    }

    static void tile8x3Direct(int kc, float[] pa, int aBase, MemorySegment b, long bAt, long ldbBytes, float[] tile, int t0) {
        FloatVector z = FloatVector.zero(S);
        FloatVector c00 = z, c01 = z, c02 = z, c10 = z, c11 = z, c12 = z;
        FloatVector c20 = z, c21 = z, c22 = z, c30 = z, c31 = z, c32 = z;
        FloatVector c40 = z, c41 = z, c42 = z, c50 = z, c51 = z, c52 = z;
        FloatVector c60 = z, c61 = z, c62 = z, c70 = z, c71 = z, c72 = z;
        long vb = (long) L * Float.BYTES;
        int ai = aBase;
        for (int p = 0; p < kc; p++, ai += 8) {
            long at = bAt + p * ldbBytes;
            FloatVector b0 = FloatVector.fromMemorySegment(S, b, at, NATIVE);
            FloatVector b1 = FloatVector.fromMemorySegment(S, b, at + vb, NATIVE);
            FloatVector b2 = FloatVector.fromMemorySegment(S, b, at + 2 * vb, NATIVE);
            FloatVector av = FloatVector.broadcast(S, pa[ai]);
            c00 = av.fma(b0, c00); c01 = av.fma(b1, c01); c02 = av.fma(b2, c02);
            av = FloatVector.broadcast(S, pa[ai + 1]);
            c10 = av.fma(b0, c10); c11 = av.fma(b1, c11); c12 = av.fma(b2, c12);
            av = FloatVector.broadcast(S, pa[ai + 2]);
            c20 = av.fma(b0, c20); c21 = av.fma(b1, c21); c22 = av.fma(b2, c22);
            av = FloatVector.broadcast(S, pa[ai + 3]);
            c30 = av.fma(b0, c30); c31 = av.fma(b1, c31); c32 = av.fma(b2, c32);
            av = FloatVector.broadcast(S, pa[ai + 4]);
            c40 = av.fma(b0, c40); c41 = av.fma(b1, c41); c42 = av.fma(b2, c42);
            av = FloatVector.broadcast(S, pa[ai + 5]);
            c50 = av.fma(b0, c50); c51 = av.fma(b1, c51); c52 = av.fma(b2, c52);
            av = FloatVector.broadcast(S, pa[ai + 6]);
            c60 = av.fma(b0, c60); c61 = av.fma(b1, c61); c62 = av.fma(b2, c62);
            av = FloatVector.broadcast(S, pa[ai + 7]);
            c70 = av.fma(b0, c70); c71 = av.fma(b1, c71); c72 = av.fma(b2, c72);
        }
        int nr = 3 * L;
        c00.intoArray(tile, t0 + 0); c01.intoArray(tile, t0 + L); c02.intoArray(tile, t0 + 2 * L);
        c10.intoArray(tile, t0 + nr); c11.intoArray(tile, t0 + nr + L); c12.intoArray(tile, t0 + nr + 2 * L);
        c20.intoArray(tile, t0 + 2 * nr); c21.intoArray(tile, t0 + 2 * nr + L); c22.intoArray(tile, t0 + 2 * nr + 2 * L);
        c30.intoArray(tile, t0 + 3 * nr); c31.intoArray(tile, t0 + 3 * nr + L); c32.intoArray(tile, t0 + 3 * nr + 2 * L);
        c40.intoArray(tile, t0 + 4 * nr); c41.intoArray(tile, t0 + 4 * nr + L); c42.intoArray(tile, t0 + 4 * nr + 2 * L);
        c50.intoArray(tile, t0 + 5 * nr); c51.intoArray(tile, t0 + 5 * nr + L); c52.intoArray(tile, t0 + 5 * nr + 2 * L);
        c60.intoArray(tile, t0 + 6 * nr); c61.intoArray(tile, t0 + 6 * nr + L); c62.intoArray(tile, t0 + 6 * nr + 2 * L);
        c70.intoArray(tile, t0 + 7 * nr); c71.intoArray(tile, t0 + 7 * nr + L); c72.intoArray(tile, t0 + 7 * nr + 2 * L);
    }

    static void tile12x2(int kc, float[] pa, int aBase, float[] pb, int bBase, float[] tile, int t0) {
        FloatVector z = FloatVector.zero(S);
        FloatVector c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
        FloatVector c40 = z, c41 = z, c50 = z, c51 = z, c60 = z, c61 = z, c70 = z, c71 = z;
        FloatVector c80 = z, c81 = z, c90 = z, c91 = z, ca0 = z, ca1 = z, cb0 = z, cb1 = z;
        // two steps per iteration, their indices computed from the iteration count: the loop stays a
        // counted loop (C2 then drops the array bounds checks) with half the index arithmetic per FMA
        int pairs = kc >> 1;
        for (int q = 0; q < pairs; q++) {
            int ai = aBase + 24 * q, bi = bBase + 4 * L * q;
            FloatVector b0 = FloatVector.fromArray(S, pb, bi);
            FloatVector b1 = FloatVector.fromArray(S, pb, bi + L);
            FloatVector av = FloatVector.broadcast(S, pa[ai]);
            c00 = av.fma(b0, c00); c01 = av.fma(b1, c01);
            av = FloatVector.broadcast(S, pa[ai + 1]);
            c10 = av.fma(b0, c10); c11 = av.fma(b1, c11);
            av = FloatVector.broadcast(S, pa[ai + 2]);
            c20 = av.fma(b0, c20); c21 = av.fma(b1, c21);
            av = FloatVector.broadcast(S, pa[ai + 3]);
            c30 = av.fma(b0, c30); c31 = av.fma(b1, c31);
            av = FloatVector.broadcast(S, pa[ai + 4]);
            c40 = av.fma(b0, c40); c41 = av.fma(b1, c41);
            av = FloatVector.broadcast(S, pa[ai + 5]);
            c50 = av.fma(b0, c50); c51 = av.fma(b1, c51);
            av = FloatVector.broadcast(S, pa[ai + 6]);
            c60 = av.fma(b0, c60); c61 = av.fma(b1, c61);
            av = FloatVector.broadcast(S, pa[ai + 7]);
            c70 = av.fma(b0, c70); c71 = av.fma(b1, c71);
            av = FloatVector.broadcast(S, pa[ai + 8]);
            c80 = av.fma(b0, c80); c81 = av.fma(b1, c81);
            av = FloatVector.broadcast(S, pa[ai + 9]);
            c90 = av.fma(b0, c90); c91 = av.fma(b1, c91);
            av = FloatVector.broadcast(S, pa[ai + 10]);
            ca0 = av.fma(b0, ca0); ca1 = av.fma(b1, ca1);
            av = FloatVector.broadcast(S, pa[ai + 11]);
            cb0 = av.fma(b0, cb0); cb1 = av.fma(b1, cb1);
            b0 = FloatVector.fromArray(S, pb, bi + 2 * L);
            b1 = FloatVector.fromArray(S, pb, bi + 2 * L + L);
            av = FloatVector.broadcast(S, pa[ai + 12]);
            c00 = av.fma(b0, c00); c01 = av.fma(b1, c01);
            av = FloatVector.broadcast(S, pa[ai + 13]);
            c10 = av.fma(b0, c10); c11 = av.fma(b1, c11);
            av = FloatVector.broadcast(S, pa[ai + 14]);
            c20 = av.fma(b0, c20); c21 = av.fma(b1, c21);
            av = FloatVector.broadcast(S, pa[ai + 15]);
            c30 = av.fma(b0, c30); c31 = av.fma(b1, c31);
            av = FloatVector.broadcast(S, pa[ai + 16]);
            c40 = av.fma(b0, c40); c41 = av.fma(b1, c41);
            av = FloatVector.broadcast(S, pa[ai + 17]);
            c50 = av.fma(b0, c50); c51 = av.fma(b1, c51);
            av = FloatVector.broadcast(S, pa[ai + 18]);
            c60 = av.fma(b0, c60); c61 = av.fma(b1, c61);
            av = FloatVector.broadcast(S, pa[ai + 19]);
            c70 = av.fma(b0, c70); c71 = av.fma(b1, c71);
            av = FloatVector.broadcast(S, pa[ai + 20]);
            c80 = av.fma(b0, c80); c81 = av.fma(b1, c81);
            av = FloatVector.broadcast(S, pa[ai + 21]);
            c90 = av.fma(b0, c90); c91 = av.fma(b1, c91);
            av = FloatVector.broadcast(S, pa[ai + 22]);
            ca0 = av.fma(b0, ca0); ca1 = av.fma(b1, ca1);
            av = FloatVector.broadcast(S, pa[ai + 23]);
            cb0 = av.fma(b0, cb0); cb1 = av.fma(b1, cb1);
        }
        if ((kc & 1) != 0) {
            int ai = aBase + 24 * pairs, bi = bBase + 4 * L * pairs;
                FloatVector b0 = FloatVector.fromArray(S, pb, bi);
                FloatVector b1 = FloatVector.fromArray(S, pb, bi + L);
                FloatVector av = FloatVector.broadcast(S, pa[ai]);
                c00 = av.fma(b0, c00); c01 = av.fma(b1, c01);
                av = FloatVector.broadcast(S, pa[ai + 1]);
                c10 = av.fma(b0, c10); c11 = av.fma(b1, c11);
                av = FloatVector.broadcast(S, pa[ai + 2]);
                c20 = av.fma(b0, c20); c21 = av.fma(b1, c21);
                av = FloatVector.broadcast(S, pa[ai + 3]);
                c30 = av.fma(b0, c30); c31 = av.fma(b1, c31);
                av = FloatVector.broadcast(S, pa[ai + 4]);
                c40 = av.fma(b0, c40); c41 = av.fma(b1, c41);
                av = FloatVector.broadcast(S, pa[ai + 5]);
                c50 = av.fma(b0, c50); c51 = av.fma(b1, c51);
                av = FloatVector.broadcast(S, pa[ai + 6]);
                c60 = av.fma(b0, c60); c61 = av.fma(b1, c61);
                av = FloatVector.broadcast(S, pa[ai + 7]);
                c70 = av.fma(b0, c70); c71 = av.fma(b1, c71);
                av = FloatVector.broadcast(S, pa[ai + 8]);
                c80 = av.fma(b0, c80); c81 = av.fma(b1, c81);
                av = FloatVector.broadcast(S, pa[ai + 9]);
                c90 = av.fma(b0, c90); c91 = av.fma(b1, c91);
                av = FloatVector.broadcast(S, pa[ai + 10]);
                ca0 = av.fma(b0, ca0); ca1 = av.fma(b1, ca1);
                av = FloatVector.broadcast(S, pa[ai + 11]);
                cb0 = av.fma(b0, cb0); cb1 = av.fma(b1, cb1);
        }
        int nr = 2 * L;
        c00.intoArray(tile, t0 + 0); c01.intoArray(tile, t0 + L);
        c10.intoArray(tile, t0 + nr); c11.intoArray(tile, t0 + nr + L);
        c20.intoArray(tile, t0 + 2 * nr); c21.intoArray(tile, t0 + 2 * nr + L);
        c30.intoArray(tile, t0 + 3 * nr); c31.intoArray(tile, t0 + 3 * nr + L);
        c40.intoArray(tile, t0 + 4 * nr); c41.intoArray(tile, t0 + 4 * nr + L);
        c50.intoArray(tile, t0 + 5 * nr); c51.intoArray(tile, t0 + 5 * nr + L);
        c60.intoArray(tile, t0 + 6 * nr); c61.intoArray(tile, t0 + 6 * nr + L);
        c70.intoArray(tile, t0 + 7 * nr); c71.intoArray(tile, t0 + 7 * nr + L);
        c80.intoArray(tile, t0 + 8 * nr); c81.intoArray(tile, t0 + 8 * nr + L);
        c90.intoArray(tile, t0 + 9 * nr); c91.intoArray(tile, t0 + 9 * nr + L);
        ca0.intoArray(tile, t0 + 10 * nr); ca1.intoArray(tile, t0 + 10 * nr + L);
        cb0.intoArray(tile, t0 + 11 * nr); cb1.intoArray(tile, t0 + 11 * nr + L);
    }
}
