package moe4j.nn;

import moe4j.ops.AttentionOps;
import moe4j.ops.Ops;
import moe4j.tensor.Tensor;

/**
 * Causal grouped-query self-attention with rotary position embeddings, Llama style:
 * <pre>
 *   q = rope(norm_q(x·wqᵀ + bq)), k = rope(norm_k(x·wkᵀ + bk)), v = x·wvᵀ + bv     (B, S, H, hd)
 *   out = softmax(q·kᵀ/√hd + causal mask)·v · woᵀ
 * </pre>
 * wq (Hq·hd, D), wk and wv (Hkv·hd, D), wo (D, Hq·hd), stored (out, in). The biases, the query/key norms
 * ({@link QkNorm}, registered as {@code q_norm}, {@code k_norm}), linear RoPE scaling and a sliding window
 * are off unless {@link Options} asks for them.
 */
public final class Attention extends Module {
    /**
     * The shape and variant of one attention layer.
     *
     * @param headDim hd; Hq·hd may differ from the model dimension
     * @param ropeScale linear RoPE scaling: positions are divided by it (1: none)
     * @param qkvBias q, k and v projections carry biases
     * @param normEps epsilon of the query/key RMSNorms
     * @param slidingWindow each position attends to the last this-many positions (0: all earlier ones)
     */
    public record Options(int nHeads, int nKvHeads, int headDim, double ropeTheta, double ropeScale, boolean qkvBias,
                          QkNorm qkNorm, double normEps, int slidingWindow) {
        public Options {
            if (nHeads < 1 || nKvHeads < 1 || nHeads % nKvHeads != 0) {
                throw new IllegalArgumentException("Attention: n_heads (" + nHeads + ") must be a multiple of n_kv_heads (" + nKvHeads + ")");
            }
            if (headDim < 2 || headDim % 2 != 0) throw new IllegalArgumentException("Attention: head_dim must be even and >= 2, got " + headDim);
            if (!(ropeTheta > 0) || !(ropeScale > 0)) {
                throw new IllegalArgumentException("Attention: rope theta and scale must be > 0, got " + ropeTheta + " and " + ropeScale);
            }
            if (slidingWindow < 0) throw new IllegalArgumentException("Attention: sliding window must be >= 0 (0 = none), got " + slidingWindow);
            if (qkNorm == null) throw new IllegalArgumentException("Attention: qkNorm must be set");
        }

        /** Plain Llama attention: hd = dim / nHeads, no bias, no norm, no scaling, no window. */
        public static Options plain(int dim, int nHeads, int nKvHeads, double ropeTheta) {
            if (nHeads < 1 || dim % nHeads != 0) {
                throw new IllegalArgumentException("Attention: dim (" + dim + ") must be divisible by n_heads (" + nHeads
                        + ") and n_heads by n_kv_heads (" + nKvHeads + ")");
            }
            return new Options(nHeads, nKvHeads, dim / nHeads, ropeTheta, 1.0, false, QkNorm.NONE, 1e-6, 0);
        }
    }

    private final int dim;
    private final int nHeads;
    private final int nKvHeads;
    private final int headDim;
    private final Options options;
    private final Linear wq;
    private final Linear wk;
    private final Linear wv;
    private final Linear wo;
    private final RMSNorm qNorm;
    private final RMSNorm kNorm;

    public Attention(int dim, int nHeads, int nKvHeads, double ropeTheta) {
        this(dim, Options.plain(dim, nHeads, nKvHeads, ropeTheta));
    }

    public Attention(int dim, Options options) {
        this.dim = dim;
        this.options = options;
        this.nHeads = options.nHeads();
        this.nKvHeads = options.nKvHeads();
        this.headDim = options.headDim();
        this.wq = registerModule("wq", new Linear(dim, nHeads * headDim, options.qkvBias()));
        this.wk = registerModule("wk", new Linear(dim, nKvHeads * headDim, options.qkvBias()));
        this.wv = registerModule("wv", new Linear(dim, nKvHeads * headDim, options.qkvBias()));
        this.wo = registerModule("wo", new Linear(nHeads * headDim, dim));
        boolean all = options.qkNorm() == QkNorm.ALL_HEADS;
        this.qNorm = options.qkNorm() == QkNorm.NONE ? null
                : registerModule("q_norm", new RMSNorm(all ? nHeads * headDim : headDim, options.normEps()));
        this.kNorm = options.qkNorm() == QkNorm.NONE ? null
                : registerModule("k_norm", new RMSNorm(all ? nKvHeads * headDim : headDim, options.normEps()));
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

    /** The query norm, or null without QK-norm. */
    public RMSNorm qNorm() {
        return qNorm;
    }

    /** The key norm, or null without QK-norm. */
    public RMSNorm kNorm() {
        return kNorm;
    }

    public int headDim() {
        return headDim;
    }

    public Options options() {
        return options;
    }

    /**
     * {@code x} (B, S, D) → (B, S, D); position s attends to positions 0..s of its own sequence (or its
     * window). The heads computed are those whose projections this module holds (all, unless tensor
     * parallelism split them).
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
        Tensor q = queries(x2, b, s, 0);
        Tensor k = keys(x2, b, s, 0);
        Tensor v = Ops.reshape(wv.forward(x2), b, s, nKvHeads, headDim);
        Tensor attended = options.slidingWindow() > 0 && options.slidingWindow() < s
                ? AttentionOps.slidingWindowAttention(q, k, v, options.slidingWindow())
                : AttentionOps.causalAttention(q, k, v);
        return Ops.reshape(wo.forward(Ops.reshape(attended, b * s, nHeads * headDim)), b, s, dim);
    }

    /**
     * Decoding step: {@code x} (n, D) are the next n tokens of one sequence, at positions
     * {@code cache.length() ..}; their keys and values are appended to {@code cache} and they attend to
     * everything cached. Returns (n, D). No gradient.
     */
    public Tensor forwardCached(Tensor x, KvCache.Layer cache) {
        int n = x.dim(0);
        int start = cache.length();
        Tensor q = queries(x, 1, n, start);
        Tensor k = keys(x, 1, n, start);
        Tensor v = wv.forward(x);
        cache.append(k, v, n);
        Tensor attended = AttentionOps.cachedAttention(Ops.reshape(q, n, nHeads, headDim), cache.keys(), cache.values(), start,
                options.slidingWindow());
        return wo.forward(Ops.reshape(attended, n, nHeads * headDim));
    }

    /** (B·S, D) → rotated queries (B, S, Hq, hd) for positions start.. */
    private Tensor queries(Tensor x2, int b, int s, int start) {
        return project(wq, qNorm, x2, b, s, wq.outFeatures() / headDim, start);
    }

    private Tensor keys(Tensor x2, int b, int s, int start) {
        return project(wk, kNorm, x2, b, s, wk.outFeatures() / headDim, start);
    }

    private Tensor project(Linear w, RMSNorm norm, Tensor x2, int b, int s, int heads, int start) {
        Tensor p = w.forward(x2);
        if (options.qkNorm() == QkNorm.ALL_HEADS) p = norm.forward(p);
        p = Ops.reshape(p, b, s, heads, headDim);
        if (options.qkNorm() == QkNorm.PER_HEAD) p = norm.forward(p);
        return AttentionOps.rope(p, options.ropeTheta(), options.ropeScale(), start);
    }
}
