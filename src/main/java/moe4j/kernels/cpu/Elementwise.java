package moe4j.kernels.cpu;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vectorised element-wise loops over float32 off-heap arrays. Offsets and lengths are in elements.
 * These are the non-GEMM parts of an MoE layer's step (activations, weighting, accumulation), so they
 * run at memory speed rather than one scalar at a time.
 */
public final class Elementwise {
    private Elementwise() {}

    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final int L = S.length();
    /** Doubles of half the float lane count: one float vector converts into two of these. */
    private static final VectorSpecies<Double> DS = VectorSpecies.of(double.class, jdk.incubator.vector.VectorShape.forBitSize(S.vectorBitSize()));
    private static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;
    private static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT;

    private static FloatVector load(MemorySegment m, long i) {
        return FloatVector.fromMemorySegment(S, m, i * 4, LE);
    }

    private static final FloatVector ONE = FloatVector.broadcast(S, 1f);

    private static FloatVector sigmoid(FloatVector x) {
        return ONE.div(exp(x.neg()).add(1f));
    }

    private static final float LOG2E = 1.44269504f;
    private static final float LN2_HI = 0.693145752f; // ln 2 split so that n·LN2_HI is exact for |n| < 2^11
    private static final float LN2_LO = 1.42860677e-6f;

    /**
     * e^x with only exactly-specified lane operations (add, mul, fma, conversions, shifts). The Vector
     * API's EXP operator is free to differ between the interpreter and compiled code, which would make
     * a training run depend on when the JIT kicked in; this one gives the same bits every time.
     * Cody-Waite reduction x = n·ln 2 + r, |r| ≤ ln2/2, then a degree-7 Taylor polynomial
     * (relative error below 1e-7 after rounding) scaled by 2^n; x is clamped to [−87, 88].
     */
    static FloatVector exp(FloatVector x) {
        FloatVector c = x.max(-87f).min(88f);
        FloatVector t = c.mul(LOG2E);
        // round half away from zero: truncation of t ± 0.5
        FloatVector half = FloatVector.broadcast(S, 0.5f).blend(FloatVector.broadcast(S, -0.5f), t.lt(0f));
        IntVector n = (IntVector) t.add(half).convert(VectorOperators.F2I, 0);
        FloatVector nf = (FloatVector) n.convert(VectorOperators.I2F, 0);
        FloatVector r = nf.fma(FloatVector.broadcast(S, -LN2_HI), c);
        r = nf.fma(FloatVector.broadcast(S, -LN2_LO), r);
        FloatVector p = FloatVector.broadcast(S, 1f / 5040);
        p = p.fma(r, FloatVector.broadcast(S, 1f / 720));
        p = p.fma(r, FloatVector.broadcast(S, 1f / 120));
        p = p.fma(r, FloatVector.broadcast(S, 1f / 24));
        p = p.fma(r, FloatVector.broadcast(S, 1f / 6));
        p = p.fma(r, FloatVector.broadcast(S, 0.5f));
        p = p.fma(r, ONE);
        p = p.fma(r, ONE);
        FloatVector scale = n.add(127).lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats();
        return p.mul(scale);
    }

    /** y[i] += alpha · x[i]. */
    public static void axpy(long n, float alpha, MemorySegment x, long xOff, MemorySegment y, long yOff) {
        long i = 0;
        long bound = n - n % L;
        for (; i < bound; i += L) {
            load(x, xOff + i).fma(FloatVector.broadcast(S, alpha), load(y, yOff + i)).intoMemorySegment(y, (yOff + i) * 4, LE);
        }
        for (; i < n; i++) y.setAtIndex(F, yOff + i, y.getAtIndex(F, yOff + i) + alpha * x.getAtIndex(F, xOff + i));
    }

    /**
     * y[i] += alpha · x[i] with the product rounded to float before the sum (two roundings, unlike
     * {@link #axpy}'s fused multiply-add): the bits of scaling x into a buffer and adding that to y.
     */
    public static void addProduct(long n, float alpha, MemorySegment x, long xOff, MemorySegment y, long yOff) {
        long i = 0;
        long bound = n - n % L;
        for (; i < bound; i += L) {
            load(x, xOff + i).mul(alpha).add(load(y, yOff + i)).intoMemorySegment(y, (yOff + i) * 4, LE);
        }
        for (; i < n; i++) y.setAtIndex(F, yOff + i, y.getAtIndex(F, yOff + i) + alpha * x.getAtIndex(F, xOff + i));
    }

