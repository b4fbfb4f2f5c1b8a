package moe4j.kernels.cpu;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import moe4j.kernels.ExecutionContext;
import java.util.concurrent.Semaphore;

/**
 * Single-precision GEMM on off-heap row-major matrices:
 * {@code C = alpha · op(A) · op(B) + beta · C}, with {@code op(X)} = X or Xᵀ.
 * Offsets and leading dimensions are in elements (floats).
 *
 * <p>op(A) is m×k, op(B) is k×n, C is m×n. A is stored m×k (k×m when {@code transA}) with row stride
 * {@code lda}; B is stored k×n (n×k when {@code transB}) with row stride {@code ldb}. When beta is 0,
 * C's old contents are never read (NaN there does not leak into the result).
 *
 * <p>The work is a packed, register-blocked Vector API kernel ({@link GemmBlocked}) whose register tile
 * and cache blocking are chosen for the CPU it runs on ({@link #tuning()}). When the calling thread's
 * {@link ExecutionContext} allows more than one CPU thread, large products are split by columns (or rows)
 * of C over that context's own worker pool; every element of C is computed by one thread in the same
 * order whatever the thread count, so results are bitwise identical for any setting. Segments of a
 * confined arena cannot be read by the pool's threads; calls on them run on the calling thread alone.
 */
public final class Gemm {
    private Gemm() {}

    /** Below this many multiply-adds, threads cost more than they save. */
    private static final long PARALLEL_MIN_WORK = 1L << 21;

    /**
     * One permit per core: at most that many threads run a large GEMM at once. Rank threads beyond the core
     * count (P = 4 ranks on 2 cores) would otherwise be time-sliced in the middle of their products, each
     * slice evicting the others' packed blocks from the shared caches; waiting in line, each product runs
     * start to finish with the caches to itself. Not fair on purpose: a rank that releases its permit and
     * starts its next product may take the permit straight back, so a rank runs its whole compute phase
     * (e.g. all the groups of a grouped GEMM) in one stretch rather than taking turns product by product;
     * it cannot run ahead for long, since the next all-to-all waits for the ranks still in line. Products
     * under {@link #PARALLEL_MIN_WORK} pass without a permit; {@code -Dmoe4j.gemm.ungated=true} turns the
     * gate off, for comparison.
     */
    private static final int CORES_TOTAL = Runtime.getRuntime().availableProcessors();
    private static final Semaphore CORES = new Semaphore(CORES_TOTAL, false);
    private static final boolean GATED = !Boolean.getBoolean("moe4j.gemm.ungated");

    /** The extra threads of one execution context (its thread count minus the caller), made on first use. */
    private static final class Workers implements AutoCloseable {
        final ExecutorService pool;
        /** One of the pool's threads: asks whether a segment (e.g. of a confined arena) may be used there. */
        final Thread aWorker;

        Workers(int count) {
            Thread[] made = new Thread[1];
            ThreadPoolExecutor executor = (ThreadPoolExecutor) Executors.newFixedThreadPool(count, r -> {
                Thread t = new Thread(r, "moe4j-gemm");
                t.setDaemon(true);
                made[0] = t;
                return t;
            });
            executor.prestartAllCoreThreads(); // on this thread, so aWorker is a real worker
            pool = executor;
            aWorker = made[0];
        }

        @Override
        public void close() {
            pool.shutdown();
        }
    }

    /** The register tile and cache blocking chosen for this machine's CPU. */
    public static GemmTuning tuning() {
        return GemmBlocked.TUNING;
    }

    /** How many threads one sgemm call on this thread may use: its execution context's CPU threads. */
    public static int threads() {
        return ExecutionContext.current().cpuThreads();
    }

