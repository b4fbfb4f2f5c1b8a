package moe4j.kernels.cpu;

import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Ragged grouped GEMM for mixture-of-experts layers: the tokens routed to E experts sit in one matrix X,
 * sorted by expert, group g owning rows {@code [offsets[g], offsets[g+1])}; each group is multiplied by
 * its own weight. Groups may have any length, zero included; nothing is padded, and an empty group costs
 * nothing.
 *
 * <p>Weights are given per group as a segment and an element offset, so both layouts work unchanged:
 * a packed (E, k, n) tensor (every {@code w[g]} the same segment, {@code wOff[g] = g·k·n}) and a list of
 * separate expert tensors ({@code wOff[g] = 0}).
 *
 * <p>The three products of an expert layer's training step, for Y = X·W with W of shape (k, n):
 * <ul>
 *   <li>forward: {@code forward(..., k, n, X, W, transW = false, Y, ...)};</li>
 *   <li>input gradient dX = dY·Wᵀ: the same forward call on dY with {@code transW = true} and the roles of
 *       k and n swapped: {@code forward(..., n, k, dY, W, transW = true, dX, ...)} (W is still stored
 *       (k, n), which is the (n', k') layout transW expects);</li>
 *   <li>weight gradient dW = Xᵀ·dY: {@link #weightGrad}.</li>
 * </ul>
 *
 * <p>Each group is one {@link Gemm#sgemm} call, which makes one pass over W_g per call whatever the
 * group's length: a transposed W_g is packed once and shared by all the group's rows; an untransposed
 * one is read in place (groups of up to a few hundred rows), which saves the packing pass that would
 * otherwise cost as much as a short group's arithmetic.
 *
 * <p>{@link #rowsProcessed()} counts the rows of X that forward and weightGrad multiplied, so callers can
 * check that dropped tokens cost no compute.
 */
public final class GroupedGemm {
    private GroupedGemm() {}

    private static final AtomicLong ROWS = new AtomicLong();

    /** Rows multiplied by {@link #forward} and {@link #weightGrad} since the last reset (all threads). */
    public static long rowsProcessed() {
        return ROWS.get();
    }

    /** Sets {@link #rowsProcessed()} back to zero. */
    public static void resetRowsProcessed() {
        ROWS.set(0);
    }

    /**
     * {@code Y_g = X_g · op(W_g) + beta · Y_g} for every group g.
     *
     * @param groups  number of groups E
     * @param offsets E+1 non-decreasing row indices into X and Y; group g is rows [offsets[g], offsets[g+1])
     * @param k       width of X (the reduction dimension)
     * @param n       width of Y
     * @param x       X, row-major with row stride k, starting at element {@code xOff}
     * @param w       per-group weight segments (may all be the same segment)
     * @param wOff    per-group element offsets of W_g in {@code w[g]}
     * @param transW  false: W_g is stored (k, n); true: W_g is stored (n, k) and used transposed
     * @param y       Y, row-major with row stride n, starting at element {@code yOff}
     * @param beta    0 overwrites the group's rows of Y (old contents never read), 1 accumulates
     */
    public static void forward(int groups, int[] offsets, int k, int n, MemorySegment x, long xOff,
                               MemorySegment[] w, long[] wOff, boolean transW, MemorySegment y, long yOff,
                               float beta) {
        checkGroups("GroupedGemm.forward", groups, offsets, k, n, w, wOff);
        long rows = 0;
        for (int g = 0; g < groups; g++) {
            int r0 = offsets[g], m = offsets[g + 1] - r0;
            if (m == 0) continue;
            Gemm.checkMatrix("GroupedGemm.forward", "W[" + g + "]", w[g], wOff[g], transW ? k : n,
                    transW ? n : k, transW ? k : n);
            Gemm.sgemm(false, transW, m, n, k, 1f, x, xOff + (long) r0 * k, k,
                    w[g], wOff[g], transW ? k : n, beta, y, yOff + (long) r0 * n, n);
            rows += m;
        }
        ROWS.addAndGet(rows);
    }

    /**
     * {@code dW_g = beta · dW_g + X_gᵀ · dY_g} for every group g, each dW_g of shape (k, n); an empty group
     * only scales its dW_g by beta (0: zero-filled without reading, 1: untouched).
     *
     * @param x    X, row-major (rows, k) at {@code xOff}
     * @param dy   dY, row-major (rows, n) at {@code dyOff}
     * @param dw   per-group gradient segments (may all be the same segment)
     * @param dwOff per-group element offsets of dW_g in {@code dw[g]}
     */
    public static void weightGrad(int groups, int[] offsets, int k, int n, MemorySegment x, long xOff,
                                  MemorySegment dy, long dyOff, MemorySegment[] dw, long[] dwOff, float beta) {
        checkGroups("GroupedGemm.weightGrad", groups, offsets, k, n, dw, dwOff);
        long rows = 0;
        for (int g = 0; g < groups; g++) {
            int r0 = offsets[g], m = offsets[g + 1] - r0;
            if (m == 0) {
                Gemm.checkMatrix("GroupedGemm.weightGrad", "dW[" + g + "]", dw[g], dwOff[g], n, k, n);
                Gemm.scale(k, n, beta, dw[g], dwOff[g], n);
                continue;
            }
            Gemm.checkMatrix("GroupedGemm.weightGrad", "dW[" + g + "]", dw[g], dwOff[g], n, k, n);
            Gemm.sgemm(true, false, k, n, m, 1f, x, xOff + (long) r0 * k, k,
                    dy, dyOff + (long) r0 * n, n, beta, dw[g], dwOff[g], n);
            rows += m;
        }
        ROWS.addAndGet(rows);
    }

    private static void checkGroups(String op, int groups, int[] offsets, int k, int n,
                                    MemorySegment[] w, long[] wOff) {
        if (groups < 0) throw new IllegalArgumentException(op + ": groups = " + groups + ", expected >= 0");
        if (k < 0 || n < 0) throw new IllegalArgumentException(op + ": negative width k=" + k + " n=" + n);
        if (offsets == null || offsets.length < groups + 1) {
            throw new IllegalArgumentException(op + ": offsets has " + (offsets == null ? "no" : offsets.length)
                    + " entries, expected groups + 1 = " + (groups + 1));
        }
        if (w == null || wOff == null || w.length < groups || wOff.length < groups) {
            throw new IllegalArgumentException(op + ": " + groups + " groups need " + groups
                    + " weight segments and offsets, got " + (w == null ? "none" : w.length) + " and "
                    + (wOff == null ? "none" : wOff.length));
        }
        if (offsets[0] < 0) throw new IllegalArgumentException(op + ": offsets[0] = " + offsets[0] + ", expected >= 0");
        for (int g = 0; g < groups; g++) {
            if (offsets[g + 1] < offsets[g]) {
                throw new IllegalArgumentException(op + ": offsets must not decrease, but offsets[" + g + "] = "
                        + offsets[g] + " > offsets[" + (g + 1) + "] = " + offsets[g + 1]);
            }
        }
    }
}