    /** out[i] = a[i] + alpha · b[i]. */
    public static void addScaled(long n, MemorySegment a, float alpha, MemorySegment b, MemorySegment out) {
        long i = 0;
        long bound = n - n % L;
        for (; i < bound; i += L) load(b, i).fma(FloatVector.broadcast(S, alpha), load(a, i)).intoMemorySegment(out, i * 4, LE);
        for (; i < n; i++) out.setAtIndex(F, i, a.getAtIndex(F, i) + alpha * b.getAtIndex(F, i));
    }

    /** out[i] = a[i] · b[i]. */
    public static void mul(long n, MemorySegment a, MemorySegment b, MemorySegment out) {
        long i = 0;
        long bound = n - n % L;
        for (; i < bound; i += L) load(a, i).mul(load(b, i)).intoMemorySegment(out, i * 4, LE);
        for (; i < n; i++) out.setAtIndex(F, i, a.getAtIndex(F, i) * b.getAtIndex(F, i));
    }

    /** out[i] = alpha · a[i] (offsets allow row slices). */
    public static void scale(long n, float alpha, MemorySegment a, long aOff, MemorySegment out, long outOff) {
        long i = 0;
        long bound = n - n % L;
        for (; i < bound; i += L) load(a, aOff + i).mul(alpha).intoMemorySegment(out, (outOff + i) * 4, LE);
        for (; i < n; i++) out.setAtIndex(F, outOff + i, alpha * a.getAtIndex(F, aOff + i));
    }

    /** out = silu(a) = a · sigmoid(a). */
    public static void silu(long n, MemorySegment a, MemorySegment out) {
        long i = 0;
        long bound = n - n % L;
        for (; i < bound; i += L) {
            FloatVector x = load(a, i);
            FloatVector sig = sigmoid(x);
            x.mul(sig).intoMemorySegment(out, i * 4, LE);
        }
        for (; i < n; i++) {
            float x = a.getAtIndex(F, i);
            out.setAtIndex(F, i, (float) (x / (1 + Math.exp(-x))));
        }
    }

    /** gradIn = gradOut · silu'(a), silu'(a) = s · (1 + a · (1 − s)) with s = sigmoid(a). */
    public static void siluBackward(long n, MemorySegment a, MemorySegment gradOut, MemorySegment gradIn) {
        long i = 0;
        long bound = n - n % L;
        for (; i < bound; i += L) {
            FloatVector x = load(a, i);
            FloatVector s = sigmoid(x);
            FloatVector d = s.mul(x.mul(s.neg().add(1f)).add(1f));
            d.mul(load(gradOut, i)).intoMemorySegment(gradIn, i * 4, LE);
        }
        for (; i < n; i++) {
            double x = a.getAtIndex(F, i);
            double s = 1 / (1 + Math.exp(-x));
            gradIn.setAtIndex(F, i, (float) (gradOut.getAtIndex(F, i) * s * (1 + x * (1 - s))));
        }
    }

    /** Fused SwiGLU: out = silu(gate) · up. */
    public static void swiglu(long n, MemorySegment gate, MemorySegment up, MemorySegment out) {
        long i = 0;
        long bound = n - n % L;
        for (; i < bound; i += L) {
            FloatVector g = load(gate, i);
            FloatVector sig = sigmoid(g);
            g.mul(sig).mul(load(up, i)).intoMemorySegment(out, i * 4, LE);
        }
        for (; i < n; i++) {
            float g = gate.getAtIndex(F, i);
            out.setAtIndex(F, i, (float) (g / (1 + Math.exp(-g))) * up.getAtIndex(F, i));
        }
    }

    /**
     * Backward of the fused SwiGLU: gradGate = gradOut · up · silu'(gate), gradUp = gradOut · silu(gate).
     */
    public static void swigluBackward(long n, MemorySegment gate, MemorySegment up, MemorySegment gradOut,
                                      MemorySegment gradGate, MemorySegment gradUp) {
        long i = 0;
        long bound = n - n % L;
        for (; i < bound; i += L) {
            FloatVector g = load(gate, i);
            FloatVector go = load(gradOut, i);
            FloatVector s = sigmoid(g);
            FloatVector silu = g.mul(s);
            FloatVector dsilu = s.mul(g.mul(s.neg().add(1f)).add(1f));
            go.mul(load(up, i)).mul(dsilu).intoMemorySegment(gradGate, i * 4, LE);
            go.mul(silu).intoMemorySegment(gradUp, i * 4, LE);
        }
        for (; i < n; i++) {
            double g = gate.getAtIndex(F, i);
            double go = gradOut.getAtIndex(F, i);
            double s = 1 / (1 + Math.exp(-g));
            gradGate.setAtIndex(F, i, (float) (go * up.getAtIndex(F, i) * s * (1 + g * (1 - s))));
            gradUp.setAtIndex(F, i, (float) (go * g * s));
        }
    }

