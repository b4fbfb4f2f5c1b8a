package moe4j.kernels.cpu;

import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorSpecies;

/**
 * The cache-blocked, packed GEMM behind {@link Gemm#sgemm}: computes one rectangular block of C on the
 * calling thread, with the register tile and blocking {@link GemmTuning} chose for this machine.
 *
 * <p>Loop nest (outermost first), as in the usual Goto/BLIS scheme:
 * <ol>
 *   <li>{@code jc}: columns of C in slabs of NC (wider when K is short, same L2 budget);</li>
 *   <li>{@code pc}: the reduction dimension in slabs of KC; the KC×NC block of op(B) is packed
 *       once here and reused by every row of C (for a grouped GEMM: each expert's weight is packed once
 *       per call and shared by all the group's rows); it is sized for L2. Short products (at most
 *       {@code DIRECT_B_MAX_ROWS} rows) with an untransposed B skip this packing and read B in place;</li>
 *   <li>{@code ic}: rows of C in slabs of MC; the MC×KC block of op(A) is packed;</li>
 *   <li>{@code ir}, {@code jr}: MR-high strips of A and NR-wide strips of B, one micro-kernel call each
 *       ({@link MicroKernels}), which keeps an MR×NR tile of C in 24 vector registers; a strip's tiles
 *       are merged into C together, row by row.</li>
 * </ol>
 * A product of at most MC rows (one row block) swaps the two outer loops: K slabs outside, so its A
 * panel is packed once per slab rather than once per slab and column slab.
 * Packing turns every layout (A or Aᵀ, B or Bᵀ) into the same contiguous panels, so one micro-kernel
 * serves all four; panels are zero-padded to full MR/NR so edge tiles need no special kernel.
 *
 * <p>Determinism: the value of C[i][j] depends only on K's slab boundaries and the order of the p loop,
 * never on which rows or columns a block covers, so any split of C across threads gives identical bits. The
 * tile shape does not change the order of the sum either, but KC does; every tuning uses the same KC.
 */
final class GemmBlocked {
    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int L = S.length();

    static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    /**
     * The tuning for this machine, fixed when the class loads: C2 then compiles every loop below with the
     * tile and block sizes as constants (read from instance fields, the packing and merging loops ran
     * several times slower).
     */
    static final GemmTuning TUNING = GemmTuning.forThisMachine();
    /** Rows of the register tile. */
    static final int MR = TUNING.mr();
    /** Columns of the register tile: whole vectors. */
    static final int NR = TUNING.nr();
    static final int KC = TUNING.kc();
    static final int MC = TUNING.mc();
    static final int NC = TUNING.nc();
    private static final int DIRECT_B_MAX_ROWS = TUNING.directBMaxRows();
    private static final boolean TWELVE_BY_TWO = TUNING.tile() == GemmTuning.Tile.ROWS12_BY_2_VECTORS;
    /** Columns of one row strip whose tiles are merged into C together: the B block's width. */
    private static final int STRIP_COLS = NC;
    /** The first MR lanes of a vector (all of them when MR exceeds the vector): one step of an A strip. */
    private static final VectorMask<Float> STRIP_ROWS = S.indexInRange(0, MR);

    static {
        if (TWELVE_BY_TWO && DIRECT_B_MAX_ROWS > 0) {
            throw new IllegalStateException("GemmBlocked: the 12x2 tile has no in-place-B kernel: " + TUNING.describe());
        }
    }

    /** Per-thread packing buffers, allocated once per thread and reused by every call. */
    static final class Scratch {
        final float[] packedA = new float[MC * KC];
        /** A block of B, with room for a slab stretched by a quarter (see {@link #compute}). */
        final float[] packedB = new float[KC * (NC + NC / 4 + NR) + LINE_FLOATS];
        /** The finished tiles of one row strip, up to {@link #STRIP_COLS} columns: see {@link #mergeTiles}. */
        final float[] tiles = new float[MR * STRIP_COLS + LINE_FLOATS];
        /** L steps of MR rows of A, row-major: the staging area of {@link #packA}. */
        final float[] aSteps = new float[MR * L];
    }

    private static final ThreadLocal<Scratch> SCRATCH = ThreadLocal.withInitial(Scratch::new);

    /** Floats in a cache line. */
    private static final int LINE_FLOATS = 64 / Float.BYTES;

    /**
     * libc's memcpy as a critical downcall (heap arrays allowed), called with a length of 0 only for what it
     * returns: its first argument, i.e. where a heap array's elements lie right now; null when it cannot be
     * linked (then packed B starts at element 0, as it always did).
     */
    private static final MethodHandle WHERE_IS = linkWhereIs();

