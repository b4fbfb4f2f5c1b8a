package moe4j.ops;

import static moe4j.autograd.Autograd.record;

import moe4j.kernels.AttentionKernels;
import moe4j.kernels.Kernels;
import moe4j.tensor.DType;
import moe4j.tensor.Tensor;

/**
 * The differentiable pieces of self-attention: rotary position embedding and fused causal grouped-query
 * attention. Activations are laid out (B, S, H, hd) — batch, sequence, head, head dimension — which is
 * what a (B·S, H·hd) projection output already is, so no op here needs a transposition copy: one
 * (batch, head) slice is an S × hd matrix with row stride H·hd, and GEMM reads it in place.
 */
public final class AttentionOps {
    private AttentionOps() {}

    // ================================================================ rotary position embedding

    /**
     * Rotary position embedding in the Llama (Meta) convention: within each head, the pair of adjacent
     * elements {@code (x[2i], x[2i+1])} at position s is rotated by the angle {@code s · θ^(−2i/hd)},
     * positions running 0..S−1 along dimension 1. {@code x} is (B, S, H, hd) with an even hd.
     */
    public static Tensor rope(Tensor x, double theta) {
        return rope(x, theta, 1.0, 0);
    }

    /**
     * {@link #rope(Tensor, double)} with linear position scaling and an offset: the token at row s is at
     * position {@code start + s}, and angles are {@code (start + s) / scale · θ^(−2i/hd)} (scale 1 is plain
     * RoPE; a scale above 1 stretches the positions, "linear" RoPE scaling). The offset serves decoding
     * with a key/value cache, where new tokens follow the cached ones.
     */
    public static Tensor rope(Tensor x, double theta, double scale, int start) {
        requireRank4(x, "rope", "x");
        if (!(scale > 0)) throw new IllegalArgumentException("rope: scale must be > 0, got " + scale);
        if (start < 0) throw new IllegalArgumentException("rope: start position must be >= 0, got " + start);
        int hd = x.dim(3);
        if (hd % 2 != 0) throw new IllegalArgumentException("rope: head dimension must be even, got " + hd + " in " + x.shapeString());
        if (!(theta > 0)) throw new IllegalArgumentException("rope: theta must be > 0, got " + theta);
        AttentionKernels kernels = Kernels.of(x.device()).attention();
        Tensor out = Tensor.zerosLike(x);
        kernels.rope(x, theta, scale, start, 1f, out);
        return record(out, "rope", new Tensor[] {x}, g -> {
            // A rotation's adjoint is the rotation by the opposite angle.
            Tensor gi = Tensor.zerosLike(x);
            kernels.rope(g, theta, scale, start, -1f, gi);
            return new Tensor[] {gi};
        });
    }

    // ================================================================ causal grouped-query attention

    /**
     * {@code softmax(Q·Kᵀ/√hd + causal mask)·V} for q (B, S, Hq, hd), k and v (B, S, Hkv, hd) → (B, S, Hq, hd).
     * Grouped-query: query head h reads kv head {@code h / (Hq/Hkv)}, so Hkv = Hq is ordinary multi-head
     * attention and Hkv = 1 multi-query. Position i attends to positions 0..i of its own sequence.
     *
     * <p>The forward keeps the attention probabilities P (B, Hq, S, S) for the exact backward (a device
     * may keep less and recompute them, see {@link AttentionKernels#savedShape}):
     * with dP = dO·Vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)), one gets dQ = dS·K/√hd, dK = dSᵀ·Q/√hd, dV = Pᵀ·dO,
     * the kv gradients summed over the query heads of a group.
     */
    public static Tensor causalAttention(Tensor q, Tensor k, Tensor v) {
        return causalAttention(q, k, v, ROW_BLOCK);
    }

    /**
     * {@link #causalAttention(Tensor, Tensor, Tensor)} where position i attends only to the last {@code window}
     * positions {@code max(0, i − window + 1) .. i} (sliding-window attention, as Mistral-family models use).
     */
    public static Tensor slidingWindowAttention(Tensor q, Tensor k, Tensor v, int window) {
        if (window < 1) throw new IllegalArgumentException("slidingWindowAttention: window must be >= 1, got " + window);
        return attention(q, k, v, ROW_BLOCK, window);
    }

    /**
     * Query rows are processed in blocks of this many: block [i0, i1) needs keys 0..i1−1 only, so the GEMMs
     * skip most of the masked upper triangle (with S = 128, 75% of the full products' work remains).
     */
    static final int ROW_BLOCK = 64;