    /** Σ a[i] in double precision (used for losses and norms, where float accumulation drifts). */
    /**
     * The lanes of {@code v} added in lane order, in double. {@code reduceLanes(ADD)} may add them in
     * another order in compiled code than in the interpreter, so results would depend on the JIT.
     */
    static double sumLanes(FloatVector v) {
        double s = 0;
        for (float x : v.toArray()) s += x;
        return s;
    }

    public static double sum(long n, MemorySegment a, long aOff) {
        return sumSquaresOrValues(n, a, aOff, false);
    }

    /**
     * Σ a[i] or Σ a[i]², accumulated per lane in double and the lanes then added in lane order: a fixed
     * order, unlike {@code reduceLanes}, whose order may differ between interpreted and compiled code.
     */
    private static double sumSquaresOrValues(long n, MemorySegment a, long aOff, boolean squares) {
        DoubleVector acc0 = DoubleVector.zero(DS);
        DoubleVector acc1 = DoubleVector.zero(DS);
        long i = 0;
        long bound = n - n % L;
        for (; i < bound; i += L) {
            FloatVector v = load(a, aOff + i);
            DoubleVector lo = (DoubleVector) v.convertShape(VectorOperators.F2D, DS, 0);
            DoubleVector hi = (DoubleVector) v.convertShape(VectorOperators.F2D, DS, 1);
            acc0 = squares ? lo.fma(lo, acc0) : acc0.add(lo);
            acc1 = squares ? hi.fma(hi, acc1) : acc1.add(hi);
        }
        double total = 0;
        for (double lane : acc0.add(acc1).toArray()) total += lane;
        for (; i < n; i++) {
            double v = a.getAtIndex(F, aOff + i);
            total += squares ? v * v : v;
        }
        return total;
    }

    /** Σ a[i]² in double precision. */
    public static double sumOfSquares(long n, MemorySegment a, long aOff) {
        return sumSquaresOrValues(n, a, aOff, true);
    }

    /**
     * One AdamW update in place: m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
     * p ← p − lr·((m/c1) / (√(v/c2) + ε) + λ·p), with c1, c2 the bias corrections and g the stored gradient
     * times {@code gradScale} (a float product, as if the gradient had been scaled in place first).
     */
    public static void adamW(long n, MemorySegment p, MemorySegment g, MemorySegment m, MemorySegment v, float lr,
                             float beta1, float beta2, float eps, float decay, float c1, float c2, float gradScale) {
        long i = 0;
        long bound = n - n % L;
        FloatVector b1 = FloatVector.broadcast(S, beta1);
        FloatVector b2 = FloatVector.broadcast(S, beta2);
        for (; i < bound; i += L) {
            FloatVector gv = load(g, i).mul(gradScale);
            FloatVector mv = load(m, i).mul(b1).add(gv.mul(1 - beta1));
            FloatVector vv = load(v, i).mul(b2).add(gv.mul(gv).mul(1 - beta2));
            mv.intoMemorySegment(m, i * 4, LE);
            vv.intoMemorySegment(v, i * 4, LE);
            FloatVector pv = load(p, i);
            FloatVector update = mv.div(c1).div(vv.div(c2).sqrt().add(eps)).add(pv.mul(decay));
            pv.sub(update.mul(lr)).intoMemorySegment(p, i * 4, LE);
        }
        for (; i < n; i++) {
            float gi = g.getAtIndex(F, i) * gradScale;
            float mi = m.getAtIndex(F, i) * beta1 + gi * (1 - beta1);
            float vi = v.getAtIndex(F, i) * beta2 + gi * gi * (1 - beta2);
            m.setAtIndex(F, i, mi);
            v.setAtIndex(F, i, vi);
            float pi = p.getAtIndex(F, i);
            float update = (mi / c1) / ((float) Math.sqrt(vi / c2) + eps) + decay * pi;
            p.setAtIndex(F, i, pi - lr * update);
        }
    }
}
