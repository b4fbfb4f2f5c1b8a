package moe4j.ops;

import static org.junit.jupiter.api.Assertions.*;

import java.util.function.Function;
import moe4j.autograd.Autograd;
import moe4j.autograd.GradCheck;
import moe4j.kernels.ExecutionContext;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * RoPE and causal grouped-query attention against float64 loops: outputs at 1e-5 norm-wise; gradients
 * (one backward with a random seed r) against float64 central differences of {@code Σ r ⊙ f} on the
 * float64 reference at 1e-4.
 */
class AttentionOpsTest {
    static final double OUT_TOL = 1e-5;
    static final double GRAD_TOL = 1e-4;

    // ---------------------------------------------------------------- float64 references

    /** Pairs (2i, 2i+1) of each head rotated by s · θ^(−2i/hd). */
    static double[] ropeRef(double[] x, int b, int s, int h, int hd, double theta) {
        double[] out = new double[x.length];
        for (int bi = 0; bi < b; bi++) {
            for (int p = 0; p < s; p++) {
                for (int head = 0; head < h; head++) {
                    int base = ((bi * s + p) * h + head) * hd;
                    for (int i = 0; i < hd / 2; i++) {
                        double a = p * Math.pow(theta, -2.0 * i / hd);
                        double x0 = x[base + 2 * i];
                        double x1 = x[base + 2 * i + 1];
                        out[base + 2 * i] = x0 * Math.cos(a) - x1 * Math.sin(a);
                        out[base + 2 * i + 1] = x0 * Math.sin(a) + x1 * Math.cos(a);
                    }
                }
            }
        }
        return out;
    }

