package moe4j.ops;

import static moe4j.ops.AttentionOpsTest.assertClose;
import static moe4j.ops.AttentionOpsTest.numericGrad;
import static org.junit.jupiter.api.Assertions.*;

import moe4j.autograd.Autograd;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * What the Hugging Face families add to attention, against float64 references with central-difference
 * gradients: RoPE with linear position scaling and a start offset, sliding-window attention, and the
 * key/value-cache attention used in decoding (which must give the whole-sequence attention's rows).
 */
class AttentionVariantsTest {
    static final double OUT_TOL = 1e-5;
    static final double GRAD_TOL = 1e-4;

    /** Pairs (2i, 2i+1) of each head at row p rotated by (start + p) / scale · θ^(−2i/hd). */
    static double[] ropeRef(double[] x, int b, int s, int h, int hd, double theta, double scale, int start) {
        double[] out = new double[x.length];
        for (int bi = 0; bi < b; bi++) {
            for (int p = 0; p < s; p++) {
                for (int head = 0; head < h; head++) {
                    int base = ((bi * s + p) * h + head) * hd;
                    for (int i = 0; i < hd / 2; i++) {
                        double a = (start + p) / scale * Math.pow(theta, -2.0 * i / hd);
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

    /** softmax(QKᵀ/√hd) over keys max(0, i − w + 1)..i, times V; head h reads kv head h / (Hq/Hkv). */
    static double[] windowRef(double[] q, double[] k, double[] v, int b, int s, int hq, int hkv, int hd, int window) {
        double[] out = new double[b * s * hq * hd];
        int group = hq / hkv;
        for (int bi = 0; bi < b; bi++) {
            for (int h = 0; h < hq; h++) {
                int g = h / group;
                for (int i = 0; i < s; i++) {
                    int lo = Math.max(0, i - window + 1);
                    double[] w = new double[i + 1];
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = lo; j <= i; j++) {
                        double dot = 0;
                        for (int c = 0; c < hd; c++) dot += q[((bi * s + i) * hq + h) * hd + c] * k[((bi * s + j) * hkv + g) * hd + c];
                        w[j] = dot / Math.sqrt(hd);
                        max = Math.max(max, w[j]);
                    }
                    double z = 0;
                    for (int j = lo; j <= i; j++) z += (w[j] = Math.exp(w[j] - max));
                    for (int j = lo; j <= i; j++) {
                        for (int c = 0; c < hd; c++) out[((bi * s + i) * hq + h) * hd + c] += w[j] / z * v[((bi * s + j) * hkv + g) * hd + c];
                    }
                }
            }
        }
        return out;
    }

    @ParameterizedTest(name = "scale={0} start={1}")
    @CsvSource({"1,0", "2,0", "4,3", "1,17", "0.5,5"})
    void scaledAndOffsetRopeMatchesFloat64ReferenceWithGradient(double scale, int start) {
        int b = 2, s = 4, h = 3, hd = 6;
        double theta = 1e6;
        Tensor x = Tensor.randn(new Rng(1), 1.0, b, s, h, hd).requiresGrad(true);
        Tensor out = AttentionOps.rope(x, theta, scale, start);
        double[] xd = x.toDoubleArray();
        assertClose("rope output", out.toDoubleArray(), ropeRef(xd, b, s, h, hd, theta, scale, start), OUT_TOL);
        Tensor r = Tensor.randn(new Rng(2), 1.0, out.shape());
        Autograd.backward(out, r);
        assertClose("rope gradient", x.grad().toDoubleArray(),
                numericGrad(xv -> ropeRef(xv, b, s, h, hd, theta, scale, start), xd, r.toDoubleArray()), GRAD_TOL);
    }

    @Test
    void ropeWithAnOffsetContinuesTheSequence() {
        // rows 3..5 of a 6-token sequence are the same as a 3-token piece starting at position 3
        Tensor x = Tensor.randn(new Rng(5), 1.0, 1, 6, 2, 8);
        float[] whole = AttentionOps.rope(x, 500, 2, 0).toFloatArray();
        float[] tail = AttentionOps.rope(x.view(6, 2, 8).rows(3, 6).copy().view(1, 3, 2, 8), 500, 2, 3).toFloatArray();
        for (int i = 0; i < tail.length; i++) assertEquals(whole[3 * 16 + i], tail[i], 0f);
        assertThrows(IllegalArgumentException.class, () -> AttentionOps.rope(x, 500, 0, 0));
        assertThrows(IllegalArgumentException.class, () -> AttentionOps.rope(x, 500, 1, -1));
    }

    @ParameterizedTest(name = "B={0} S={1} Hq={2} Hkv={3} hd={4} window={5}")
    @CsvSource({"1,5,1,1,4,1", "2,7,4,2,4,3", "1,9,2,1,6,5", "2,6,2,2,2,6", "1,70,2,1,4,7", "1,70,2,1,4,66"})
    void slidingWindowAttentionMatchesFloat64ReferenceWithGradients(int b, int s, int hq, int hkv, int hd, int window) {
        Tensor q = Tensor.randn(new Rng(11), 1.0, b, s, hq, hd).requiresGrad(true);
        Tensor k = Tensor.randn(new Rng(12), 1.0, b, s, hkv, hd).requiresGrad(true);
        Tensor v = Tensor.randn(new Rng(13), 1.0, b, s, hkv, hd).requiresGrad(true);
        Tensor out = AttentionOps.slidingWindowAttention(q, k, v, window);
        double[] qd = q.toDoubleArray(), kd = k.toDoubleArray(), vd = v.toDoubleArray();
        assertClose("output", out.toDoubleArray(), windowRef(qd, kd, vd, b, s, hq, hkv, hd, window), OUT_TOL);
        Tensor r = Tensor.randn(new Rng(14), 1.0, out.shape());
        Autograd.backward(out, r);
        double[] rd = r.toDoubleArray();
        assertClose("dq", q.grad().toDoubleArray(), numericGrad(x -> windowRef(x, kd, vd, b, s, hq, hkv, hd, window), qd, rd), GRAD_TOL);
        assertClose("dk", k.grad().toDoubleArray(), numericGrad(x -> windowRef(qd, x, vd, b, s, hq, hkv, hd, window), kd, rd), GRAD_TOL);
        assertClose("dv", v.grad().toDoubleArray(), numericGrad(x -> windowRef(qd, kd, x, b, s, hq, hkv, hd, window), vd, rd), GRAD_TOL);
    }

    @Test
    void windowAsLongAsTheSequenceIsPlainCausalAttention() {
        Tensor q = Tensor.randn(new Rng(31), 1.0, 2, 5, 2, 4);
        Tensor k = Tensor.randn(new Rng(32), 1.0, 2, 5, 1, 4);
        Tensor v = Tensor.randn(new Rng(33), 1.0, 2, 5, 1, 4);
        assertArrayEquals(AttentionOps.causalAttention(q, k, v).toFloatArray(), AttentionOps.slidingWindowAttention(q, k, v, 5).toFloatArray());
        assertThrows(IllegalArgumentException.class, () -> AttentionOps.slidingWindowAttention(q, k, v, 0));
    }

    @ParameterizedTest(name = "window={0}")
    @CsvSource({"0", "3"})
    void cachedAttentionGivesTheWholeSequenceRows(int window) {
        int s = 9, hq = 4, hkv = 2, hd = 4;
        Tensor q = Tensor.randn(new Rng(41), 1.0, 1, s, hq, hd);
        Tensor k = Tensor.randn(new Rng(42), 1.0, 1, s, hkv, hd);
        Tensor v = Tensor.randn(new Rng(43), 1.0, 1, s, hkv, hd);
        double[] expected = windowRef(q.toDoubleArray(), k.toDoubleArray(), v.toDoubleArray(), 1, s, hq, hkv, hd, window == 0 ? s : window);
        Tensor kCache = k.view(s, hkv, hd);
        Tensor vCache = v.view(s, hkv, hd);
        // the last 4 positions as one piece after 5 cached ones
        Tensor tail = q.view(s, hq, hd).rows(5, s).copy();
        double[] got = AttentionOps.cachedAttention(tail, kCache, vCache, 5, window).toDoubleArray();
        double[] want = java.util.Arrays.copyOfRange(expected, 5 * hq * hd, s * hq * hd);
        assertClose("cached rows", got, want, OUT_TOL);
        assertThrows(IllegalArgumentException.class, () -> AttentionOps.cachedAttention(tail, kCache, vCache, 6, window));
    }
}