    private static MethodHandle linkWhereIs() {
        try {
            Linker linker = Linker.nativeLinker();
            return linker.defaultLookup().find("memcpy").map(fn -> linker.downcallHandle(fn,
                    FunctionDescriptor.of(ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.JAVA_LONG),
                    Linker.Option.critical(true))).orElse(null);
        } catch (RuntimeException | LinkageError e) {
            return null;
        }
    }

    /**
     * The first element of {@code array} at or after index 0 that starts a cache line, 0 when unknown.
     * The packed B panel starts there: a 64-byte vector load that straddles two lines costs the 12x2 kernel
     * about an eighth of its speed (measured on Intel Ice Lake, all eight possible placements of a
     * heap array: one ran at 168 GFLOP/s, the seven split ones at 147), and the JVM places arrays on 8-byte
     * boundaries only. The placement is asked for each product because the collector may move the array;
     * it changes where the panel lies, never what is computed, so results are the same bits whatever it is.
     */
    static int lineStart(float[] array) {
        if (WHERE_IS == null) return 0;
        try {
            MemorySegment elements = MemorySegment.ofArray(array);
            long address = ((MemorySegment) WHERE_IS.invokeExact(elements, elements, 0L)).address();
            return (int) ((-address & (LINE_FLOATS * Float.BYTES - 1)) / Float.BYTES);
        } catch (Throwable e) {
            return 0;
        }
    }

    /**
     * Computes rows [i0, i1) × columns [j0, j1) of {@code C = alpha·op(A)·op(B) + beta·C}; k &gt; 0.
     * Arguments are as in {@link Gemm#sgemm}, already validated.
     */
    static void compute(boolean transA, boolean transB, int i0, int i1, int j0, int j1, int k, float alpha,
                        MemorySegment a, long aOff, int lda, MemorySegment b, long bOff, int ldb,
                        float beta, MemorySegment c, long cOff, int ldc) {
        Scratch s = SCRATCH.get();
        int bStart = lineStart(s.packedB), tilesStart = lineStart(s.tiles);
        // a short reduction (e.g. a weight gradient over a few tokens) leaves the B block small: widen it
        // to the same L2 budget, so A is packed fewer times
        int ncMax = Math.max(NC, (KC * NC / Math.min(k, KC)) / NR * NR);
        if (i1 - i0 <= MC && (transB || i1 - i0 > DIRECT_B_MAX_ROWS)) {
            // one row block (e.g. the 512-row expert products): K slabs outside, so that its A panel is
            // packed once per slab and serves every column slab; each element of C still gets its slabs in
            // order, so the bits are those of the loop order below
            for (int pc = 0; pc < k; pc += KC) {
                int kcHere = Math.min(KC, k - pc);
                packA(s, transA, a, aOff, lda, i0, i1 - i0, pc, kcHere);
                for (int jc = j0, ncHere; jc < j1; jc += ncHere) {
                    ncHere = slabWidth(jc, j1, ncMax);
                    packB(transB, b, bOff, ldb, pc, kcHere, jc, ncHere, s.packedB, bStart);
                    macroKernel(s.packedA, s.packedB, bStart, s.tiles, tilesStart, i1 - i0, ncHere, kcHere, alpha,
                            pc == 0, beta, c, cOff + (long) i0 * ldc + jc, ldc);
                }
            }
            return;
        }
        for (int jc = j0, ncHere; jc < j1; jc += ncHere) {
            ncHere = slabWidth(jc, j1, ncMax);
            for (int pc = 0; pc < k; pc += KC) {
                int kcHere = Math.min(KC, k - pc);
                if (!transB && i1 - i0 <= DIRECT_B_MAX_ROWS && ncHere >= NR) {
                    // few enough rows that packing B costs more than it saves
                    directB(s, bStart, tilesStart, transA, a, aOff, lda, i0, i1 - i0, b, bOff, ldb, pc, kcHere, jc, ncHere, alpha,
                            pc == 0, beta, c, cOff, ldc);
                    continue;
                }
                packB(transB, b, bOff, ldb, pc, kcHere, jc, ncHere, s.packedB, bStart);
                // the first K slab applies beta; later slabs accumulate onto the partial result
                boolean first = pc == 0;
                for (int ic = i0; ic < i1; ic += MC) {
                    int mcHere = Math.min(MC, i1 - ic);
                    packA(s, transA, a, aOff, lda, ic, mcHere, pc, kcHere);
                    macroKernel(s.packedA, s.packedB, bStart, s.tiles, tilesStart, mcHere, ncHere, kcHere, alpha, first, beta, c,
                            cOff + (long) ic * ldc + jc, ldc);
                }
            }
        }
    }

