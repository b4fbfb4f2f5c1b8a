package moe4j.ops;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Function;
import java.util.stream.Stream;
import moe4j.autograd.Autograd;
import moe4j.autograd.GradCheck;
import moe4j.tensor.ScopePerTest;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every differentiable op against a float64 reference written as plain loops here (independent of the
 * implementation), and its backward rule against central finite differences.
 *
 * <p>Tolerances: forward, |got − ref| ≤ 1e-5 · (1 + |ref|) per element (float32 rounding of a few
 * operations); gradients, norm-wise relative error ≤ 5e-3 with ε = 1e-2 (central differences have an
 * O(ε²) truncation error; a wrong rule gives errors of order 1).
 */
@ExtendWith(ScopePerTest.class)
class OpsTest {
    static final double FORWARD_TOL = 1e-5;
    static final double GRAD_EPS = 1e-2;
    static final double GRAD_TOL = 5e-3;

    // Sizes are odd and non-square on purpose: transposition and row/column mix-ups then show up, and
    // 35 elements exercise both the vector body and the scalar tail of the element-wise kernels.
    static final int M = 5, K = 7, N = 3;

    /** The output a reference computes: values and shape. */
    record Expected(double[] values, int... shape) {
        Expected withShape(int... s) {
            return new Expected(values, s);
        }
    }

    /**
     * One row of the table: how to make inputs, the op under test, its reference.
     * Float inputs require a gradient; int32 inputs (indices, targets) do not.
     */
    record OpCase(String name, Function<Rng, List<Tensor>> inputs, Function<List<Tensor>, Tensor> op,
                  Function<List<Tensor>, Expected> reference) {
        @Override
        public String toString() {
            return name;
        }
    }


    // ------------------------------------------------------------------ input makers

    static Tensor randn(Rng r, int... shape) {
        return Tensor.randn(r, 1.0, shape).requiresGrad(true);
    }

    /** Values at least 0.1 away from zero (relu's kink, reciprocal's pole). */
    static Tensor awayFromZero(Rng r, double min, int... shape) {
        Tensor t = Tensor.zeros(shape);
        for (long i = 0; i < t.numel(); i++) {
            double v = min + Math.abs(r.nextGaussian());
            t.set(i, (float) (r.nextDouble() < 0.5 ? -v : v));
        }
        return t.requiresGrad(true);
    }

    /** Each row a shuffled ladder with steps of 0.1, so top-k's choice is unique and survives ±ε. */
    static Tensor distinctRows(Rng r, int rows, int cols) {
        Tensor t = Tensor.zeros(rows, cols);
        for (int i = 0; i < rows; i++) {
            int[] perm = shuffled(r, cols);
            for (int j = 0; j < cols; j++) t.set(i, j, (float) (0.1 * perm[j] - 0.3));
        }
        return t.requiresGrad(true);
    }

    static int[] shuffled(Rng r, int n) {
        int[] p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        for (int i = n - 1; i > 0; i--) {
            int j = r.nextInt(i + 1);
            int tmp = p[i];
            p[i] = p[j];
            p[j] = tmp;
        }
        return p;
    }

    static Tensor ints(int[] values) {
        return Tensor.ofInts(values, values.length);
    }

    static double[] d(Tensor t) {
        return t.toDoubleArray();
    }

    // ------------------------------------------------------------------ references (float64 loops)

    static Expected elementwise(Tensor a, java.util.function.DoubleUnaryOperator f) {
        double[] x = d(a);
        double[] y = new double[x.length];
        for (int i = 0; i < x.length; i++) y[i] = f.applyAsDouble(x[i]);
        return new Expected(y, a.shape());
    }

    static Expected elementwise(Tensor a, Tensor b, java.util.function.DoubleBinaryOperator f) {
        double[] x = d(a);
        double[] z = d(b);
        double[] y = new double[x.length];
        for (int i = 0; i < x.length; i++) y[i] = f.applyAsDouble(x[i], z[i]);
        return new Expected(y, a.shape());
    }

    static double sigmoid(double x) {
        return 1 / (1 + Math.exp(-x));
    }

