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
        requireRank4(x, "rope", "x");
        int hd = x.dim(3);
        if (hd % 2 != 0) throw new IllegalArgumentException("rope: head dimension must be even, got " + hd + " in " + x.shapeString());
        if (!(theta > 0)) throw new IllegalArgumentException("rope: theta must be > 0, got " + theta);
        AttentionKernels kernels = Kernels.of(x.device()).attention();
        Tensor out = Tensor.zerosLike(x);
        kernels.rope(x, theta, 1f, out);
        return record(out, "rope", new Tensor[] {x}, g -> {
            // A rotation's adjoint is the rotation by the opposite angle.
            Tensor gi = Tensor.zerosLike(x);
            kernels.rope(g, theta, -1f, gi);
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
     * Query rows are processed in blocks of this many: block [i0, i1) needs keys 0..i1−1 only, so the GEMMs
     * skip most of the masked upper triangle (with S = 128, 75% of the full products' work remains).
     */
    static final int ROW_BLOCK = 64;

    /** {@link #causalAttention(Tensor, Tensor, Tensor)} with query rows in blocks of {@code rowBlock}. */
    static Tensor causalAttention(Tensor q, Tensor k, Tensor v, int rowBlock) {
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
        kernels.causalAttention(q, k, v, rowBlock, saved, out);
        return record(out, "causalAttention", new Tensor[] {q, k, v}, g -> {
            Tensor gq = Tensor.zerosLike(q);
            Tensor gk = Tensor.zerosLike(k);
            Tensor gv = Tensor.zerosLike(v);
            kernels.causalAttentionBackward(g, q, k, v, saved, rowBlock, gq, gk, gv);
            return new Tensor[] {gq, gk, gv};
        });
    }

    private static void requireRank4(Tensor t, String op, String what) {
        t.requireDType(DType.F32, op);
        if (t.rank() != 4) {
            throw new IllegalArgumentException(op + ": " + what + " must be (B, S, H, head_dim), got shape " + t.shapeString());
        }
    }
}
