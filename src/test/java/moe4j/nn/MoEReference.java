package moe4j.nn;

import java.util.LinkedHashMap;
import java.util.Map;
import moe4j.tensor.Tensor;

/**
 * A float64 per-token reference of the MoE layer, written from docs/EXPERT_PARALLELISM.md and independent of the
 * implementation: {@code out[t] = Σ_k w[t,k] · s_e · Expert_e(x[t]) + shared(x[t])}. The routing
 * decision (which experts, which entries dropped) is taken as given, so the function is smooth in
 * every parameter and in x, and its gradient can be taken by central differences in float64.
 */
final class MoEReference {
    final Map<String, double[]> params = new LinkedHashMap<>();
    final int d;
    final int h;
    final int e;
    final int k;
    final Activation act;
    final boolean packed;
    final boolean sigmoidRouter;
    final boolean shared;
    final boolean gradientScale;
    final int[] indices; // (T, K) flat, −1 = dropped
    /** The router's choice before capacity dropping: dropped entries keep their share of the normaliser. */
    final int[] routerIndices;

    MoEReference(MoEMLP layer, Tensor routerIndices, Tensor keptIndices, boolean gradientScale) {
        MoEConfig c = layer.config();
        this.d = c.dim();
        this.h = c.hidden();
        this.e = c.numExperts();
        this.k = c.topK();
        this.act = c.activation();
        this.packed = c.packed();
        this.sigmoidRouter = c.router().equals(RouterKind.SIGMOID_TOPK);
        this.shared = c.sharedExperts() > 0;
        this.gradientScale = gradientScale;
        this.routerIndices = routerIndices.toIntArray();
        this.indices = keptIndices.toIntArray();
        layer.namedParameters().forEach((name, t) -> params.put(name, t.toDoubleArray()));
    }

    /** The layer output for x (T, D), flat (T·D). */
    double[] forward(double[] x) {
        int t = x.length / d;
        double[] out = new double[t * d];
        double[] gateW = params.get("router.gate.weight");
        int[] counts = new int[e];
        int kept = 0;
        for (int idx : indices) {
            if (idx >= 0) {
                counts[idx]++;
                kept++;
            }
        }
        for (int i = 0; i < t; i++) {
            double[] xi = new double[d];
            System.arraycopy(x, i * d, xi, 0, d);
            double[] logits = new double[e];
            for (int j = 0; j < e; j++) logits[j] = dot(gateW, j * d, xi);
            double[] score = new double[e];
            if (sigmoidRouter) {
                for (int j = 0; j < e; j++) score[j] = 1 / (1 + Math.exp(-logits[j]));
            } else {
                double max = Double.NEGATIVE_INFINITY;
                for (double l : logits) max = Math.max(max, l);
                double z = 0;
                for (int j = 0; j < e; j++) z += Math.exp(logits[j] - max);
                for (int j = 0; j < e; j++) score[j] = Math.exp(logits[j] - max) / z;
            }
            double norm = 0;
            for (int s = 0; s < k; s++) norm += score[routerIndices[i * k + s]];
            for (int s = 0; s < k; s++) {
                int g = indices[i * k + s];
                if (g < 0) continue;
                double w = score[g] / norm;
                if (gradientScale) w *= ((double) kept / e) / counts[g];
                double[] y = expert(xi, g);
                for (int c = 0; c < d; c++) out[i * d + c] += w * y[c];
            }
            if (shared) {
                double[] y = linearExpert(xi, "shared_expert.");
                for (int c = 0; c < d; c++) out[i * d + c] += y[c];
            }
        }
        return out;
    }


    private double[] expert(double[] x, int g) {
        if (!packed) return linearExpert(x, "experts." + g + ".");
        double[] up = packedMatvec(params.get("up_w"), g, x, d, h);
        double[] hidden = new double[h];
        if (act.gated()) {
            double[] gate = packedMatvec(params.get("gate_w"), g, x, d, h);
            for (int j = 0; j < h; j++) hidden[j] = silu(gate[j]) * up[j];
        } else {
            for (int j = 0; j < h; j++) hidden[j] = activation(up[j]);
        }
        return packedMatvec(params.get("down_w"), g, hidden, h, d);
    }

    private double[] linearExpert(double[] x, String prefix) {
        double[] up = matvec(params.get(prefix + "up_proj.weight"), x, h, d);
        double[] hidden = new double[h];
        if (act.gated()) {
            double[] gate = matvec(params.get(prefix + "gate_proj.weight"), x, h, d);
            for (int j = 0; j < h; j++) hidden[j] = silu(gate[j]) * up[j];
        } else {
            for (int j = 0; j < h; j++) hidden[j] = activation(up[j]);
        }
        return matvec(params.get(prefix + "down_proj.weight"), hidden, d, h);
    }

    private double activation(double v) {
        return act == Activation.RELU ? Math.max(v, 0) : v * 0.5 * (1 + erf(v / Math.sqrt(2)));
    }

    static double silu(double v) {
        return v / (1 + Math.exp(-v));
    }

    /** erf by its Maclaurin series, ample for the |v| < 6 seen here. */
    static double erf(double v) {
        double sum = 0;
        double term = v;
        for (int n = 0; n < 200; n++) {
            sum += term / (2 * n + 1);
            term *= -v * v / (n + 1);
        }
        return 2 / Math.sqrt(Math.PI) * sum;
    }

    /** W (out, in) · x. */
    private static double[] matvec(double[] w, double[] x, int out, int in) {
        double[] y = new double[out];
        for (int o = 0; o < out; o++) y[o] = dot(w, o * in, x);
        return y;
    }

    /** x · W[g] for packed W (G, in, out). */
    private static double[] packedMatvec(double[] w, int g, double[] x, int in, int out) {
        double[] y = new double[out];
        long base = (long) g * in * out;
        for (int i = 0; i < in; i++) {
            for (int o = 0; o < out; o++) y[o] += x[i] * w[(int) (base + (long) i * out + o)];
        }
        return y;
    }

    private static double dot(double[] w, int off, double[] x) {
        double s = 0;
        for (int i = 0; i < x.length; i++) s += w[off + i] * x[i];
        return s;
    }

    /** d(Σ r ⊙ forward(x)) / d(named parameter), by central differences in float64. */
    double[] numericGrad(String param, double[] x, double[] r) {
        return centralDifferences(params.get(param), x, r);
    }

    double[] numericInputGrad(double[] x, double[] r) {
        return centralDifferences(x, x, r);
    }

    /** Perturbs each element of {@code values} (a parameter or x itself) in place and restores it. */
    private double[] centralDifferences(double[] values, double[] x, double[] r) {
        double[] grad = new double[values.length];
        double eps = 1e-6;
        for (int i = 0; i < values.length; i++) {
            double orig = values[i];
            values[i] = orig + eps;
            double plus = project(forward(x), r);
            values[i] = orig - eps;
            double minus = project(forward(x), r);
            values[i] = orig;
            grad[i] = (plus - minus) / (2 * eps);
        }
        return grad;
    }

    private static double project(double[] out, double[] r) {
        double s = 0;
        for (int i = 0; i < out.length; i++) s += out[i] * r[i];
        return s;
    }
}
