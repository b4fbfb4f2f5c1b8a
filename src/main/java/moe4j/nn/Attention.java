package moe4j.nn;

import moe4j.ops.AttentionOps;
import moe4j.ops.Ops;
import moe4j.tensor.Tensor;

/**
 * Causal grouped-query self-attention with rotary position embeddings, Llama style:
 * <pre>
 *   q = rope(x·wqᵀ), k = rope(x·wkᵀ), v = x·wvᵀ     (B, S, H, hd)
 *   out = softmax(q·kᵀ/√hd + causal mask)·v · woᵀ
 * </pre>
 * wq (Hq·hd, D), wk and wv (Hkv·hd, D), wo (D, Hq·hd), bias-free, stored (out, in).
 */
public final class Attention extends Module {
    private final int dim;
    private final int nHeads;
    private final int nKvHeads;
    private final int headDim;
    private final double ropeTheta;
    private final Linear wq;
    private final Linear wk;
    private final Linear wv;
    private final Linear wo;

    public Attention(int dim, int nHeads, int nKvHeads, double ropeTheta) {
        if (nHeads < 1 || nKvHeads < 1 || dim % nHeads != 0 || nHeads % nKvHeads != 0) {
            throw new IllegalArgumentException("Attention: dim (" + dim + ") must be divisible by n_heads (" + nHeads
                    + ") and n_heads by n_kv_heads (" + nKvHeads + ")");
        }
        this.dim = dim;
        this.nHeads = nHeads;
        this.nKvHeads = nKvHeads;
        this.headDim = dim / nHeads;
        this.ropeTheta = ropeTheta;
        this.wq = registerModule("wq", new Linear(dim, nHeads * headDim));
        this.wk = registerModule("wk", new Linear(dim, nKvHeads * headDim));
        this.wv = registerModule("wv", new Linear(dim, nKvHeads * headDim));
        this.wo = registerModule("wo", new Linear(nHeads * headDim, dim));
    }

    public Linear wq() {
        return wq;
    }

    public Linear wk() {
        return wk;
    }

    public Linear wv() {
        return wv;
    }

    public Linear wo() {
        return wo;
    }

    public int nHeads() {
        return nHeads;
    }

    public int nKvHeads() {
        return nKvHeads;
    }

    public int headDim() {
        return headDim;
    }

    /**
     * {@code x} (B, S, D) → (B, S, D); position s attends to positions 0..s of its own sequence. The heads
     * computed are those whose projections this module holds (all, unless tensor parallelism split them).
     */
    public Tensor forward(Tensor x) {
        if (x.rank() != 3 || x.dim(2) != dim) {
            throw new IllegalArgumentException("Attention: input must be (B, S, " + dim + "), got " + x.shapeString());
        }
        return wrapped(x, this::attend);
    }

    private Tensor attend(Tensor x) {
        int nHeads = wq.outFeatures() / headDim;
        int nKvHeads = wk.outFeatures() / headDim;
        int b = x.dim(0);
        int s = x.dim(1);
        Tensor x2 = Ops.reshape(x, b * s, dim);
        Tensor q = AttentionOps.rope(Ops.reshape(wq.forward(x2), b, s, nHeads, headDim), ropeTheta);
        Tensor k = AttentionOps.rope(Ops.reshape(wk.forward(x2), b, s, nKvHeads, headDim), ropeTheta);
        Tensor v = Ops.reshape(wv.forward(x2), b, s, nKvHeads, headDim);
        Tensor attended = AttentionOps.causalAttention(q, k, v);
        return Ops.reshape(wo.forward(Ops.reshape(attended, b * s, nHeads * headDim)), b, s, dim);
    }
}