    /** The width of the column slab at jc: ncMax, or all that is left when the rest would be a sliver. */
    private static int slabWidth(int jc, int j1, int ncMax) {
        int ncHere = Math.min(ncMax, j1 - jc);
        // a last slab under a quarter of the others joins this one: A would be packed again for a sliver of
        // C (1024 columns in slabs of 960 leave 64)
        return j1 - jc - ncHere < ncMax / 4 ? j1 - jc : ncHere;
    }

    private static void macroKernel(float[] pa, float[] pb, int bStart, float[] tiles, int t0, int mcHere, int ncHere,
                                    int kcHere, float alpha, boolean first, float beta, MemorySegment c, long cOff,
                                    int ldc) {
        // rows outer: one A micro-panel is reused from L1 across the whole B block (in L2); the strip's tiles
        // go into C together once they are all done (see mergeTiles)
        for (int ir = 0; ir < mcHere; ir += MR) {
            int rows = Math.min(MR, mcHere - ir);
            int aBase = (ir / MR) * kcHere * MR;
            for (int j0 = 0; j0 < ncHere; j0 += STRIP_COLS) {
                int width = Math.min(STRIP_COLS, ncHere - j0);
                for (int jr = j0; jr < j0 + width; jr += NR) {
                    microKernel(kcHere, pa, aBase, pb, bStart + (jr / NR) * kcHere * NR, tiles, t0 + (jr - j0) * MR);
                }
                mergeTiles(tiles, t0, rows, width, alpha, first, beta, c, cOff + (long) ir * ldc + j0, ldc);
            }
        }
    }

    private static void microKernel(int kcHere, float[] pa, int aBase, float[] pb, int bBase, float[] tile, int t0) {
        if (TWELVE_BY_TWO) {
            MicroKernels.tile12x2(kcHere, pa, aBase, pb, bBase, tile, t0);
        } else {
            MicroKernels.tile8x3(kcHere, pa, aBase, pb, bBase, tile, t0);
        }
    }

    /**
     * One K slab of a product with at most {@code DIRECT_B_MAX_ROWS} rows and B not transposed (8x3 tile
     * only; see {@link GemmTuning#directBMaxRows()}): full
     * NR-wide strips read B where it lies (for short products, packing costs as much as the arithmetic
     * it feeds; for longer ones the row-major B rows still stream well from L2); only the ragged last
     * strip is packed. The arithmetic, and so every bit of the result, is that of the packed path.
     */
    private static void directB(Scratch s, int bStart, int t0, boolean transA, MemorySegment a, long aOff, int lda, int i0, int mcHere,
                                MemorySegment b, long bOff, int ldb, int pc, int kcHere, int jc, int ncHere,
                                float alpha, boolean first, float beta, MemorySegment c, long cOff, int ldc) {
        packA(s, transA, a, aOff, lda, i0, mcHere, pc, kcHere);
        int fullCols = ncHere / NR * NR;
        if (fullCols < ncHere) {
            // the ragged strip, packed on its own at the start of packedB
            packB(false, b, bOff, ldb, pc, kcHere, jc + fullCols, ncHere - fullCols, s.packedB, bStart);
        }
        long ldbBytes = (long) ldb * Float.BYTES;
        for (int ir = 0; ir < mcHere; ir += MR) {
            int rows = Math.min(MR, mcHere - ir);
            int aBase = (ir / MR) * kcHere * MR;
            long cRow = cOff + (long) (i0 + ir) * ldc + jc;
            for (int j0 = 0; j0 < ncHere; j0 += STRIP_COLS) {
                int width = Math.min(STRIP_COLS, ncHere - j0);
                for (int jr = j0; jr < j0 + width; jr += NR) {
                    int at = t0 + (jr - j0) * MR;
                    if (ncHere - jr >= NR) {
                        long bAt = (bOff + (long) pc * ldb + jc + jr) * Float.BYTES;
                        MicroKernels.tile8x3Direct(kcHere, s.packedA, aBase, b, bAt, ldbBytes, s.tiles, at);
                    } else {
                        microKernel(kcHere, s.packedA, aBase, s.packedB, bStart, s.tiles, at);
                    }
                }
                mergeTiles(s.tiles, t0, rows, width, alpha, first, beta, c, cRow + j0, ldc);
            }
        }
    }

