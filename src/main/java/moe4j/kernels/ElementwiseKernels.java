package moe4j.kernels;

import moe4j.tensor.Tensor;

/**
 * Element-wise float32 kernels over whole tensors of equal element count; an output may be one of the
 * inputs. Backward kernels take the forward's input (or output, where named) and the upstream gradient
 * {@code g}. "Rows" are the first dimension of a 2-D (N, D) tensor.
 */
public interface ElementwiseKernels {
    /**
     * out = src converted to out's element type: float32 into bfloat16 (round to nearest even, NaN kept a
     * quiet NaN) and back (exact), or a plain copy when the types match. The one element-wise kernel whose
     * input and output types differ; for rows that travel in bf16 between float32 computations.
     */
    void convert(Tensor src, Tensor out);

    /** out = a + alpha·b. */
    void addScaled(Tensor a, float alpha, Tensor b, Tensor out);

    /** y += alpha·x. */
    void axpy(float alpha, Tensor x, Tensor y);

    /** out = a ⊙ b. */
    void mul(Tensor a, Tensor b, Tensor out);

    /** out = alpha·a. */
    void scale(float alpha, Tensor a, Tensor out);

    /** out = a + c, computed in double and rounded. */
    void addScalar(Tensor a, double c, Tensor out);

    /** Every element of out = the single element of {@code scalar}. */
    void fillWith(Tensor scalar, Tensor out);

    void silu(Tensor a, Tensor out);

    void siluBackward(Tensor a, Tensor g, Tensor gradIn);

    /** out = silu(gate) ⊙ up. */
    void swiglu(Tensor gate, Tensor up, Tensor out);

    void swigluBackward(Tensor gate, Tensor up, Tensor g, Tensor gradGate, Tensor gradUp);

    /** Exact GELU, x·Φ(x). */
    void gelu(Tensor a, Tensor out);

    void geluBackward(Tensor a, Tensor g, Tensor gradIn);

    void relu(Tensor a, Tensor out);

    void reluBackward(Tensor a, Tensor g, Tensor gradIn);

    void sigmoid(Tensor a, Tensor out);

    /** From the forward's output s: gradIn = g·s·(1 − s). */
    void sigmoidBackward(Tensor out, Tensor g, Tensor gradIn);

    void reciprocal(Tensor a, Tensor out);

    /** From the forward's output r = 1/a: gradIn = −g·r². */
    void reciprocalBackward(Tensor out, Tensor g, Tensor gradIn);

    /** out[i, j] = x[i, j]·c[i] for x (N, D), c of N elements. */
    void mulRows(Tensor x, Tensor c, Tensor out);

    /** out[i, j] = x[i, j] / c[i]. */
    void divRows(Tensor x, Tensor c, Tensor out);

    /** Gradient of divRows w.r.t. the divisors: gc[i] = −Σ_j g[i, j]·x[i, j] / c[i]², sums in double. */
    void divRowsDivisorGrad(Tensor g, Tensor x, Tensor c, Tensor gc);

    /** out[i, j] = x[i, j] + v[j] for x (N, D), v of D elements. */
    void addColumns(Tensor x, Tensor v, Tensor out);

    /** out[i, j] = x[i, j]·v[j] for x (N, D), v of D elements. */
    void mulColumns(Tensor x, Tensor v, Tensor out);

    /** out[i, j] = v[i] for out (N, D), v of N elements. */
    void broadcastRows(Tensor v, Tensor out);

    /** out[i, j] = v[j] for out (N, D), v of D elements. */
    void broadcastColumns(Tensor v, Tensor out);
}