    /**
     * {@code C = alpha·op(A)·op(B) + beta·C} (see the class comment for shapes and strides). Empty
     * products (m, n or k = 0) and alpha = 0 only scale C by beta.
     *
     * @throws IllegalArgumentException for negative sizes, a leading dimension below the row width, or a
     *         matrix that does not fit in its segment
     */
    public static void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                             MemorySegment a, long aOff, int lda,
                             MemorySegment b, long bOff, int ldb,
                             float beta, MemorySegment c, long cOff, int ldc) {
        if (m < 0 || n < 0 || k < 0) {
            throw new IllegalArgumentException("sgemm: negative size m=" + m + " n=" + n + " k=" + k);
        }
        checkMatrix("sgemm", "A", a, aOff, lda, transA ? k : m, transA ? m : k);
        checkMatrix("sgemm", "B", b, bOff, ldb, transB ? n : k, transB ? k : n);
        checkMatrix("sgemm", "C", c, cOff, ldc, m, n);
        if (m == 0 || n == 0) return;
        if (k == 0 || alpha == 0f) {
            scale(m, n, beta, c, cOff, ldc);
            return;
        }
        ExecutionContext ctx = ExecutionContext.current();
        int t = ctx.cpuThreads();
        if ((long) m * n * k < PARALLEL_MIN_WORK) {
            GemmBlocked.compute(transA, transB, 0, m, 0, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
            return;
        }
        int permits = GATED ? Math.min(t, CORES_TOTAL) : 0;
        if (permits > 0) CORES.acquireUninterruptibly(permits);
        try {
            if (t == 1) {
                GemmBlocked.compute(transA, transB, 0, m, 0, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
            } else {
                parallel(ctx, t, transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
            }
        } finally {
            if (permits > 0) CORES.release(permits);
        }
    }

    /** C = beta·C on an m×n block; beta 0 writes zeros without reading. */
    static void scale(int m, int n, float beta, MemorySegment c, long cOff, int ldc) {
        if (beta == 1f) return;
        for (int i = 0; i < m; i++) {
            long row = cOff + (long) i * ldc;
            if (beta == 0f) {
                c.asSlice(row * Float.BYTES, (long) n * Float.BYTES).fill((byte) 0);
            } else {
                for (int j = 0; j < n; j++) {
                    c.setAtIndex(GemmBlocked.F, row + j, beta * c.getAtIndex(GemmBlocked.F, row + j));
                }
            }
        }
    }

    /**
     * Splits C into contiguous column ranges (whole NR strips) or, when C is too narrow, row ranges
     * (whole MR strips); the caller computes the first part itself.
     */
    private static void parallel(ExecutionContext ctx, int t, boolean transA, boolean transB, int m, int n, int k, float alpha,
                                 MemorySegment a, long aOff, int lda, MemorySegment b, long bOff, int ldb,
                                 float beta, MemorySegment c, long cOff, int ldc) {
        int colStrips = (n + GemmBlocked.NR - 1) / GemmBlocked.NR;
        int rowStrips = (m + GemmBlocked.MR - 1) / GemmBlocked.MR;
        boolean byCols = colStrips >= t || colStrips >= rowStrips;
        int strips = byCols ? colStrips : rowStrips;
        int unit = byCols ? GemmBlocked.NR : GemmBlocked.MR;
        int extent = byCols ? n : m;
        int parts = Math.min(t, strips);
        if (parts == 1) {
            GemmBlocked.compute(transA, transB, 0, m, 0, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
            return;
        }
        Workers workers = ctx.resource(Workers.class, () -> new Workers(t - 1));
        if (!sharedWithWorkers(workers.aWorker, a, b, c)) {
            GemmBlocked.compute(transA, transB, 0, m, 0, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
            return;
        }
        List<Future<?>> pending = new ArrayList<>(parts - 1);
        int[] bounds = new int[parts + 1];
        for (int q = 0; q <= parts; q++) {
            bounds[q] = Math.min(extent, (int) ((long) strips * q / parts) * unit);
        }
        for (int q = 1; q < parts; q++) {
            int lo = bounds[q], hi = bounds[q + 1];
            if (lo >= hi) continue;
            Runnable part = () -> computePart(byCols, lo, hi, m, n, transA, transB, k, alpha,
                    a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
            try {
                pending.add(workers.pool.submit(part));
            } catch (RejectedExecutionException contextClosed) {
                part.run(); // the context was closed meanwhile: same result, computed here
            }
        }
        computePart(byCols, bounds[0], bounds[1], m, n, transA, transB, k, alpha, a, aOff, lda, b, bOff, ldb,
                beta, c, cOff, ldc);
        for (Future<?> f : pending) {
            try {
                f.get();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("sgemm: interrupted while waiting for worker threads", e);
            } catch (ExecutionException e) {
                throw new IllegalStateException("sgemm: worker thread failed", e.getCause());
            }
        }
    }

    /** Segments of a confined arena can only be read by their owner: such calls stay on one thread. */
    private static boolean sharedWithWorkers(Thread w, MemorySegment a, MemorySegment b, MemorySegment c) {
        return a.isAccessibleBy(w) && b.isAccessibleBy(w) && c.isAccessibleBy(w);
    }

    private static void computePart(boolean byCols, int lo, int hi, int m, int n, boolean transA, boolean transB,
                                    int k, float alpha, MemorySegment a, long aOff, int lda, MemorySegment b,
                                    long bOff, int ldb, float beta, MemorySegment c, long cOff, int ldc) {
        if (byCols) {
            GemmBlocked.compute(transA, transB, 0, m, lo, hi, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
        } else {
            GemmBlocked.compute(transA, transB, lo, hi, 0, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
        }
    }

    /** Checks that a rows×cols matrix with row stride ld at element offset off lies inside seg. */
    static void checkMatrix(String op, String name, MemorySegment seg, long off, int ld, int rows, int cols) {
        if (rows == 0 || cols == 0) return; // an empty matrix is never touched
        if (ld < cols) {
            throw new IllegalArgumentException(op + ": leading dimension of " + name + " is " + ld
                    + ", expected >= " + cols + " (its row width)");
        }
        if (off < 0) {
            throw new IllegalArgumentException(op + ": offset of " + name + " is " + off + ", expected >= 0");
        }
        if (seg == null) throw new IllegalArgumentException(op + ": matrix " + name + " is null");
        long last = off + (long) (rows - 1) * ld + cols;
        long have = seg.byteSize() / Float.BYTES;
        if (last > have) {
            throw new IllegalArgumentException(op + ": " + name + " (" + rows + "x" + cols + ", ld " + ld
                    + ", offset " + off + ") needs " + last + " floats, segment holds " + have);
        }
    }
}
