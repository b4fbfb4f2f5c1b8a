package moe4j.kernels.cpu;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * The cache-blocked, packed GEMM behind {@link Gemm#sgemm}: computes one rectangular block of C on the
 * calling thread.
 *
 * <p>Loop nest (outermost first), as in the usual Goto/BLIS scheme:
 * <ol>
 *   <li>{@code jc}: columns of C in slabs of {@link #NC} (wider when K is short, same L2 budget);</li>
 *   <li>{@code pc}: the reduction dimension in slabs of {@link #KC}; the KC×NC block of op(B) is packed
 *       once here and reused by every row of C (for a grouped GEMM: each expert's weight is packed once
 *       per call and shared by all the group's rows); it is sized for L2. Short products (at most
 *       {@link #DIRECT_B_MAX_ROWS} rows) with an untransposed B skip this packing and read B in place;</li>
 *   <li>{@code ic}: rows of C in slabs of {@link #MC}; the MC×KC block of op(A) is packed;</li>
 *   <li>{@code ir}, {@code jr}: {@link #MR}-high strips of A and {@link #NR}-wide strips of B, one
 *       micro-kernel call each, which keeps an MR×NR tile of C in 24 vector registers.</li>
 * </ol>
 * Packing turns every layout (A or Aᵀ, B or Bᵀ) into the same contiguous panels, so one micro-kernel
 * serves all four; panels are zero-padded to full MR/NR so edge tiles need no special kernel.
 *
 * <p>Determinism: the value of C[i][j] depends only on K's slab boundaries and the order of the p loop,
 * never on which rows or columns a block covers, so any split of C across threads gives identical bits.
 */
final class GemmBlocked {
    private GemmBlocked() {}

    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int L = S.length();
    /** Rows of the register tile. */
    static final int MR = 8;
    /** Columns of the register tile: three vectors. */
    static final int NR = 3 * L;
    /** Reduction slab: the MR×KC A micro-panel (8 KiB) stays in L1 while B panels stream past it. */
    static final int KC = 256;
    /** Row slab of packed A (512 KiB); it is walked one micro-panel at a time, so L3 is enough. */
    static final int MC = 512;
    /** Column slab: the packed KC×NC block of B (768 KiB with 512-bit vectors) stays in the 1 MiB L2. */
    static final int NC = NR * 16;
    /**
     * Products with at most this many rows read an untransposed B where it lies instead of packing it.
     * Measured on the Zen 4 dev machine (M×1024·1024×2816): 1.4x faster at 16–32 rows, about 10% at
     * 128–256; at 512 rows packing wins again (fewer L2 misses over 64 row strips). Must not exceed MC.
     */
    static final int DIRECT_B_MAX_ROWS = 320;

    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    /** Per-thread packing buffers, allocated once per thread and reused by every call. */
    static final class Scratch {
        final float[] packedA = new float[MC * KC];
        final float[] packedB = new float[KC * NC];
        final float[] tile = new float[MR * NR];
    }

    private static final ThreadLocal<Scratch> SCRATCH = ThreadLocal.withInitial(Scratch::new);

    /**
     * Computes rows [i0, i1) × columns [j0, j1) of {@code C = alpha·op(A)·op(B) + beta·C}; k &gt; 0.
     * Arguments are as in {@link Gemm#sgemm}, already validated.
     */
    static void compute(boolean transA, boolean transB, int i0, int i1, int j0, int j1, int k, float alpha,
                        MemorySegment a, long aOff, int lda, MemorySegment b, long bOff, int ldb,
                        float beta, MemorySegment c, long cOff, int ldc) {
        Scratch s = SCRATCH.get();
        // a short reduction (e.g. a weight gradient over a few tokens) leaves the B block small: widen it
        // to the same L2 budget, so A is packed fewer times
        int ncMax = Math.max(NC, (KC * NC / Math.min(k, KC)) / NR * NR);
        for (int jc = j0; jc < j1; jc += ncMax) {
            int nc = Math.min(ncMax, j1 - jc);
            for (int pc = 0; pc < k; pc += KC) {
                int kc = Math.min(KC, k - pc);
                if (!transB && i1 - i0 <= DIRECT_B_MAX_ROWS && nc >= NR) {
                    // few enough rows that packing B costs more than it saves
                    directB(s, transA, a, aOff, lda, i0, i1 - i0, b, bOff, ldb, pc, kc, jc, nc, alpha,
                            pc == 0, beta, c, cOff, ldc);
                    continue;
                }
                packB(transB, b, bOff, ldb, pc, kc, jc, nc, s.packedB);
                // the first K slab applies beta; later slabs accumulate onto the partial result
                boolean first = pc == 0;
                for (int ic = i0; ic < i1; ic += MC) {
                    int mc = Math.min(MC, i1 - ic);
                    packA(transA, a, aOff, lda, ic, mc, pc, kc, s.packedA);
                    macroKernel(s, mc, nc, kc, alpha, first, beta, c, cOff + (long) ic * ldc + jc, ldc);
                }
            }
        }
    }

    private static void macroKernel(Scratch s, int mc, int nc, int kc, float alpha, boolean first, float beta,
                                    MemorySegment c, long cOff, int ldc) {
        float[] pa = s.packedA, pb = s.packedB, tile = s.tile;
        // rows outer: one A micro-panel is reused from L1 across the whole B block (in L2), and the C
        // tiles of a row strip are visited left to right, which the hardware prefetcher follows
        for (int ir = 0; ir < mc; ir += MR) {
            int rows = Math.min(MR, mc - ir);
            int aBase = (ir / MR) * kc * MR;
            for (int jr = 0; jr < nc; jr += NR) {
                int cols = Math.min(NR, nc - jr);
                microKernel(kc, pa, aBase, pb, (jr / NR) * kc * NR, tile);
                long cTile = cOff + (long) ir * ldc + jr;
                if (rows == MR && cols == NR) {
                    mergeFull(tile, alpha, first, beta, c, cTile, ldc);
                } else {
                    mergeEdge(tile, rows, cols, alpha, first, beta, c, cTile, ldc);
                }
            }
        }
    }

    /**
     * One K slab of a product with at most {@link #DIRECT_B_MAX_ROWS} rows and B not transposed: full
     * NR-wide strips read B where it lies (for short products, packing costs as much as the arithmetic
     * it feeds; for longer ones the row-major B rows still stream well from L2); only the ragged last
     * strip is packed. The arithmetic, and so every bit of the result, is that of the packed path.
     */
    private static void directB(Scratch s, boolean transA, MemorySegment a, long aOff, int lda, int i0, int mc,
                                MemorySegment b, long bOff, int ldb, int pc, int kc, int jc, int nc,
                                float alpha, boolean first, float beta, MemorySegment c, long cOff, int ldc) {
        packA(transA, a, aOff, lda, i0, mc, pc, kc, s.packedA);
        int fullCols = nc / NR * NR;
        if (fullCols < nc) {
            // the ragged strip, packed on its own at the start of packedB
            packB(false, b, bOff, ldb, pc, kc, jc + fullCols, nc - fullCols, s.packedB);
        }
        long ldbBytes = (long) ldb * Float.BYTES;
        for (int ir = 0; ir < mc; ir += MR) {
            int rows = Math.min(MR, mc - ir);
            int aBase = (ir / MR) * kc * MR;
            long cRow = cOff + (long) (i0 + ir) * ldc + jc;
            for (int jr = 0; jr < nc; jr += NR) {
                int cols = Math.min(NR, nc - jr);
                if (cols == NR) {
                    long bAt = (bOff + (long) pc * ldb + jc + jr) * Float.BYTES;
                    microKernelDirect(kc, s.packedA, aBase, b, bAt, ldbBytes, s.tile);
                } else {
                    microKernel(kc, s.packedA, aBase, s.packedB, 0, s.tile);
                }
                if (rows == MR && cols == NR) {
                    mergeFull(s.tile, alpha, first, beta, c, cRow + jr, ldc);
                } else {
                    mergeEdge(s.tile, rows, cols, alpha, first, beta, c, cRow + jr, ldc);
                }
            }
        }
    }

    /** {@link #microKernel} with B read from its row-major home, row p at {@code bAt + p·ldbBytes}. */
    static void microKernelDirect(int kc, float[] pa, int aBase, MemorySegment b, long bAt, long ldbBytes,
                                  float[] tile) {
        FloatVector z = FloatVector.zero(S);
        FloatVector c00 = z, c01 = z, c02 = z, c10 = z, c11 = z, c12 = z, c20 = z, c21 = z, c22 = z;
        FloatVector c30 = z, c31 = z, c32 = z, c40 = z, c41 = z, c42 = z, c50 = z, c51 = z, c52 = z;
        FloatVector c60 = z, c61 = z, c62 = z, c70 = z, c71 = z, c72 = z;
        long vb = (long) L * Float.BYTES;
        int ai = aBase;
        for (int p = 0; p < kc; p++, ai += MR, bAt += ldbBytes) {
            FloatVector b0 = FloatVector.fromMemorySegment(S, b, bAt, NATIVE);
            FloatVector b1 = FloatVector.fromMemorySegment(S, b, bAt + vb, NATIVE);
            FloatVector b2 = FloatVector.fromMemorySegment(S, b, bAt + 2 * vb, NATIVE);
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
        c00.intoArray(tile, 0); c01.intoArray(tile, L); c02.intoArray(tile, 2 * L);
        c10.intoArray(tile, NR); c11.intoArray(tile, NR + L); c12.intoArray(tile, NR + 2 * L);
        c20.intoArray(tile, 2 * NR); c21.intoArray(tile, 2 * NR + L); c22.intoArray(tile, 2 * NR + 2 * L);
        c30.intoArray(tile, 3 * NR); c31.intoArray(tile, 3 * NR + L); c32.intoArray(tile, 3 * NR + 2 * L);
        c40.intoArray(tile, 4 * NR); c41.intoArray(tile, 4 * NR + L); c42.intoArray(tile, 4 * NR + 2 * L);
        c50.intoArray(tile, 5 * NR); c51.intoArray(tile, 5 * NR + L); c52.intoArray(tile, 5 * NR + 2 * L);
        c60.intoArray(tile, 6 * NR); c61.intoArray(tile, 6 * NR + L); c62.intoArray(tile, 6 * NR + 2 * L);
        c70.intoArray(tile, 7 * NR); c71.intoArray(tile, 7 * NR + L); c72.intoArray(tile, 7 * NR + 2 * L);
    }

    /**
     * tile[MR][NR] = Σ_p A[p][0..MR) ⊗ B[p][0..NR) over one K slab. Twenty-four named accumulators so
     * that C2 keeps the whole tile in registers.
     */
    static void microKernel(int kc, float[] pa, int aBase, float[] pb, int bBase, float[] tile) {
        FloatVector z = FloatVector.zero(S);
        FloatVector c00 = z, c01 = z, c02 = z, c10 = z, c11 = z, c12 = z, c20 = z, c21 = z, c22 = z;
        FloatVector c30 = z, c31 = z, c32 = z, c40 = z, c41 = z, c42 = z, c50 = z, c51 = z, c52 = z;
        FloatVector c60 = z, c61 = z, c62 = z, c70 = z, c71 = z, c72 = z;
        int ai = aBase, bi = bBase;
        for (int p = 0; p < kc; p++, ai += MR, bi += NR) {
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
        c00.intoArray(tile, 0); c01.intoArray(tile, L); c02.intoArray(tile, 2 * L);
        c10.intoArray(tile, NR); c11.intoArray(tile, NR + L); c12.intoArray(tile, NR + 2 * L);
        c20.intoArray(tile, 2 * NR); c21.intoArray(tile, 2 * NR + L); c22.intoArray(tile, 2 * NR + 2 * L);
        c30.intoArray(tile, 3 * NR); c31.intoArray(tile, 3 * NR + L); c32.intoArray(tile, 3 * NR + 2 * L);
        c40.intoArray(tile, 4 * NR); c41.intoArray(tile, 4 * NR + L); c42.intoArray(tile, 4 * NR + 2 * L);
        c50.intoArray(tile, 5 * NR); c51.intoArray(tile, 5 * NR + L); c52.intoArray(tile, 5 * NR + 2 * L);
        c60.intoArray(tile, 6 * NR); c61.intoArray(tile, 6 * NR + L); c62.intoArray(tile, 6 * NR + 2 * L);
        c70.intoArray(tile, 7 * NR); c71.intoArray(tile, 7 * NR + L); c72.intoArray(tile, 7 * NR + 2 * L);
    }

    /*
     * Merging a tile into C. Full tiles use vector FMA, edge tiles scalar Math.fma: both round once, so an
     * element gets the same bits whichever path (and hence whichever thread split) wrote it.
     *   first slab, beta == 0: C = alpha·acc   (old C never read: it may hold NaN)
     *   first slab, beta != 0: C = fma(alpha, acc, beta·C)
     *   later slabs:           C = fma(alpha, acc, C)
     */
    private static void mergeFull(float[] tile, float alpha, boolean first, float beta,
                                  MemorySegment c, long cTile, int ldc) {
        for (int r = 0; r < MR; r++) {
            long rowByte = (cTile + (long) r * ldc) * Float.BYTES;
            for (int v = 0; v < NR; v += L) {
                FloatVector acc = FloatVector.fromArray(S, tile, r * NR + v);
                long at = rowByte + (long) v * Float.BYTES;
                FloatVector out;
                if (first && beta == 0f) {
                    out = acc.mul(alpha);
                } else {
                    FloatVector old = FloatVector.fromMemorySegment(S, c, at, NATIVE);
                    out = acc.fma(FloatVector.broadcast(S, alpha), first ? old.mul(beta) : old);
                }
                out.intoMemorySegment(c, at, NATIVE);
            }
        }
    }

    private static void mergeEdge(float[] tile, int rows, int cols, float alpha, boolean first, float beta,
                                  MemorySegment c, long cTile, int ldc) {
        for (int r = 0; r < rows; r++) {
            long row = cTile + (long) r * ldc;
            for (int j = 0; j < cols; j++) {
                float acc = tile[r * NR + j];
                float out;
                if (first && beta == 0f) {
                    out = acc * alpha;
                } else {
                    float old = c.getAtIndex(F, row + j);
                    out = Math.fma(acc, alpha, first ? old * beta : old);
                }
                c.setAtIndex(F, row + j, out);
            }
        }
    }

    /**
     * Packs op(A)[ic..ic+mc)[pc..pc+kc) as MR-row strips: strip s, step p holds rows s·MR..s·MR+MR at
     * {@code dst[s·kc·MR + p·MR + r]}; rows past mc are zero.
     */
    static void packA(boolean transA, MemorySegment a, long aOff, int lda, int ic, int mc, int pc, int kc,
                      float[] dst) {
        int fullStrips = mc / MR;
        if (transA) {
            // Aᵀ: row p of A holds op(A)[ic..ic+mc)[p] contiguously; walk it once, MR floats per strip
            for (int p = 0; p < kc; p++) {
                long src = aOff + (long) (pc + p) * lda + ic;
                int d = p * MR;
                for (int s = 0; s < fullStrips; s++, d += kc * MR, src += MR) {
                    for (int r = 0; r < MR; r++) dst[d + r] = a.getAtIndex(F, src + r);
                }
            }
        } else {
            // A row i is contiguous along p: read MR rows side by side, write each step's MR values together
            for (int s = 0; s < fullStrips; s++) {
                long r0 = aOff + (long) (ic + s * MR) * lda + pc;
                int d = s * kc * MR;
                for (int p = 0; p < kc; p++, d += MR) {
                    for (int r = 0; r < MR; r++) {
                        dst[d + r] = a.getAtIndex(F, r0 + (long) r * lda + p);
                    }
                }
            }
        }
        int rows = mc - fullStrips * MR;
        if (rows > 0) {
            int base = fullStrips * kc * MR;
            for (int p = 0; p < kc; p++) {
                for (int r = 0; r < MR; r++) {
                    int i = ic + fullStrips * MR + r;
                    dst[base + p * MR + r] = r >= rows ? 0f
                            : transA ? a.getAtIndex(F, aOff + (long) (pc + p) * lda + i)
                                     : a.getAtIndex(F, aOff + (long) i * lda + pc + p);
                }
            }
        }
    }

    /**
     * Packs op(B)[pc..pc+kc)[jc..jc+nc) as NR-column strips: strip t, step p holds columns
     * t·NR..t·NR+NR at {@code dst[t·kc·NR + p·NR + j]}; columns past nc are zero.
     */
    static void packB(boolean transB, MemorySegment b, long bOff, int ldb, int pc, int kc, int jc, int nc,
                      float[] dst) {
        for (int t = 0; t * NR < nc; t++) {
            int base = t * kc * NR;
            int cols = Math.min(NR, nc - t * NR);
            if (!transB) {
                for (int p = 0; p < kc; p++) {
                    long src = bOff + (long) (pc + p) * ldb + jc + t * NR;
                    int d = base + p * NR;
                    if (cols == NR) {
                        for (int v = 0; v < NR; v += L) {
                            FloatVector.fromMemorySegment(S, b, (src + v) * Float.BYTES, NATIVE).intoArray(dst, d + v);
                        }
                    } else {
                        for (int j = 0; j < cols; j++) dst[d + j] = b.getAtIndex(F, src + j);
                        for (int j = cols; j < NR; j++) dst[d + j] = 0f;
                    }
                }
            } else {
                // Bᵀ: column j of op(B) is row j of B, contiguous along p
                int done = 0;
                if (cols == NR && Transpose16.SUPPORTED) {
                    done = kc & ~15;
                    long src0 = bOff + (long) (jc + t * NR) * ldb + pc;
                    // 16 rows of B at a time, each read front to back
                    for (int j0 = 0; j0 < NR; j0 += 16) {
                        for (int p0 = 0; p0 < done; p0 += 16) {
                            Transpose16.block(b, src0 + (long) j0 * ldb + p0, ldb, dst, base + p0 * NR + j0, NR);
                        }
                    }
                }
                for (int j = 0; j < cols && done < kc; j++) {
                    long src = bOff + (long) (jc + t * NR + j) * ldb + pc;
                    for (int p = done; p < kc; p++) {
                        dst[base + p * NR + j] = b.getAtIndex(F, src + p);
                    }
                }
                if (cols < NR) {
                    for (int p = 0; p < kc; p++) {
                        for (int j = cols; j < NR; j++) dst[base + p * NR + j] = 0f;
                    }
                }
            }
        }
    }
}
