package moe4j.ops;

import static moe4j.autograd.Autograd.record;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.concurrent.ForkJoinPool;
import java.util.function.IntConsumer;
import java.util.stream.IntStream;
import moe4j.kernels.cpu.Gemm;
import moe4j.kernels.cpu.SoftmaxRows;
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

    private static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT;

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
        int b = x.dim(0);
        int s = x.dim(1);
        int h = x.dim(2);
        RopeTable table = new RopeTable(s, hd, theta);
        Tensor out = Tensor.zeros(x.shape());
        rotate(x.data(), out.data(), b, s, h, hd, table, 1f);
        return record(out, "rope", new Tensor[] {x}, g -> {
            // A rotation's adjoint is the rotation by the opposite angle.
            Tensor gi = Tensor.zeros(x.shape());
            rotate(g.data(), gi.data(), b, s, h, hd, table, -1f);
            return new Tensor[] {gi};
        });
    }

    /** cos and sin of {@code s · θ^(−2i/hd)} for every position s and pair i, computed in float64. */
    private record RopeTable(float[] cos, float[] sin, int pairs) {
        RopeTable(int seq, int hd, double theta) {
            this(new float[seq * (hd / 2)], new float[seq * (hd / 2)], hd / 2);
            for (int p = 0; p < seq; p++) {
                for (int i = 0; i < pairs; i++) {
                    double angle = p * Math.pow(theta, -2.0 * i / hd);
                    cos[p * pairs + i] = (float) Math.cos(angle);
                    sin[p * pairs + i] = (float) Math.sin(angle);
                }
            }
        }
    }

    /** out = rotation of x by sign·angle, pair by pair. */
    private static void rotate(MemorySegment x, MemorySegment out, int b, int s, int h, int hd, RopeTable t, float sign) {
        int pairs = hd / 2;
        for (int bi = 0; bi < b; bi++) {
            for (int p = 0; p < s; p++) {
                long rowBase = ((long) bi * s + p) * h * hd;
                int tb = p * pairs;
                for (int head = 0; head < h; head++) {
                    long base = rowBase + (long) head * hd;
                    for (int i = 0; i < pairs; i++) {
                        float c = t.cos[tb + i];
                        float sn = sign * t.sin[tb + i];
                        float x0 = x.getAtIndex(F, base + 2 * i);
                        float x1 = x.getAtIndex(F, base + 2 * i + 1);
                        out.setAtIndex(F, base + 2 * i, x0 * c - x1 * sn);
                        out.setAtIndex(F, base + 2 * i + 1, x0 * sn + x1 * c);
                    }
                }
            }
        }
    }

    // ================================================================ causal grouped-query attention

    /**
     * {@code softmax(Q·Kᵀ/√hd + causal mask)·V} for q (B, S, Hq, hd), k and v (B, S, Hkv, hd) → (B, S, Hq, hd).
     * Grouped-query: query head h reads kv head {@code h / (Hq/Hkv)}, so Hkv = Hq is ordinary multi-head
     * attention and Hkv = 1 multi-query. Position i attends to positions 0..i of its own sequence.
     *
     * <p>The forward keeps the attention probabilities P (B, Hq, S, S) for the exact backward:
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
        Geometry geo = new Geometry(b, s, hq, hkv, hd);
        Tensor probs = Tensor.zeros(b, hq, s, s);
        Tensor out = Tensor.zeros(q.shape());
        float scale = (float) (1 / Math.sqrt(hd));
        // One task per (batch, query head): each writes its own slices of P and of the output.
        parallelFor(b * hq, task -> {
            int bi = task / hq;
            int h = task % hq;
            long qOff = geo.qOffset(bi, h);
            long kvOff = geo.kvOffset(bi, h);
            long pOff = geo.pOffset(bi, h);
            for (int i0 = 0; i0 < s; i0 += rowBlock) {
                int i1 = Math.min(s, i0 + rowBlock);
                int m = i1 - i0;
                long pBlock = pOff + (long) i0 * s;
                long qBlock = qOff + (long) i0 * geo.qStride();
                // scores[i0:i1, 0:i1] = Q[i0:i1]·K[0:i1]ᵀ/√hd; the masked part inside the block is overwritten next
                Gemm.sgemm(false, true, m, i1, hd, scale, q.data(), qBlock, geo.qStride(), k.data(), kvOff, geo.kvStride(),
                        0f, probs.data(), pBlock, s);
                for (int i = i0; i < i1; i++) SoftmaxRows.softmaxPrefix(probs.data(), pOff + (long) i * s, i + 1, s);
                // out[i0:i1] = P[i0:i1, 0:i1]·V[0:i1]
                Gemm.sgemm(false, false, m, hd, i1, 1f, probs.data(), pBlock, s, v.data(), kvOff, geo.kvStride(),
                        0f, out.data(), qBlock, geo.qStride());
            }
        });
        return record(out, "causalAttention", new Tensor[] {q, k, v}, g -> backward(g, q, k, v, probs, geo, scale, rowBlock));
    }

    private static Tensor[] backward(Tensor gOut, Tensor q, Tensor k, Tensor v, Tensor probs, Geometry geo, float scale,
                                    int rowBlock) {
        int s = geo.s;
        int hd = geo.hd;
        Tensor gq = Tensor.zeros(q.shape());
        Tensor gk = Tensor.zeros(k.shape());
        Tensor gv = Tensor.zeros(v.shape());
        int group = geo.hq / geo.hkv;
        // One task per (batch, kv head), running the query heads of its group in order: the tasks write
        // disjoint slices of dQ, dK, dV, and every sum is taken in the same order whatever the thread count.
        Tensor scratch = Tensor.zeros(geo.b * geo.hkv, s, s);
        parallelFor(geo.b * geo.hkv, task -> {
            int bi = task / geo.hkv;
            int g = task % geo.hkv;
            long dOff = (long) task * s * s;
            for (int h = g * group; h < (g + 1) * group; h++) {
                long qOff = geo.qOffset(bi, h);
                long kvOff = geo.kvOffset(bi, h);
                long pOff = geo.pOffset(bi, h);
                for (int i0 = 0; i0 < s; i0 += rowBlock) {
                    int i1 = Math.min(s, i0 + rowBlock);
                    int m = i1 - i0;
                    long pBlock = pOff + (long) i0 * s;
                    long dBlock = dOff + (long) i0 * s;
                    long qBlock = qOff + (long) i0 * geo.qStride();
                    // dV[0:i1] += P[i0:i1, 0:i1]ᵀ·dO[i0:i1] (summed over the query heads sharing this kv head)
                    Gemm.sgemm(true, false, i1, hd, m, 1f, probs.data(), pBlock, s, gOut.data(), qBlock, geo.qStride(),
                            1f, gv.data(), kvOff, geo.kvStride());
                    // dP = dO·Vᵀ, then the softmax backward row by row: dS = P ⊙ (dP − Σ_j dP·P)
                    Gemm.sgemm(false, true, m, i1, hd, 1f, gOut.data(), qBlock, geo.qStride(), v.data(), kvOff, geo.kvStride(),
                            0f, scratch.data(), dBlock, s);
                    for (int i = i0; i < i1; i++) {
                        SoftmaxRows.softmaxPrefixBackward(probs.data(), pOff + (long) i * s, scratch.data(), dOff + (long) i * s, i + 1, s);
                    }
                    // dQ[i0:i1] = dS·K[0:i1]/√hd ; dK[0:i1] += dSᵀ·Q[i0:i1]/√hd
                    Gemm.sgemm(false, false, m, hd, i1, scale, scratch.data(), dBlock, s, k.data(), kvOff, geo.kvStride(),
                            0f, gq.data(), qBlock, geo.qStride());
                    Gemm.sgemm(true, false, i1, hd, m, scale, scratch.data(), dBlock, s, q.data(), qBlock, geo.qStride(),
                            1f, gk.data(), kvOff, geo.kvStride());
                }
            }
        });
        return new Tensor[] {gq, gk, gv};
    }

    // ================================================================ threads

    private static ForkJoinPool pool;
    private static int poolThreads;

    /**
     * Runs {@code body} for every index in [0, n) on up to {@link Gemm#threads()} threads (the GEMM
     * setting, so one knob sizes all compute); the bodies must write disjoint memory and allocate no
     * tensors (worker threads have no step scope).
     */
    private static void parallelFor(int n, IntConsumer body) {
        int t = Math.min(Gemm.threads(), n);
        if (t <= 1) {
            for (int i = 0; i < n; i++) body.accept(i);
            return;
        }
        pool(Gemm.threads()).submit(() -> IntStream.range(0, n).parallel().forEach(body)).join();
    }

    private static synchronized ForkJoinPool pool(int threads) {
        if (pool == null || poolThreads != threads) {
            if (pool != null) pool.shutdown();
            pool = new ForkJoinPool(threads);
            poolThreads = threads;
        }
        return pool;
    }

    /** Offsets (in floats) of one (batch, head) slice in the (B, S, H, hd) activations and in P (B, Hq, S, S). */
    private record Geometry(int b, int s, int hq, int hkv, int hd) {
        int qStride() {
            return hq * hd;
        }

        int kvStride() {
            return hkv * hd;
        }

        long qOffset(int bi, int h) {
            return (long) bi * s * hq * hd + (long) h * hd;
        }

        long kvOffset(int bi, int h) {
            return (long) bi * s * hkv * hd + (long) (h / (hq / hkv)) * hd;
        }

        long pOffset(int bi, int h) {
            return ((long) bi * hq + h) * s * s;
        }
    }

    private static void requireRank4(Tensor t, String op, String what) {
        t.requireDType(DType.F32, op);
        if (t.rank() != 4) {
            throw new IllegalArgumentException(op + ": " + what + " must be (B, S, H, head_dim), got shape " + t.shapeString());
        }
    }
}