    /*
     * Merging finished tiles into C. The micro-kernels of one MR-row strip leave their tiles side by side in
     * the tiles array (tile q at t0 + q·MR·NR, row-major inside); once the strip's tiles are done, rows
     * [0, rows) × columns [0, width) go into C at cRow, a row at a time. Whole vectors use vector FMA, the
     * last columns of a row scalar Math.fma: both round once, so an element gets the same bits whichever
     * way (and hence whichever thread split) wrote it.
     *   first slab, beta == 0: C = alpha·acc   (old C never read: it may hold NaN)
     *   first slab, beta != 0: C = fma(alpha, acc, beta·C)
     *   later slabs:           C = fma(alpha, acc, C)
     * Merged tile by tile (with a touch of the tile's lines before its micro-kernel to have them cached),
     * each of a tile's 24 vectors of C paid its own bounds, liveness and type check of the segment; along a
     * whole row C2 checks once, and C is read and written front to back.
     */
    private static void mergeTiles(float[] tiles, int t0, int rows, int width, float alpha, boolean first, float beta,
                                   MemorySegment c, long cRow, int ldc) {
        int vectorCols = width / L * L;
        for (int r = 0; r < rows; r++) {
            long rowByte = (cRow + (long) r * ldc) * Float.BYTES;
            int src = t0 + r * NR;
            if (first && beta == 0f) {
                for (int j = 0; j < vectorCols; j += L) {
                    FloatVector.fromArray(S, tiles, src + (j / NR) * (MR * NR) + j % NR).mul(alpha)
                            .intoMemorySegment(c, rowByte + (long) j * Float.BYTES, NATIVE);
                }
            } else {
                FloatVector alphas = FloatVector.broadcast(S, alpha);
                for (int j = 0; j < vectorCols; j += L) {
                    long at = rowByte + (long) j * Float.BYTES;
                    FloatVector old = FloatVector.fromMemorySegment(S, c, at, NATIVE);
                    FloatVector.fromArray(S, tiles, src + (j / NR) * (MR * NR) + j % NR)
                            .fma(alphas, first ? old.mul(beta) : old)
                            .intoMemorySegment(c, at, NATIVE);
                }
            }
            long row = cRow + (long) r * ldc;
            for (int j = vectorCols; j < width; j++) {
                float acc = tiles[src + (j / NR) * (MR * NR) + j % NR];
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
    private static void packA(Scratch scratch, boolean transA, MemorySegment a, long aOff, int lda, int ic, int mc,
                              int pc, int kc) {
        float[] dst = scratch.packedA;
        int fullStrips = mc / MR;
        if (transA) {
            // Aᵀ: row p of A holds op(A)[ic..ic+mc)[p] contiguously; walk it once, MR floats per strip
            for (int p = 0; p < kc; p++) {
                long src = aOff + (long) (pc + p) * lda + ic;
                int d = p * MR;
                for (int s = 0; s < fullStrips; s++, d += kc * MR, src += MR) {
                    if (MR <= L) {
                        // one masked vector copy; read float by float, each with its own bounds and liveness
                        // check, this was the slowest packing loop of the Aᵀ products
                        FloatVector.fromMemorySegment(S, a, src * Float.BYTES, NATIVE, STRIP_ROWS)
                                .intoArray(dst, d, STRIP_ROWS);
                    } else {
                        for (int r = 0; r < MR; r++) dst[d + r] = a.getAtIndex(F, src + r);
                    }
                }
            }
        } else {
            // A row i is contiguous along p: read L steps of the MR rows as one vector per row into a small
            // array, then write them out step by step (single floats read from a segment cost a bounds and
            // liveness check each, which made this loop several times slower than plain array reads)
            float[] steps = scratch.aSteps;
            int vectorSteps = kc / L * L;
            for (int s = 0; s < fullStrips; s++) {
                long r0 = aOff + (long) (ic + s * MR) * lda + pc;
                int d = s * kc * MR;
                for (int p0 = 0; p0 < vectorSteps; p0 += L) {
                    for (int r = 0; r < MR; r++) {
                        FloatVector.fromMemorySegment(S, a, (r0 + (long) r * lda + p0) * Float.BYTES, NATIVE)
                                .intoArray(steps, r * L);
                    }
                    for (int q = 0; q < L; q++, d += MR) {
                        for (int r = 0; r < MR; r++) dst[d + r] = steps[r * L + q];
                    }
                }
                for (int p = vectorSteps; p < kc; p++, d += MR) {
                    for (int r = 0; r < MR; r++) dst[d + r] = a.getAtIndex(F, r0 + (long) r * lda + p);
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
     * t·NR..t·NR+NR at {@code dst[start + t·kc·NR + p·NR + j]}; columns past nc are zero.
     */
    static void packB(boolean transB, MemorySegment b, long bOff, int ldb, int pc, int kc, int jc, int nc, float[] dst,
                      int start) {
        for (int t = 0; t * NR < nc; t++) {
            int base = start + t * kc * NR;
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