    /** {@link #causalAttention(Tensor, Tensor, Tensor)} with query rows in blocks of {@code rowBlock}. */
    static Tensor causalAttention(Tensor q, Tensor k, Tensor v, int rowBlock) {
        return attention(q, k, v, rowBlock, 0);
    }

    /** The causal attention with query rows in blocks of {@code rowBlock}, over the last {@code window} keys (0: all). */
    private static Tensor attention(Tensor q, Tensor k, Tensor v, int rowBlock, int window) {
        if (rowBlock < 1) throw new IllegalArgumentException("causalAttention: row block " + rowBlock + " must be >= 1");
        requireRank4(q, "causalAttention", "q");
        requireRank4(k, "causalAttention", "k");
        requireRank4(v, "causalAttention", "v");
        if (!k.sameShape(v)) {
            throw new IllegalArgumentException("causalAttention: k " + k.shapeString() + " and v " + v.shapeString() + " must have the same shape");
        }
        int b = q.dim(0);
        int s = q.dim(1);
        int hq = q.dim(2);
        int hd = q.dim(3);
        int hkv = k.dim(2);
        if (k.dim(0) != b || k.dim(1) != s || k.dim(3) != hd) {
            throw new IllegalArgumentException("causalAttention: k/v " + k.shapeString() + " must be (" + b + ", " + s + ", Hkv, " + hd
                    + ") to match q " + q.shapeString());
        }
        if (hkv < 1 || hq % hkv != 0) {
            throw new IllegalArgumentException("causalAttention: query heads (" + hq + ") must be a multiple of kv heads (" + hkv + ")");
        }
        AttentionKernels kernels = Kernels.on("causalAttention", q, k, v).attention();
        Tensor saved = Tensor.zeros(q.device(), kernels.savedShape(b, hq, s));
        Tensor out = Tensor.zerosLike(q);
        kernels.causalAttention(q, k, v, rowBlock, window, saved, out);
        return record(out, "causalAttention", new Tensor[] {q, k, v}, g -> {
            Tensor gq = Tensor.zerosLike(q);
            Tensor gk = Tensor.zerosLike(k);
            Tensor gv = Tensor.zerosLike(v);
            kernels.causalAttentionBackward(g, q, k, v, out, saved, rowBlock, window, gq, gk, gv);
            return new Tensor[] {gq, gk, gv};
        });
    }

    // ================================================================ decoding with a key/value cache

    /**
     * Attention of {@code n} new query rows against a key/value cache, for decoding (no gradient):
     * q (n, Hq, hd) holds the tokens at positions {@code start .. start + n − 1}, whose keys and values are
     * already in rows {@code start ..} of kCache and vCache (capacity, Hkv, hd). Query j attends to cache rows
     * {@code max(0, start + j − window + 1) .. start + j} ({@code window} 0: from row 0), as
     * {@link #causalAttention} does over a whole sequence. Returns (n, Hq, hd).
     */
    public static Tensor cachedAttention(Tensor q, Tensor kCache, Tensor vCache, int start, int window) {
        q.requireDType(DType.F32, "cachedAttention");
        kCache.requireDType(DType.F32, "cachedAttention");
        vCache.requireDType(DType.F32, "cachedAttention");
        if (q.rank() != 3 || kCache.rank() != 3 || !kCache.sameShape(vCache) || kCache.dim(2) != q.dim(2)
                || q.dim(1) % kCache.dim(1) != 0) {
            throw new IllegalArgumentException("cachedAttention: q must be (n, Hq, hd) and the caches (capacity, Hkv, hd) with Hkv dividing Hq, got q "
                    + q.shapeString() + ", k " + kCache.shapeString() + ", v " + vCache.shapeString());
        }
        int n = q.dim(0);
        if (start < 0 || start + n > kCache.dim(0)) {
            throw new IllegalArgumentException("cachedAttention: positions [" + start + ", " + (start + n) + ") exceed the cache capacity "
                    + kCache.dim(0));
        }
        if (window < 0) throw new IllegalArgumentException("cachedAttention: window must be >= 0 (0: none), got " + window);
        Tensor out = Tensor.zerosLike(q);
        Kernels.on("cachedAttention", q, kCache, vCache).attention().cachedAttention(q, kCache, vCache, start, window, out);
        return out;
    }

    private static void requireRank4(Tensor t, String op, String what) {
        t.requireDType(DType.F32, op);
        if (t.rank() != 4) {
            throw new IllegalArgumentException(op + ": " + what + " must be (B, S, H, head_dim), got shape " + t.shapeString());
        }
    }
}
