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
        int b = x.dim(0);
        int s = x.dim(1);
        int h = x.dim(2);
        RopeTable table = new RopeTable(start, s, hd, theta, scale);
        Tensor out = Tensor.zeros(x.shape());
        rotate(x.data(), out.data(), b, s, h, hd, table, 1f);
        return record(out, "rope", new Tensor[] {x}, g -> {
            // A rotation's adjoint is the rotation by the opposite angle.
            Tensor gi = Tensor.zeros(x.shape());
            rotate(g.data(), gi.data(), b, s, h, hd, table, -1f);
            return new Tensor[] {gi};
        });
    }

    /** cos and sin of {@code (start + s) / scale · θ^(−2i/hd)} for every row s and pair i, computed in float64. */
    private record RopeTable(float[] cos, float[] sin, int pairs) {
        RopeTable(int start, int seq, int hd, double theta, double scale) {
            this(new float[seq * (hd / 2)], new float[seq * (hd / 2)], hd / 2);
            for (int p = 0; p < seq; p++) {
                for (int i = 0; i < pairs; i++) {
                    double angle = (start + p) / scale * Math.pow(theta, -2.0 * i / hd);
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
                for (int i = i0; i < i1; i++) {
                    // keys before the window get probability 0; the softmax runs over [lo, i]
                    int lo = windowStart(i, window);
                    long row = pOff + (long) i * s;
                    if (lo > 0) probs.data().asSlice(row * 4, (long) lo * 4).fill((byte) 0);
                    SoftmaxRows.softmaxPrefix(probs.data(), row + lo, i + 1 - lo, s - lo);
                }
                // out[i0:i1] = P[i0:i1, 0:i1]·V[0:i1]
                Gemm.sgemm(false, false, m, hd, i1, 1f, probs.data(), pBlock, s, v.data(), kvOff, geo.kvStride(),
                        0f, out.data(), qBlock, geo.qStride());
            }
        });
        return record(out, "causalAttention", new Tensor[] {q, k, v}, g -> backward(g, q, k, v, probs, geo, scale, rowBlock, window));
    }

    /** The first key row i attends to: 0 without a window, else {@code max(0, i − window + 1)}. */
    private static int windowStart(int i, int window) {
        return window > 0 ? Math.max(0, i - window + 1) : 0;
    }

    private static Tensor[] backward(Tensor gOut, Tensor q, Tensor k, Tensor v, Tensor probs, Geometry geo, float scale,
                                    int rowBlock, int window) {
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
                        int lo = windowStart(i, window);
                        long dRow = dOff + (long) i * s;
                        if (lo > 0) scratch.data().asSlice(dRow * 4, (long) lo * 4).fill((byte) 0);
                        SoftmaxRows.softmaxPrefixBackward(probs.data(), pOff + (long) i * s + lo, scratch.data(), dRow + lo, i + 1 - lo, s - lo);
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
        if (q.rank() != 3 || kCache.rank() != 3 || !kCache.sameShape(vCache) || kCache.dim(2) != q.dim(2)
                || q.dim(1) % kCache.dim(1) != 0) {
            throw new IllegalArgumentException("cachedAttention: q must be (n, Hq, hd) and the caches (capacity, Hkv, hd) with Hkv dividing Hq, got q "
                    + q.shapeString() + ", k " + kCache.shapeString() + ", v " + vCache.shapeString());
        }
        int n = q.dim(0);
        int hq = q.dim(1);
        int hd = q.dim(2);
        int hkv = kCache.dim(1);
        if (start < 0 || start + n > kCache.dim(0)) {
            throw new IllegalArgumentException("cachedAttention: positions [" + start + ", " + (start + n) + ") exceed the cache capacity "
                    + kCache.dim(0));
        }
        double scale = 1 / Math.sqrt(hd);
        Tensor out = Tensor.zeros(n, hq, hd);
        MemorySegment qd = q.data();
        MemorySegment kd = kCache.data();
        MemorySegment vd = vCache.data();
        MemorySegment od = out.data();
        int group = hq / hkv;
        parallelFor(n * hq, task -> {
            int j = task / hq;
            int h = task % hq;
            int pos = start + j;
            int lo = windowStart(pos, window);
            long qOff = ((long) j * hq + h) * hd;
            int kvHead = h / group;
            double[] scores = new double[pos + 1 - lo];
            double max = Double.NEGATIVE_INFINITY;
            for (int t = lo; t <= pos; t++) {
                long kOff = ((long) t * hkv + kvHead) * hd;
                double dot = 0;
                for (int c = 0; c < hd; c++) dot += qd.getAtIndex(F, qOff + c) * kd.getAtIndex(F, kOff + c);
                scores[t - lo] = dot * scale;
                max = Math.max(max, scores[t - lo]);
            }
            double sum = 0;
            for (int t = 0; t < scores.length; t++) {
                scores[t] = Math.exp(scores[t] - max);
                sum += scores[t];
            }
            long oOff = ((long) j * hq + h) * hd;
            for (int c = 0; c < hd; c++) {
                double acc = 0;
                for (int t = lo; t <= pos; t++) acc += scores[t - lo] * vd.getAtIndex(F, ((long) t * hkv + kvHead) * hd + c);
                od.setAtIndex(F, oOff + c, (float) (acc / sum));
            }
        });
        return out;
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
