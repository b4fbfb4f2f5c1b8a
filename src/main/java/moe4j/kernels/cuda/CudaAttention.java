package moe4j.kernels.cuda;

import static moe4j.kernels.cuda.CudaKernels.at;

import moe4j.kernels.AttentionKernels;
import moe4j.tensor.Tensor;

/**
 * Rotary embedding and fused causal grouped-query attention on one GPU ({@code attention.cu}). The
 * forward keeps only each query row's log-sum-exp (B, Hq, S) for the backward, never the (B, Hq, S, S)
 * probabilities: the backward recomputes them. One warp per row, {@link #WARPS} rows per block; the
 * {@code rowBlock} of the interface (the CPU's GEMM blocking) has no meaning here.
 * The backward's scratch is taken outside the pool's scopes and freed before it returns.
 */
final class CudaAttention implements AttentionKernels {
    /** Largest head dimension the kernels hold in registers (8 elements per lane). */
    static final int MAX_HEAD_DIM = 256;
    /** Warps (rows) per block. */
    static final int WARPS = 4;

    private final CudaGpu gpu;

    CudaAttention(CudaGpu gpu) {
        this.gpu = gpu;
    }

    private CudaStream stream() {
        return CudaStream.of(gpu);
    }

    @Override
    public int[] savedShape(int b, int hq, int s) {
        return new int[] {b, hq, s};
    }

    /** Grid of a one-warp-per-row launch over {@code seq} rows of each of {@code slices} (batch, head) slices. */
    static int[] grid(int seq, int slices) {
        if (slices > 65535) {
            throw new IllegalArgumentException("cuda attention: batch × heads = " + slices + " exceeds the 65535 slices one launch covers");
        }
        return new int[] {Math.max(1, (seq + WARPS - 1) / WARPS), slices};
    }

    /** The head dimension fits the kernels' registers, else an error naming it and the limit. */
    static void checkHeadDim(int hd) {
        if (hd < 1 || hd > MAX_HEAD_DIM) {
            throw new UnsupportedOperationException("cuda attention: head dimension " + hd + " is outside [1, " + MAX_HEAD_DIM + "]");
        }
    }

    /** {@code saved} holds one log-sum-exp per (batch, query head, position), else an error naming its shape. */
    static void checkSaved(Tensor saved, int b, int hq, int s) {
        if (saved.numel() != (long) b * hq * s) {
            throw new IllegalArgumentException("cuda attention: saved " + saved.shapeString() + " must hold (" + b + ", " + hq + ", " + s
                    + ") row log-sum-exps (see savedShape)");
        }
    }

    @Override
    public void rope(Tensor x, double theta, double scale, int start, float sign, Tensor out) {
        CudaReductions.requireF32("rope", x, out);
        int s = x.dim(1), h = x.dim(2), hd = x.dim(3);
        long pairs = x.numel() / 2;
        if (pairs > 0) stream().launch(KernelSource.ATTENTION, "rope").over(pairs).ptr(at(x)).f64(theta).f64(scale).i32(start).f32(sign).i32(s).i32(h).i32(hd)
                .i64(pairs).ptr(at(out)).run();
    }

    @Override
    public void causalAttention(Tensor q, Tensor k, Tensor v, int rowBlock, int window, Tensor saved, Tensor out) {
        CudaReductions.requireF32("causalAttention", q, k, v, saved, out);
        if (window != 0) throw CudaKernels.missing("sliding-window attention (window " + window + ")");
        int b = q.dim(0), s = q.dim(1), hq = q.dim(2), hd = q.dim(3), hkv = k.dim(2);
        checkHeadDim(hd);
        checkSaved(saved, b, hq, s);
        if (q.numel() == 0) return;
        int[] grid = grid(s, b * hq);
        stream().launch(KernelSource.ATTENTION, "attention_forward").grid(grid[0], grid[1]).block(32 * WARPS).ptr(at(q)).ptr(at(k))
                .ptr(at(v)).i32(s).i32(hq).i32(hkv).i32(hd).f32(scale(hd)).ptr(at(out)).ptr(at(saved)).run();
    }

    @Override
    public void causalAttentionBackward(Tensor gOut, Tensor q, Tensor k, Tensor v, Tensor saved, int rowBlock, int window, Tensor gq,
                                        Tensor gk, Tensor gv) {
        CudaReductions.requireF32("causalAttentionBackward", gOut, q, k, v, saved, gq, gk, gv);
        if (window != 0) throw CudaKernels.missing("sliding-window attention (window " + window + ")");
        int b = q.dim(0), s = q.dim(1), hq = q.dim(2), hd = q.dim(3), hkv = k.dim(2);
        checkHeadDim(hd);
        checkSaved(saved, b, hq, s);
        if (q.numel() == 0) return;
        CudaStream st = stream();
        long delta = st.pool.allocatePersistent(4L * b * hq * s, "attention backward row sums");
        try {
            int[] qGrid = grid(s, b * hq);
            st.launch(KernelSource.ATTENTION, "attention_backward_q").grid(qGrid[0], qGrid[1]).block(32 * WARPS).ptr(at(gOut)).ptr(at(q))
                    .ptr(at(k)).ptr(at(v)).ptr(at(saved)).i32(s).i32(hq).i32(hkv).i32(hd).f32(scale(hd)).ptr(at(gq)).ptr(delta).run();
            int[] kvGrid = grid(s, b * hkv);
            st.launch(KernelSource.ATTENTION, "attention_backward_kv").grid(kvGrid[0], kvGrid[1]).block(32 * WARPS).ptr(at(gOut))
                    .ptr(at(q)).ptr(at(k)).ptr(at(v)).ptr(at(saved)).ptr(delta).i32(s).i32(hq).i32(hkv).i32(hd).f32(scale(hd))
                    .ptr(at(gk)).ptr(at(gv)).run();
        } finally {
            st.pool.free(delta);
        }
    }

    /** 1/√hd as the CPU rounds it. */
    static float scale(int hd) {
        return (float) (1 / Math.sqrt(hd));
    }

    @Override
    public void cachedAttention(Tensor q, Tensor kCache, Tensor vCache, int start, int window, Tensor out) {
        throw CudaKernels.missing("cached attention (decoding with a key/value cache)");
    }
}