    /** erf by composite Simpson integration of 2/√π·e^(−t²) over [0, x] (independent of Erf's series). */
    static double erfByIntegration(double x) {
        int steps = 4000;
        double h = x / steps;
        double s = 1 + Math.exp(-x * x);
        for (int i = 1; i < steps; i++) {
            double t = i * h;
            s += (i % 2 == 1 ? 4 : 2) * Math.exp(-t * t);
        }
        return 2 / Math.sqrt(Math.PI) * s * h / 3;
    }

    static Expected matmulRef(Tensor a, boolean ta, Tensor b, boolean tb) {
        double[] x = d(a);
        double[] y = d(b);
        int m = ta ? a.dim(1) : a.dim(0);
        int k = ta ? a.dim(0) : a.dim(1);
        int n = tb ? b.dim(0) : b.dim(1);
        double[] c = new double[m * n];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int p = 0; p < k; p++) {
                    double av = ta ? x[p * m + i] : x[i * k + p];
                    double bv = tb ? y[j * k + p] : y[p * n + j];
                    s += av * bv;
                }
                c[i * n + j] = s;
            }
        }
        return new Expected(c, m, n);
    }

    static Expected softmaxRef(Tensor a, boolean log) {
        double[] x = d(a);
        int w = a.dim(-1);
        double[] y = new double[x.length];
        for (int r = 0; r < x.length / w; r++) {
            double z = 0;
            for (int j = 0; j < w; j++) z += Math.exp(x[r * w + j]);
            for (int j = 0; j < w; j++) y[r * w + j] = log ? x[r * w + j] - Math.log(z) : Math.exp(x[r * w + j]) / z;
        }
        return new Expected(y, a.shape());
    }

    static Expected rowsRef(Tensor x, int[] idx) {
        double[] v = d(x);
        int w = x.rowWidth();
        double[] y = new double[idx.length * w];
        for (int i = 0; i < idx.length; i++) {
            for (int j = 0; j < w; j++) y[i * w + j] = v[idx[i] * w + j];
        }
        int[] shape = x.shape();
        shape[0] = idx.length;
        return new Expected(y, shape);
    }

    static Expected indexAddRef(double[] base, int[] shape, int[] idx, Tensor src) {
        double[] y = base.clone();
        double[] s = d(src);
        int w = src.rowWidth();
        for (int i = 0; i < idx.length; i++) {
            for (int j = 0; j < w; j++) y[idx[i] * w + j] += s[i * w + j];
        }
        return new Expected(y, shape);
    }

    /**
     * The MoE combine by its definition: out[e / K] += weights[e]·rows[i] for e = entries[i], over (T, D)
     * zeros, in float64.
     */
    static Expected weightedCombineRef(Tensor rows, Tensor weights, int[] entries) {
        double[] x = d(rows);
        double[] w = d(weights);
        int k = weights.dim(1);
        int width = rows.dim(1);
        double[] y = new double[weights.dim(0) * width];
        for (int i = 0; i < entries.length; i++) {
            int t = entries[i] / k;
            for (int j = 0; j < width; j++) y[t * width + j] += w[entries[i]] * x[i * width + j];
        }
        return new Expected(y, weights.dim(0), width);
    }

    // ------------------------------------------------------------------ the table

    static Stream<OpCase> cases() {
        List<OpCase> c = new ArrayList<>();
        for (boolean ta : new boolean[] {false, true}) {
            for (boolean tb : new boolean[] {false, true}) {
                c.add(new OpCase("matmul(transA=" + ta + ", transB=" + tb + ")",
                        r -> List.of(randn(r, ta ? new int[] {K, M} : new int[] {M, K}),
                                randn(r, tb ? new int[] {N, K} : new int[] {K, N})),
                        in -> Ops.matmul(in.get(0), ta, in.get(1), tb),
                        in -> matmulRef(in.get(0), ta, in.get(1), tb)));
            }
        }
        c.add(new OpCase("add", r -> List.of(randn(r, M, K), randn(r, M, K)),
                in -> Ops.add(in.get(0), in.get(1)), in -> elementwise(in.get(0), in.get(1), Double::sum)));
        c.add(new OpCase("sub", r -> List.of(randn(r, M, K), randn(r, M, K)),
                in -> Ops.sub(in.get(0), in.get(1)), in -> elementwise(in.get(0), in.get(1), (x, y) -> x - y)));
        c.add(new OpCase("mul", r -> List.of(randn(r, M, K), randn(r, M, K)),
                in -> Ops.mul(in.get(0), in.get(1)), in -> elementwise(in.get(0), in.get(1), (x, y) -> x * y)));
        c.add(new OpCase("scale", r -> List.of(randn(r, M, K)),
                in -> Ops.scale(in.get(0), -1.7), in -> elementwise(in.get(0), x -> -1.7 * x)));
        c.add(new OpCase("addScalar", r -> List.of(randn(r, M, K)),
                in -> Ops.addScalar(in.get(0), 0.3), in -> elementwise(in.get(0), x -> x + 0.3)));
        c.add(new OpCase("silu", r -> List.of(Tensor.randn(r, 3.0, M, K).requiresGrad(true)),
                in -> Ops.silu(in.get(0)), in -> elementwise(in.get(0), x -> x * sigmoid(x))));
        c.add(new OpCase("swiglu", r -> List.of(Tensor.randn(r, 3.0, M, K).requiresGrad(true), randn(r, M, K)),
                in -> Ops.swiglu(in.get(0), in.get(1)),
                in -> elementwise(in.get(0), in.get(1), (g, u) -> g * sigmoid(g) * u)));
        c.add(new OpCase("gelu", r -> List.of(Tensor.randn(r, 2.0, M, K).requiresGrad(true)),
                in -> Ops.gelu(in.get(0)),
                in -> elementwise(in.get(0), x -> x * 0.5 * (1 + erfByIntegration(x / Math.sqrt(2))))));
        c.add(new OpCase("relu", r -> List.of(awayFromZero(r, 0.1, M, K)),
                in -> Ops.relu(in.get(0)), in -> elementwise(in.get(0), x -> x > 0 ? x : 0)));
        c.add(new OpCase("sigmoid", r -> List.of(Tensor.randn(r, 3.0, M, K).requiresGrad(true)),
                in -> Ops.sigmoid(in.get(0)), in -> elementwise(in.get(0), OpsTest::sigmoid)));
        c.add(new OpCase("reciprocal", r -> List.of(awayFromZero(r, 0.5, M, K)),
                in -> Ops.reciprocal(in.get(0)), in -> elementwise(in.get(0), x -> 1 / x)));
        c.add(new OpCase("square", r -> List.of(randn(r, M, K)),
                in -> Ops.square(in.get(0)), in -> elementwise(in.get(0), x -> x * x)));
        c.add(new OpCase("mulRows", r -> List.of(randn(r, M, K), randn(r, M)),
                in -> Ops.mulRows(in.get(0), in.get(1)), in -> {
                    double[] x = d(in.get(0));
                    double[] f = d(in.get(1));
                    double[] y = new double[M * K];
                    for (int i = 0; i < M; i++) for (int j = 0; j < K; j++) y[i * K + j] = x[i * K + j] * f[i];
                    return new Expected(y, M, K);
                }));
        c.add(new OpCase("mulColumns", r -> List.of(randn(r, M, K), randn(r, K)),
                in -> Ops.mulColumns(in.get(0), in.get(1)), in -> {
                    double[] x = d(in.get(0));
                    double[] f = d(in.get(1));
                    double[] y = new double[M * K];
                    for (int i = 0; i < M; i++) for (int j = 0; j < K; j++) y[i * K + j] = x[i * K + j] * f[j];
                    return new Expected(y, M, K);
                }));
        c.add(new OpCase("sum", r -> List.of(randn(r, M, K)), in -> Ops.sum(in.get(0)), in -> {
            double s = 0;
            for (double v : d(in.get(0))) s += v;
            return new Expected(new double[] {s});
        }));
        c.add(new OpCase("mean", r -> List.of(randn(r, M, K)), in -> Ops.mean(in.get(0)), in -> {
            double s = 0;
            for (double v : d(in.get(0))) s += v;
            return new Expected(new double[] {s / (M * K)});
        }));
        for (int dim = 0; dim <= 1; dim++) {
            for (boolean mean : new boolean[] {false, true}) {
                int dm = dim;
                c.add(new OpCase((mean ? "mean" : "sum") + "(dim=" + dim + ")", r -> List.of(randn(r, M, K)),
                        in -> mean ? Ops.mean(in.get(0), dm) : Ops.sum(in.get(0), dm), in -> {
                            double[] x = d(in.get(0));
                            double[] y = new double[dm == 0 ? K : M];
                            for (int i = 0; i < M; i++) for (int j = 0; j < K; j++) y[dm == 0 ? j : i] += x[i * K + j];
                            if (mean) for (int i = 0; i < y.length; i++) y[i] /= dm == 0 ? M : K;
                            return new Expected(y, y.length);
                        }));
            }
        }
        c.add(new OpCase("softmax", r -> List.of(Tensor.randn(r, 2.0, 2, 3, 9).requiresGrad(true)),
                in -> Ops.softmax(in.get(0)), in -> softmaxRef(in.get(0), false)));
        c.add(new OpCase("logSoftmax", r -> List.of(Tensor.randn(r, 2.0, 4, 9).requiresGrad(true)),
                in -> Ops.logSoftmax(in.get(0)), in -> softmaxRef(in.get(0), true)));
        c.add(new OpCase("logSumExp", r -> List.of(Tensor.randn(r, 2.0, 4, 9).requiresGrad(true)),
                in -> Ops.logSumExp(in.get(0)), in -> {
                    double[] x = d(in.get(0));
                    double[] y = new double[4];
                    for (int i = 0; i < 4; i++) {
                        double z = 0;
                        for (int j = 0; j < 9; j++) z += Math.exp(x[i * 9 + j]);
                        y[i] = Math.log(z);
                    }
                    return new Expected(y, 4);
                }));
        c.add(new OpCase("topK(k=3).values", r -> List.of(distinctRows(r, 4, 9)),
                in -> Ops.topK(in.get(0), 3).values(), in -> {
                    double[] x = d(in.get(0));
                    double[] y = new double[4 * 3];
                    for (int i = 0; i < 4; i++) {
                        double[] row = java.util.Arrays.copyOfRange(x, i * 9, i * 9 + 9);
                        java.util.Arrays.sort(row);
                        for (int s = 0; s < 3; s++) y[i * 3 + s] = row[8 - s];
                    }
                    return new Expected(y, 4, 3);
                }));
        c.add(new OpCase("gatherColumns", r -> {
            int[] idx = new int[M * 3];
            for (int i = 0; i < idx.length; i++) idx[i] = r.nextInt(K);
            idx[1] = idx[0]; // a repeated column within a row must accumulate in backward
            return List.of(randn(r, M, K), Tensor.ofInts(idx, M, 3));
        }, in -> Ops.gatherColumns(in.get(0), in.get(1)), in -> {
            double[] x = d(in.get(0));
            int[] idx = in.get(1).toIntArray();
            double[] y = new double[M * 3];
            for (int i = 0; i < M; i++) for (int s = 0; s < 3; s++) y[i * 3 + s] = x[i * K + idx[i * 3 + s]];
            return new Expected(y, M, 3);
        }));
        int[] dupIdx = {5, 0, 5, 2, 2, 1, 5};
        c.add(new OpCase("indexSelect (duplicates)", r -> List.of(randn(r, 6, 2, 3), ints(dupIdx)),
                in -> Ops.indexSelect(in.get(0), in.get(1)), in -> rowsRef(in.get(0), dupIdx)));
        c.add(new OpCase("indexAdd(base, idx, src) (duplicates)",
                r -> List.of(randn(r, 6, 4), ints(dupIdx), randn(r, dupIdx.length, 4)),
                in -> Ops.indexAdd(in.get(0), in.get(1), in.get(2)),
                in -> indexAddRef(d(in.get(0)), in.get(0).shape(), dupIdx, in.get(2))));
        c.add(new OpCase("indexAdd(n, idx, src) (duplicates)",
                r -> List.of(ints(dupIdx), randn(r, dupIdx.length, 4)),
                in -> Ops.indexAdd(8, in.get(0), in.get(1)),
                in -> indexAddRef(new double[8 * 4], new int[] {8, 4}, dupIdx, in.get(1))));
        c.add(new OpCase("reshape", r -> List.of(randn(r, M, K)),
                in -> Ops.mul(Ops.reshape(in.get(0), K, -1), Ops.reshape(in.get(0), K, M)),
                in -> elementwise(in.get(0), x -> x * x).withShape(K, M)));
        c.add(new OpCase("concatRows", r -> List.of(randn(r, 2, 3), randn(r, 4, 3), randn(r, 1, 3)),
                in -> Ops.concatRows(List.of(in.get(1), in.get(0), in.get(2))), in -> {
                    double[] y = new double[7 * 3];
                    int at = 0;
                    for (int p : new int[] {1, 0, 2}) {
                        double[] v = d(in.get(p));
                        System.arraycopy(v, 0, y, at, v.length);
                        at += v.length;
                    }
                    return new Expected(y, 7, 3);
                }));
        c.add(new OpCase("splitRows (pieces put back in reverse order)", r -> List.of(randn(r, 7, 3)),
                in -> {
                    List<Tensor> parts = Ops.splitRows(in.get(0), 2, 0, 4, 1);
                    return Ops.concatRows(List.of(parts.get(3), parts.get(2), Ops.scale(parts.get(0), 2)));
                }, in -> {
                    double[] x = d(in.get(0));
                    double[] y = new double[7 * 3];
                    int at = 0;
                    for (int row : new int[] {6, 2, 3, 4, 5, 0, 1}) {
                        for (int j = 0; j < 3; j++) y[at++] = x[row * 3 + j] * (row < 2 ? 2 : 1);
                    }
                    return new Expected(y, 7, 3);
                }));
        int[] ids = {3, 9, 3, 0, 7, 3};
        c.add(new OpCase("embedding", r -> List.of(randn(r, 10, 4), ints(ids)),
                in -> Ops.embedding(in.get(0), in.get(1)), in -> rowsRef(in.get(0), ids)));
        c.add(new OpCase("rmsNorm", r -> List.of(randn(r, 4, 9), randn(r, 9)),
                in -> Ops.rmsNorm(in.get(0), in.get(1), 1e-5), in -> {
                    double[] x = d(in.get(0));
                    double[] w = d(in.get(1));
                    double[] y = new double[x.length];
                    for (int i = 0; i < 4; i++) {
                        double ms = 0;
                        for (int j = 0; j < 9; j++) ms += x[i * 9 + j] * x[i * 9 + j] / 9;
                        for (int j = 0; j < 9; j++) y[i * 9 + j] = x[i * 9 + j] / Math.sqrt(ms + 1e-5) * w[j];
                    }
                    return new Expected(y, 4, 9);
                }));
        int[] targets = {4, -1, 0, 2, -1, 4};
        c.add(new OpCase("crossEntropy (ignore index -1)", r -> List.of(Tensor.randn(r, 2.0, 6, 5).requiresGrad(true), ints(targets)),
                in -> Ops.crossEntropy(in.get(0), in.get(1)), in -> {
                    double[] x = d(in.get(0));
                    double total = 0;
                    int counted = 0;
                    for (int i = 0; i < 6; i++) {
                        if (targets[i] < 0) continue;
                        double z = 0;
                        for (int j = 0; j < 5; j++) z += Math.exp(x[i * 5 + j]);
                        total += Math.log(z) - x[i * 5 + targets[i]];
                        counted++;
                    }
                    return new Expected(new double[] {total / counted});
                }));
        // Rows wider than a vector (37 = 2 × 16 + 5 floats, at offsets that are not multiples of the
        // vector length): the row kernels' vector bodies run at unaligned offsets, not only their tails.
        int w = 37;
        c.add(new OpCase("mulRows (wide rows)", r -> List.of(randn(r, 3, w), randn(r, 3)),
                in -> Ops.mulRows(in.get(0), in.get(1)), in -> {
                    double[] x = d(in.get(0));
                    double[] f = d(in.get(1));
                    double[] y = new double[3 * w];
                    for (int i = 0; i < 3; i++) for (int j = 0; j < w; j++) y[i * w + j] = x[i * w + j] * f[i];
                    return new Expected(y, 3, w);
                }));
        c.add(new OpCase("sum(dim=1) (wide rows)", r -> List.of(randn(r, 3, w)), in -> Ops.sum(in.get(0), 1), in -> {
            double[] x = d(in.get(0));
            double[] y = new double[3];
            for (int i = 0; i < 3; i++) for (int j = 0; j < w; j++) y[i] += x[i * w + j];
            return new Expected(y, 3);
        }));
        c.add(new OpCase("rmsNorm (wide rows)", r -> List.of(randn(r, 3, w), randn(r, w)),
                in -> Ops.rmsNorm(in.get(0), in.get(1), 1e-6), in -> {
                    double[] x = d(in.get(0));
                    double[] g = d(in.get(1));
                    double[] y = new double[x.length];
                    for (int i = 0; i < 3; i++) {
                        double ms = 0;
                        for (int j = 0; j < w; j++) ms += x[i * w + j] * x[i * w + j] / w;
                        for (int j = 0; j < w; j++) y[i * w + j] = x[i * w + j] / Math.sqrt(ms + 1e-6) * g[j];
                    }
                    return new Expected(y, 3, w);
                }));
        int[] wideIdx = {2, 0, 2, 1};
        c.add(new OpCase("indexSelect (wide rows)", r -> List.of(randn(r, 3, w), ints(wideIdx)),
                in -> Ops.indexSelect(in.get(0), in.get(1)), in -> rowsRef(in.get(0), wideIdx)));
        c.add(new OpCase("indexAdd (wide rows)", r -> List.of(randn(r, 3, w), ints(wideIdx), randn(r, 4, w)),
                in -> Ops.indexAdd(in.get(0), in.get(1), in.get(2)),
                in -> indexAddRef(d(in.get(0)), in.get(0).shape(), wideIdx, in.get(2))));
        // The MoE combine: rows in expert order (not token order), entries dropped by capacity (no row),
        // token 3 of no row at all, K = 1, and rows wider than a vector.
        int[] combineEntries = {4, 0, 13, 7, 2, 6, 12, 5, 8}; // of 5 tokens × 3 slots: 1, 3, 9-11 and 14 dropped
        c.add(new OpCase("weightedCombine (dropped entries, a token of no row)",
                r -> List.of(randn(r, combineEntries.length, K), randn(r, 5, 3), ints(combineEntries)),
                in -> Ops.weightedCombine(in.get(0), in.get(1), in.get(2)),
                in -> weightedCombineRef(in.get(0), in.get(1), combineEntries)));
        int[] topOneEntries = {2, 0, 3}; // of 4 tokens × 1 slot: token 1 dropped
        c.add(new OpCase("weightedCombine (K = 1)", r -> List.of(randn(r, 3, 5), randn(r, 4, 1), ints(topOneEntries)),
                in -> Ops.weightedCombine(in.get(0), in.get(1), in.get(2)),
                in -> weightedCombineRef(in.get(0), in.get(1), topOneEntries)));
        int[] wideEntries = {5, 0, 3, 2, 1}; // of 3 tokens × 2 slots: entry 4 dropped
        c.add(new OpCase("weightedCombine (wide rows)", r -> List.of(randn(r, 5, w), randn(r, 3, 2), ints(wideEntries)),
                in -> Ops.weightedCombine(in.get(0), in.get(1), in.get(2)),
                in -> weightedCombineRef(in.get(0), in.get(1), wideEntries)));
        return c.stream();
    }

    // ------------------------------------------------------------------ the tests

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void matchesFloat64Reference(OpCase c) {
        List<Tensor> in = c.inputs().apply(new Rng(c.name().hashCode()));
        Expected want = c.reference().apply(in);
        List<byte[]> before = in.stream().map(t -> t.data().toArray(java.lang.foreign.ValueLayout.JAVA_BYTE)).toList();
        Tensor got = c.op().apply(in);
        for (int k = 0; k < in.size(); k++) {
            assertArrayEquals(before.get(k), in.get(k).data().toArray(java.lang.foreign.ValueLayout.JAVA_BYTE),
                    c.name() + ": input " + k + " was modified");
        }
        assertArrayEquals(want.shape(), got.shape(), c.name() + ": shape");
        double[] g = got.toDoubleArray();
        for (int i = 0; i < g.length; i++) {
            double tol = FORWARD_TOL * (1 + Math.abs(want.values()[i]));
            assertEquals(want.values()[i], g[i], tol, c.name() + ": element " + i);
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void gradientMatchesFiniteDifferences(OpCase c) {
        List<Tensor> in = c.inputs().apply(new Rng(c.name().hashCode() + 1L));
        GradCheck.Result res = GradCheck.check(c.op(), in, GRAD_EPS, 99);
        for (int k = 0; k < in.size(); k++) {
            if (!in.get(k).requiresGrad()) continue;
            double[] numeric = res.numeric().get(k);
            double norm = 0;
            for (double v : numeric) norm += v * v;
            assertTrue(norm > 1e-6, c.name() + ": input " + k + " has a vanishing numeric gradient, the check would be vacuous");
            assertTrue(res.relativeError()[k] < GRAD_TOL,
                    c.name() + ": input " + k + " relative error " + res.relativeError()[k]);
        }
    }

    // ------------------------------------------------------------------ behaviour the table does not show

    @Test
    void topKBreaksTiesTowardsTheLowerIndex() {
        Tensor a = Tensor.of(new float[] {1, 3, 3, 0, 3, 2, 2, 2, 2, 2}, 2, 5);
        Ops.TopK top = Ops.topK(a, 3);
        assertArrayEquals(new int[] {1, 2, 4, 0, 1, 2}, top.indices().toIntArray());
        assertArrayEquals(new float[] {3, 3, 3, 2, 2, 2}, top.values().toFloatArray());
    }

    @Test
    void topKValuesPassGradientToTheChosenColumnsOnly() {
        Tensor a = Tensor.of(new float[] {0.5f, 2, -1, 3}, 1, 4).requiresGrad(true);
        Ops.TopK top = Ops.topK(a, 2);
        Autograd.backward(top.values(), Tensor.of(new float[] {10, 20}, 1, 2));
        assertArrayEquals(new float[] {0, 20, 0, 10}, a.grad().toFloatArray());
    }

    @Test
    void topKNeverPrefersNaN() {
        Tensor a = Tensor.of(new float[] {Float.NaN, 1, 2, Float.NaN}, 1, 4);
        assertArrayEquals(new int[] {2, 1}, Ops.topK(a, 2).indices().toIntArray());
    }

    @Test
    void crossEntropyWithEveryTargetIgnoredIsZeroWithZeroGradient() {
        Tensor logits = Tensor.of(new float[] {1, 2, 3, 4}, 2, 2).requiresGrad(true);
        Tensor loss = Ops.crossEntropy(logits, ints(new int[] {-1, -1}));
        assertEquals(0f, loss.item());
        Autograd.backward(loss);
        assertArrayEquals(new float[4], logits.grad().toFloatArray());
    }

    @Test
    void indexAddOfDuplicatesAccumulatesEveryRow() {
        Tensor src = Tensor.of(new float[] {1, 2, 10, 20, 100, 200}, 3, 2);
        Tensor out = Ops.indexAdd(3, ints(new int[] {2, 2, 0}), src);
        assertArrayEquals(new float[] {100, 200, 0, 0, 11, 22}, out.toFloatArray());
    }
}
