package moe4j.kernels.cpu;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.concurrent.ForkJoinPool;
import java.util.function.IntConsumer;
import java.util.stream.IntStream;
import moe4j.kernels.AttentionKernels;
import moe4j.kernels.ExecutionContext;
import moe4j.tensor.Tensor;

/**
 * Rotary embedding, blocked causal (optionally sliding-window) attention and attention against a
 * key/value cache on the host. Activations are (B, S, H, hd), so one
 * (batch, head) slice is an S × hd matrix with row stride H·hd and GEMM reads it in place.
 */
final class CpuAttention implements AttentionKernels {
    private static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT;

    @Override
    public void rope(Tensor x, double theta, double scale, int start, float sign, Tensor out) {
        int b = x.dim(0);
        int s = x.dim(1);
        int h = x.dim(2);
        int hd = x.dim(3);
        rotate(x.data(), out.data(), b, s, h, hd, new RopeTable(start, s, hd, theta, scale), sign);
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

    @Override
    public void causalAttention(Tensor q, Tensor k, Tensor v, int rowBlock, int window, Tensor probs, Tensor out) {
        Geometry geo = new Geometry(q.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3));
        int s = geo.s;
        int hd = geo.hd;
        int hq = geo.hq;
        float scale = (float) (1 / Math.sqrt(hd));
        // One task per (batch, query head): each writes its own slices of P and of the output.
        parallelFor(geo.b * hq, task -> {
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
    }

    @Override
    public void causalAttentionBackward(Tensor gOut, Tensor q, Tensor k, Tensor v, Tensor out, Tensor probs, int rowBlock, int window,
                                        Tensor gq, Tensor gk, Tensor gv) {
        Geometry geo = new Geometry(q.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3));
        int s = geo.s;
        int hd = geo.hd;
        float scale = (float) (1 / Math.sqrt(hd));
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
    }

    /** The first key row i attends to: 0 without a window, else {@code max(0, i − window + 1)}. */
    private static int windowStart(int i, int window) {
        return window > 0 ? Math.max(0, i - window + 1) : 0;
    }

    @Override
    public void cachedAttention(Tensor q, Tensor kCache, Tensor vCache, int start, int window, Tensor out) {
        int n = q.dim(0);
        int hq = q.dim(1);
        int hd = q.dim(2);
        int hkv = kCache.dim(1);
        double scale = 1 / Math.sqrt(hd);
        MemorySegment qd = q.data();
        MemorySegment kd = kCache.data();
        MemorySegment vd = vCache.data();
        MemorySegment od = out.data();
        int group = hq / hkv;
        // One task per (query row, head); a handful of rows per call, so float64 dot products cost little.
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
    }

    /** The fork-join pool of one execution context, sized to its CPU threads. */
    private record Pool(ForkJoinPool pool) implements AutoCloseable {
        @Override
        public void close() {
            pool.shutdown();
        }
    }

    /**
     * Runs {@code body} for every index in [0, n) on up to the calling thread's context CPU threads (the
     * GEMM setting, so one knob sizes all compute); the bodies must write disjoint memory and allocate no
     * tensors (worker threads have no step scope). The GEMMs inside run single-threaded on the workers.
     */
    private static void parallelFor(int n, IntConsumer body) {
        ExecutionContext ctx = ExecutionContext.current();
        int t = Math.min(ctx.cpuThreads(), n);
        if (t <= 1) {
            for (int i = 0; i < n; i++) body.accept(i);
            return;
        }
        ForkJoinPool pool = ctx.resource(Pool.class, () -> new Pool(new ForkJoinPool(ctx.cpuThreads()))).pool();
        pool.submit(() -> IntStream.range(0, n).parallel().forEach(body)).join();
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
}
