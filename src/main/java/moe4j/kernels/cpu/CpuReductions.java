package moe4j.kernels.cpu;

import moe4j.kernels.ReductionKernels;
import moe4j.tensor.Tensor;

/** Reductions, row normalisations and the cross-entropy loss, in fixed summation order. */
final class CpuReductions implements ReductionKernels {
    @Override
    public void sum(Tensor a, Tensor out) {
        out.set(0, (float) Elementwise.sum(a.numel(), a.data(), 0));
    }

    @Override
    public double sumOfSquares(Tensor a) {
        return Elementwise.sumOfSquares(a.numel(), a.data(), 0);
    }

    @Override
    public long firstNonFinite(Tensor a) {
        for (long i = 0; i < a.numel(); i++) {
            if (!Float.isFinite(a.get(i))) return i;
        }
        return -1;
    }

    @Override
    public void rowSums(Tensor a, Tensor out) {
        int n = a.dim(0);
        int d = a.dim(1);
        for (int i = 0; i < n; i++) out.set(i, (float) Elementwise.sum(d, a.data(), (long) i * d));
    }

    @Override
    public void columnSums(Tensor a, Tensor out) {
        int n = a.dim(0);
        int d = a.dim(1);
        double[] acc = new double[d];
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < d; j++) acc[j] += a.get((long) i * d + j);
        }
        for (int j = 0; j < d; j++) out.set(j, (float) acc[j]);
    }

    @Override
    public void columnDots(Tensor a, Tensor b, Tensor out) {
        int n = a.dim(0);
        int d = a.dim(1);
        double[] acc = new double[d];
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < d; j++) acc[j] += (double) a.get((long) i * d + j) * b.get((long) i * d + j);
        }
        for (int j = 0; j < d; j++) out.set(j, (float) acc[j]);
    }

    @Override
    public void rowDots(Tensor a, Tensor b, Tensor out) {
        int n = a.dim(0);
        int d = a.dim(1);
        for (int i = 0; i < n; i++) out.set(i, (float) dot(d, a, (long) i * d, b, (long) i * d));
    }

    /** Σ_j a[aOff + j]·b[bOff + j] in double, in index order. */
    static double dot(int n, Tensor a, long aOff, Tensor b, long bOff) {
        double s = 0;
        for (int j = 0; j < n; j++) s += (double) a.get(aOff + j) * b.get(bOff + j);
        return s;
    }

    private static int lastDim(Tensor a) {
        return a.dim(-1);
    }

    private static int rows(Tensor a, int d) {
        return Math.toIntExact(a.numel() / Math.max(d, 1));
    }

    @Override
    public void softmax(Tensor a, Tensor out) {
        int d = lastDim(a);
        int n = rows(a, d);
        for (int i = 0; i < n; i++) {
            long base = (long) i * d;
            double max = Double.NEGATIVE_INFINITY;
            for (int j = 0; j < d; j++) max = Math.max(max, a.get(base + j));
            double z = 0;
            for (int j = 0; j < d; j++) z += Math.exp(a.get(base + j) - max);
            for (int j = 0; j < d; j++) out.set(base + j, (float) (Math.exp(a.get(base + j) - max) / z));
        }
    }

    @Override
    public void softmaxBackward(Tensor out, Tensor g, Tensor gradIn) {
        int d = lastDim(out);
        int n = rows(out, d);
        for (int i = 0; i < n; i++) {
            long base = (long) i * d;
            double s = dot(d, g, base, out, base);
            for (int j = 0; j < d; j++) gradIn.set(base + j, (float) (out.get(base + j) * (g.get(base + j) - s)));
        }
    }

    @Override
    public void logSoftmax(Tensor a, Tensor out) {
        int d = lastDim(a);
        int n = rows(a, d);
        for (int i = 0; i < n; i++) {
            long base = (long) i * d;
            double lse = rowLogSumExp(a, base, d);
            for (int j = 0; j < d; j++) out.set(base + j, (float) (a.get(base + j) - lse));
        }
    }

    @Override
    public void logSoftmaxBackward(Tensor out, Tensor g, Tensor gradIn) {
        int d = lastDim(out);
        int n = rows(out, d);
        for (int i = 0; i < n; i++) {
            long base = (long) i * d;
            double s = Elementwise.sum(d, g.data(), base);
            for (int j = 0; j < d; j++) gradIn.set(base + j, (float) (g.get(base + j) - Math.exp(out.get(base + j)) * s));
        }
    }

    @Override
    public void logSumExp(Tensor a, Tensor out) {
        int d = lastDim(a);
        int n = Math.toIntExact(a.numel() / d);
        for (int i = 0; i < n; i++) out.set(i, (float) rowLogSumExp(a, (long) i * d, d));
    }

    @Override
    public void logSumExpBackward(Tensor a, Tensor out, Tensor g, Tensor gradIn) {
        int d = lastDim(a);
        int n = Math.toIntExact(a.numel() / d);
        for (int i = 0; i < n; i++) {
            long base = (long) i * d;
            double lse = out.get(i);
            for (int j = 0; j < d; j++) gradIn.set(base + j, (float) (g.get(i) * Math.exp(a.get(base + j) - lse)));
        }
    }

    private static double rowLogSumExp(Tensor a, long base, int d) {
        double max = Double.NEGATIVE_INFINITY;
        for (int j = 0; j < d; j++) max = Math.max(max, a.get(base + j));
        if (max == Double.NEGATIVE_INFINITY) return max;
        double z = 0;
        for (int j = 0; j < d; j++) z += Math.exp(a.get(base + j) - max);
        return max + Math.log(z);
    }

    @Override
    public void rmsNorm(Tensor x, Tensor weight, double eps, Tensor out, Tensor inv) {
        int d = lastDim(x);
        int n = rows(x, d);
        for (int i = 0; i < n; i++) {
            long base = (long) i * d;
            float r = (float) (1 / Math.sqrt(Elementwise.sumOfSquares(d, x.data(), base) / d + eps));
            inv.set(i, r);
            for (int j = 0; j < d; j++) out.set(base + j, x.get(base + j) * r * weight.get(j));
        }
    }

    @Override
    public void rmsNormBackward(Tensor x, Tensor weight, Tensor inv, Tensor g, Tensor gradX, Tensor gradWeight) {
        int d = lastDim(x);
        int n = rows(x, d);
        double[] gw = new double[d];
        for (int i = 0; i < n; i++) {
            long base = (long) i * d;
            double r = inv.get(i);
            // y = x·r·w with r = (mean x² + eps)^-½: dx = r·(g⊙w) − x·r³·mean(g⊙w⊙x)
            double s = 0;
            for (int j = 0; j < d; j++) s += (double) g.get(base + j) * weight.get(j) * x.get(base + j);
            s /= d;
            for (int j = 0; j < d; j++) {
                double gwj = (double) g.get(base + j) * weight.get(j);
                gradX.set(base + j, (float) (r * gwj - x.get(base + j) * r * r * r * s));
                gw[j] += (double) g.get(base + j) * x.get(base + j) * r;
            }
        }
        for (int j = 0; j < d; j++) gradWeight.set(j, (float) gw[j]);
    }

    @Override
    public void crossEntropy(Tensor logits, Tensor targets, Tensor loss) {
        int n = logits.dim(0);
        int v = logits.dim(1);
        int counted = 0;
        double total = 0;
        for (int i = 0; i < n; i++) {
            int t = targets.getInt(i);
            if (t == -1) continue;
            if (t < 0 || t >= v) {
                throw new IllegalArgumentException("crossEntropy: target " + t + " at row " + i + " outside [0, " + v + ")");
            }
            total += rowLogSumExp(logits, (long) i * v, v) - logits.get((long) i * v + t);
            counted++;
        }
        int count = Math.max(counted, 1);
        loss.set(0, (float) (total / count));
    }

    @Override
    public void crossEntropyBackward(Tensor logits, Tensor targets, Tensor g, Tensor gradLogits) {
        int n = logits.dim(0);
        int v = logits.dim(1);
        int counted = 0;
        for (int i = 0; i < n; i++) if (targets.getInt(i) != -1) counted++;
        int count = Math.max(counted, 1);
        double scale = g.get(0) / count;
        for (int i = 0; i < n; i++) {
            int t = targets.getInt(i);
            if (t == -1) continue;
            long base = (long) i * v;
            double lse = rowLogSumExp(logits, base, v);
            for (int j = 0; j < v; j++) gradLogits.set(base + j, (float) (scale * Math.exp(logits.get(base + j) - lse)));
            gradLogits.set(base + t, (float) (gradLogits.get(base + t) - scale));
        }
    }
}
