package moe4j.autograd;

import java.util.List;
import java.util.function.Function;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * Finite-difference gradient checking. The function's output is reduced to the scalar
 * {@code L = Σ r ⊙ f(inputs)} with a fixed random {@code r}; the analytic gradient of L (one backward
 * pass) is compared with central differences {@code (L(x+ε) − L(x−ε)) / 2ε} for every element of every
 * input that requires a gradient. Forward passes run in float32, L is summed in float64.
 */
public final class GradCheck {
    private GradCheck() {}

    /** Per input: the analytic and the numeric gradient and their norm-wise relative difference. */
    public record Result(List<double[]> analytic, List<double[]> numeric, double[] relativeError) {
        public double maxRelativeError() {
            double m = 0;
            for (double e : relativeError) m = Math.max(m, e);
            return m;
        }
    }

    public static Result check(Function<List<Tensor>, Tensor> f, List<Tensor> inputs, double eps, long seed) {
        Tensor out0 = f.apply(inputs);
        Rng rng = new Rng(seed);
        Tensor r = Tensor.randn(rng, 1.0, out0.shape());
        for (Tensor in : inputs) in.setGrad(null);
        Autograd.backward(out0, r);
        List<double[]> analytic = new java.util.ArrayList<>();
        List<double[]> numeric = new java.util.ArrayList<>();
        double[] errors = new double[inputs.size()];
        for (int k = 0; k < inputs.size(); k++) {
            Tensor in = inputs.get(k);
            if (!in.requiresGrad()) {
                analytic.add(null);
                numeric.add(null);
                continue;
            }
            double[] a = in.grad() == null ? new double[(int) in.numel()] : in.grad().toDoubleArray();
            double[] n = new double[(int) in.numel()];
            for (int i = 0; i < n.length; i++) {
                float orig = in.get(i);
                in.set(i, (float) (orig + eps));
                double plus = projected(f, inputs, r);
                in.set(i, (float) (orig - eps));
                double minus = projected(f, inputs, r);
                in.set(i, orig);
                n[i] = (plus - minus) / (2 * eps);
            }
            analytic.add(a);
            numeric.add(n);
            errors[k] = relativeError(a, n);
        }
        return new Result(analytic, numeric, errors);
    }

    private static double projected(Function<List<Tensor>, Tensor> f, List<Tensor> inputs, Tensor r) {
        Tensor out = noGrad(() -> f.apply(inputs));
        double s = 0;
        for (long i = 0; i < out.numel(); i++) s += (double) out.get(i) * r.get(i);
        return s;
    }

    private static <T> T noGrad(java.util.function.Supplier<T> body) {
        return Autograd.noGrad(body);
    }

    /** ‖a − b‖ / max(‖b‖, 1e-12). */
    public static double relativeError(double[] a, double[] b) {
        if (a.length != b.length) throw new IllegalArgumentException("lengths differ: " + a.length + " vs " + b.length);
        double diff = 0;
        double norm = 0;
        for (int i = 0; i < a.length; i++) {
            diff += (a[i] - b[i]) * (a[i] - b[i]);
            norm += b[i] * b[i];
        }
        return Math.sqrt(diff) / Math.max(Math.sqrt(norm), 1e-12);
    }
}