    /** Straightforward softmax(QKᵀ/√hd, causal)·V with head h reading kv head h / (Hq/Hkv). */
    static double[] attentionRef(double[] q, double[] k, double[] v, int b, int s, int hq, int hkv, int hd) {
        double[] out = new double[b * s * hq * hd];
        int group = hq / hkv;
        for (int bi = 0; bi < b; bi++) {
            for (int h = 0; h < hq; h++) {
                int g = h / group;
                for (int i = 0; i < s; i++) {
                    double[] w = new double[i + 1];
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j <= i; j++) {
                        double dot = 0;
                        for (int c = 0; c < hd; c++) {
                            dot += q[((bi * s + i) * hq + h) * hd + c] * k[((bi * s + j) * hkv + g) * hd + c];
                        }
                        w[j] = dot / Math.sqrt(hd);
                        max = Math.max(max, w[j]);
                    }
                    double z = 0;
                    for (int j = 0; j <= i; j++) z += (w[j] = Math.exp(w[j] - max));
                    for (int j = 0; j <= i; j++) {
                        for (int c = 0; c < hd; c++) {
                            out[((bi * s + i) * hq + h) * hd + c] += w[j] / z * v[((bi * s + j) * hkv + g) * hd + c];
                        }
                    }
                }
            }
        }
        return out;
    }

    /** d(Σ r ⊙ f(x))/dx by float64 central differences. */
    static double[] numericGrad(Function<double[], double[]> f, double[] x, double[] r) {
        double eps = 1e-6;
        double[] g = new double[x.length];
        for (int i = 0; i < x.length; i++) {
            double orig = x[i];
            x[i] = orig + eps;
            double plus = dot(f.apply(x), r);
            x[i] = orig - eps;
            double minus = dot(f.apply(x), r);
            x[i] = orig;
            g[i] = (plus - minus) / (2 * eps);
        }
        return g;
    }

    static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }

    static void assertClose(String what, double[] actual, double[] expected, double tol) {
        double err = GradCheck.relativeError(actual, expected);
        assertTrue(err <= tol, what + ": relative error " + err + " > " + tol);
    }

    // ---------------------------------------------------------------- RoPE

    @Test
    void ropeMatchesFloat64ReferenceWithGradient() {
        int b = 2, s = 5, h = 3, hd = 6;
        double theta = 10000;
        Tensor x = Tensor.randn(new Rng(1), 1.0, b, s, h, hd).requiresGrad(true);
        Tensor out = AttentionOps.rope(x, theta);
        double[] xd = x.toDoubleArray();
        assertClose("rope output", out.toDoubleArray(), ropeRef(xd, b, s, h, hd, theta), OUT_TOL);
        Tensor r = Tensor.randn(new Rng(2), 1.0, out.shape());
        Autograd.backward(out, r);
        assertClose("rope gradient", x.grad().toDoubleArray(),
                numericGrad(xv -> ropeRef(xv, b, s, h, hd, theta), xd, r.toDoubleArray()), GRAD_TOL);
    }

    @Test
    void ropeLeavesPositionZeroUnchangedAndPreservesNorms() {
        Tensor x = Tensor.randn(new Rng(3), 1.0, 1, 4, 2, 8);
        Tensor out = AttentionOps.rope(x, 500);
        for (int i = 0; i < 16; i++) assertEquals(x.get(i), out.get(i), 0f, "position 0 is rotated by angle 0");
        for (int row = 0; row < 8; row++) {
            double nx = 0, no = 0;
            for (int c = 0; c < 8; c++) {
                nx += x.get(row * 8L + c) * x.get(row * 8L + c);
                no += out.get(row * 8L + c) * out.get(row * 8L + c);
            }
            assertEquals(nx, no, 1e-5 * nx, "a rotation keeps each head's norm");
        }
    }

    @Test
    void ropeRejectsOddHeadDimAndWrongRank() {
        var e = assertThrows(IllegalArgumentException.class, () -> AttentionOps.rope(Tensor.zeros(1, 2, 1, 3), 10000));
        assertTrue(e.getMessage().contains("even"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> AttentionOps.rope(Tensor.zeros(2, 4), 10000));
    }

    // ---------------------------------------------------------------- attention

    @ParameterizedTest(name = "B={0} S={1} Hq={2} Hkv={3} hd={4} rowBlock={5}")
    @CsvSource({"1,1,1,1,4,32", "2,5,2,2,4,32", "2,6,4,2,3,32", "1,7,4,1,8,32", "3,4,3,1,2,32",
                "2,7,4,2,4,1", "2,7,4,2,4,3", "1,9,2,1,6,4", "2,70,2,1,4,64"})
    void attentionMatchesFloat64ReferenceWithGradients(int b, int s, int hq, int hkv, int hd, int rowBlock) {
        Tensor q = Tensor.randn(new Rng(11), 1.0, b, s, hq, hd).requiresGrad(true);
        Tensor k = Tensor.randn(new Rng(12), 1.0, b, s, hkv, hd).requiresGrad(true);
        Tensor v = Tensor.randn(new Rng(13), 1.0, b, s, hkv, hd).requiresGrad(true);
        Tensor out = AttentionOps.causalAttention(q, k, v, rowBlock);
        assertArrayEquals(new int[] {b, s, hq, hd}, out.shape());
        double[] qd = q.toDoubleArray(), kd = k.toDoubleArray(), vd = v.toDoubleArray();
        assertClose("attention output", out.toDoubleArray(), attentionRef(qd, kd, vd, b, s, hq, hkv, hd), OUT_TOL);

        Tensor r = Tensor.randn(new Rng(14), 1.0, out.shape());
        Autograd.backward(out, r);
        double[] rd = r.toDoubleArray();
        assertClose("dq", q.grad().toDoubleArray(), numericGrad(x -> attentionRef(x, kd, vd, b, s, hq, hkv, hd), qd, rd), GRAD_TOL);
        assertClose("dk", k.grad().toDoubleArray(), numericGrad(x -> attentionRef(qd, x, vd, b, s, hq, hkv, hd), kd, rd), GRAD_TOL);
        assertClose("dv", v.grad().toDoubleArray(), numericGrad(x -> attentionRef(qd, kd, x, b, s, hq, hkv, hd), vd, rd), GRAD_TOL);
    }

    @Test
    void attentionPassesFloat32GradCheck() {
        Tensor q = Tensor.randn(new Rng(21), 1.0, 2, 4, 2, 4).requiresGrad(true);
        Tensor k = Tensor.randn(new Rng(22), 1.0, 2, 4, 1, 4).requiresGrad(true);
        Tensor v = Tensor.randn(new Rng(23), 1.0, 2, 4, 1, 4).requiresGrad(true);
        var result = GradCheck.check(in -> AttentionOps.causalAttention(in.get(0), in.get(1), in.get(2)),
                java.util.List.of(q, k, v), 1e-2, 5);
        assertTrue(result.maxRelativeError() < 1e-2, "float32 finite differences: " + result.maxRelativeError());
    }

    @Test
    void groupedQueryEqualsMultiHeadWithRepeatedKvHeads() {
        int b = 2, s = 6, hq = 4, hkv = 2, hd = 4;
        Tensor q = Tensor.randn(new Rng(31), 1.0, b, s, hq, hd);
        Tensor k = Tensor.randn(new Rng(32), 1.0, b, s, hkv, hd);
        Tensor v = Tensor.randn(new Rng(33), 1.0, b, s, hkv, hd);
        Tensor kRep = repeatKv(k, hq / hkv);
        Tensor vRep = repeatKv(v, hq / hkv);
        assertArrayEquals(AttentionOps.causalAttention(q, kRep, vRep).toFloatArray(),
                AttentionOps.causalAttention(q, k, v).toFloatArray(), "GQA must equal MHA with each kv head repeated");
    }

    /** (B, S, Hkv, hd) → (B, S, Hkv·rep, hd) with kv head g copied to heads g·rep .. g·rep+rep−1. */
    static Tensor repeatKv(Tensor x, int rep) {
        int b = x.dim(0), s = x.dim(1), hkv = x.dim(2), hd = x.dim(3);
        Tensor out = Tensor.zeros(b, s, hkv * rep, hd);
        for (int row = 0; row < b * s; row++) {
            for (int h = 0; h < hkv * rep; h++) {
                for (int c = 0; c < hd; c++) {
                    out.set(((long) row * hkv * rep + h) * hd + c, x.get(((long) row * hkv + h / rep) * hd + c));
                }
            }
        }
        return out;
    }

    @Test
    void threadCountDoesNotChangeAnyBit() {
        Tensor q0 = Tensor.randn(new Rng(51), 1.0, 3, 70, 4, 8);
        Tensor k0 = Tensor.randn(new Rng(52), 1.0, 3, 70, 2, 8);
        Tensor v0 = Tensor.randn(new Rng(53), 1.0, 3, 70, 2, 8);
        Tensor r = Tensor.randn(new Rng(54), 1.0, 3, 70, 4, 8);
        float[][] one = runWithGrads(q0, k0, v0, r, 1);
        float[][] three = runWithGrads(q0, k0, v0, r, 3);
        String[] what = {"output", "dq", "dk", "dv"};
        for (int i = 0; i < 4; i++) assertArrayEquals(one[i], three[i], what[i] + " with 3 threads");
    }

    static float[][] runWithGrads(Tensor q0, Tensor k0, Tensor v0, Tensor r, int threads) {
        try (ExecutionContext ctx = ExecutionContext.enter(Device.CPU, threads)) {
            Tensor q = q0.copy().requiresGrad(true);
            Tensor k = k0.copy().requiresGrad(true);
            Tensor v = v0.copy().requiresGrad(true);
            Tensor out = AttentionOps.causalAttention(q, k, v);
            Autograd.backward(out, r);
            return new float[][] {out.toFloatArray(), q.grad().toFloatArray(), k.grad().toFloatArray(), v.grad().toFloatArray()};
        }
    }

    @Test
    void laterPositionsDoNotInfluenceEarlierOutputs() {
        int b = 1, s = 6, h = 2, hd = 4;
        Tensor q = Tensor.randn(new Rng(41), 1.0, b, s, h, hd);
        Tensor k = Tensor.randn(new Rng(42), 1.0, b, s, h, hd);
        Tensor v = Tensor.randn(new Rng(43), 1.0, b, s, h, hd);
        float[] before = AttentionOps.causalAttention(q, k, v).toFloatArray();
        int changed = 4; // overwrite position 4's keys and values
        for (int i = changed * h * hd; i < (changed + 1) * h * hd; i++) {
            k.set(i, 100f);
            v.set(i, -100f);
        }
        float[] after = AttentionOps.causalAttention(q, k, v).toFloatArray();
        int perPosition = h * hd;
        for (int i = 0; i < changed * perPosition; i++) assertEquals(before[i], after[i], 0f, "element " + i + " before position " + changed);
        boolean differs = false;
        for (int i = changed * perPosition; i < s * perPosition; i++) differs |= before[i] != after[i];
        assertTrue(differs, "positions >= " + changed + " must see the change");
    }

    @Test
    void attentionRejectsMismatchedShapes() {
        var e = assertThrows(IllegalArgumentException.class,
                () -> AttentionOps.causalAttention(Tensor.zeros(1, 2, 3, 4), Tensor.zeros(1, 2, 2, 4), Tensor.zeros(1, 2, 2, 4)));
        assertTrue(e.getMessage().contains("multiple of kv heads"), e.getMessage());
        assertThrows(IllegalArgumentException.class,
                () -> AttentionOps.causalAttention(Tensor.zeros(1, 2, 2, 4), Tensor.zeros(1, 3, 1, 4), Tensor.zeros(1, 3, 1, 4)));
        assertThrows(IllegalArgumentException.class,
                () -> AttentionOps.causalAttention(Tensor.zeros(1, 2, 2, 4), Tensor.zeros(1, 2, 1, 4), Tensor.zeros(1, 2, 2, 4)));
    }
}
