package moe4j.kernels.cpu;

import moe4j.kernels.ElementwiseKernels;
import moe4j.tensor.Tensor;

/** Element-wise kernels: the vectorised ones from {@link Elementwise}, the rest plain loops. */
final class CpuElementwise implements ElementwiseKernels {
    @Override
    public void convert(Tensor src, Tensor out) {
        if (src.dtype() == out.dtype()) out.copyFrom(src);
        else out.convertFrom(src);
    }

    @Override
    public void addScaled(Tensor a, float alpha, Tensor b, Tensor out) {
        Elementwise.addScaled(a.numel(), a.data(), alpha, b.data(), out.data());
    }

    @Override
    public void axpy(float alpha, Tensor x, Tensor y) {
        Elementwise.axpy(y.numel(), alpha, x.data(), 0, y.data(), 0);
    }

    @Override
    public void mul(Tensor a, Tensor b, Tensor out) {
        Elementwise.mul(a.numel(), a.data(), b.data(), out.data());
    }

    @Override
    public void scale(float alpha, Tensor a, Tensor out) {
        Elementwise.scale(a.numel(), alpha, a.data(), 0, out.data(), 0);
    }

    @Override
    public void addScalar(Tensor a, double c, Tensor out) {
        for (long i = 0; i < a.numel(); i++) out.set(i, (float) (a.get(i) + c));
    }

    @Override
    public void fillWith(Tensor scalar, Tensor out) {
        out.fill(scalar.get(0));
    }

    @Override
    public void silu(Tensor a, Tensor out) {
        Elementwise.silu(a.numel(), a.data(), out.data());
    }

    @Override
    public void siluBackward(Tensor a, Tensor g, Tensor gradIn) {
        Elementwise.siluBackward(a.numel(), a.data(), g.data(), gradIn.data());
    }

    @Override
    public void swiglu(Tensor gate, Tensor up, Tensor out) {
        Elementwise.swiglu(gate.numel(), gate.data(), up.data(), out.data());
    }

    @Override
    public void swigluBackward(Tensor gate, Tensor up, Tensor g, Tensor gradGate, Tensor gradUp) {
        Elementwise.swigluBackward(gate.numel(), gate.data(), up.data(), g.data(), gradGate.data(), gradUp.data());
    }

    @Override
    public void gelu(Tensor a, Tensor out) {
        for (long i = 0; i < a.numel(); i++) {
            double x = a.get(i);
            out.set(i, (float) (x * normalCdf(x)));
        }
    }

    @Override
    public void geluBackward(Tensor a, Tensor g, Tensor gradIn) {
        for (long i = 0; i < a.numel(); i++) {
            double x = a.get(i);
            double d = normalCdf(x) + x * Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
            gradIn.set(i, (float) (g.get(i) * d));
        }
    }

    /** Φ(x) = (1 + erf(x/√2)) / 2. */
    private static double normalCdf(double x) {
        return 0.5 * (1 + Erf.erf(x / Math.sqrt(2)));
    }

    @Override
    public void relu(Tensor a, Tensor out) {
        for (long i = 0; i < a.numel(); i++) out.set(i, Math.max(a.get(i), 0f));
    }

    @Override
    public void reluBackward(Tensor a, Tensor g, Tensor gradIn) {
        for (long i = 0; i < a.numel(); i++) gradIn.set(i, a.get(i) > 0 ? g.get(i) : 0f);
    }

    @Override
    public void sigmoid(Tensor a, Tensor out) {
        for (long i = 0; i < a.numel(); i++) out.set(i, (float) (1 / (1 + Math.exp(-a.get(i)))));
    }

    @Override
    public void sigmoidBackward(Tensor out, Tensor g, Tensor gradIn) {
        for (long i = 0; i < out.numel(); i++) {
            float s = out.get(i);
            gradIn.set(i, g.get(i) * s * (1 - s));
        }
    }

    @Override
    public void reciprocal(Tensor a, Tensor out) {
        for (long i = 0; i < a.numel(); i++) out.set(i, 1f / a.get(i));
    }

    @Override
    public void reciprocalBackward(Tensor out, Tensor g, Tensor gradIn) {
        for (long i = 0; i < out.numel(); i++) gradIn.set(i, -g.get(i) * out.get(i) * out.get(i));
    }

    @Override
    public void mulRows(Tensor x, Tensor c, Tensor out) {
        int n = x.dim(0);
        int d = x.dim(1);
        for (int i = 0; i < n; i++) {
            Elementwise.scale(d, c.get(i), x.data(), (long) i * d, out.data(), (long) i * d);
        }
    }

    @Override
    public void divRows(Tensor x, Tensor c, Tensor out) {
        int n = x.dim(0);
        int d = x.dim(1);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < d; j++) out.set((long) i * d + j, x.get((long) i * d + j) / c.get(i));
        }
    }

    @Override
    public void divRowsDivisorGrad(Tensor g, Tensor x, Tensor c, Tensor gc) {
        int n = x.dim(0);
        int d = x.dim(1);
        for (int i = 0; i < n; i++) {
            double ci = c.get(i);
            gc.set(i, (float) (-CpuReductions.dot(d, g, (long) i * d, x, (long) i * d) / (ci * ci)));
        }
    }

    @Override
    public void mulColumns(Tensor x, Tensor v, Tensor out) {
        int n = x.dim(0);
        int d = x.dim(1);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < d; j++) out.set((long) i * d + j, x.get((long) i * d + j) * v.get(j));
        }
    }

    @Override
    public void addColumns(Tensor x, Tensor v, Tensor out) {
        int n = x.dim(0);
        int d = x.dim(1);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < d; j++) out.set((long) i * d + j, x.get((long) i * d + j) + v.get(j));
        }
    }

    @Override
    public void broadcastRows(Tensor v, Tensor out) {
        int n = out.dim(0);
        int d = out.dim(1);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < d; j++) out.set((long) i * d + j, v.get(i));
        }
    }

    @Override
    public void broadcastColumns(Tensor v, Tensor out) {
        int n = out.dim(0);
        int d = out.dim(1);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < d; j++) out.set((long) i * d + j, v.get(j));
        }
    }
}
