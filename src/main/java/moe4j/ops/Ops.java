package moe4j.ops;

import static moe4j.autograd.Autograd.gradientTarget;
import static moe4j.autograd.Autograd.record;

import java.util.Arrays;
import java.util.List;
import moe4j.kernels.ElementwiseKernels;
import moe4j.kernels.Kernels;
import moe4j.kernels.ReductionKernels;
import moe4j.tensor.DType;
import moe4j.tensor.Tensor;

/**
 * The differentiable operations. Each computes its result eagerly in float32 and, when recording is on
 * and an input requires a gradient, records its backward rule (see {@code moe4j.autograd.Autograd}).
 * Shapes follow the row convention: a 2-D tensor is (rows, columns) and "row-wise" ops work along the
 * last dimension. Integer tensors (indices, targets) are int32 and never differentiable.
 *
 * <p>Every op runs on its inputs' device: results are allocated there and computed by that device's
 * {@link Kernels}; an op never reads tensor data on the host. Inputs on different devices are an error.
 */
public final class Ops {
    private Ops() {}

    // ================================================================ linear algebra

    /** {@code a · b} for (M, K) · (K, N). */
    public static Tensor matmul(Tensor a, Tensor b) {
        return matmul(a, false, b, false);
    }

    /** {@code op(a) · op(b)}, op = transpose where the flag is set; both 2-D float32. */
    public static Tensor matmul(Tensor a, boolean transA, Tensor b, boolean transB) {
        require2d(a, "matmul", "a");
        require2d(b, "matmul", "b");
        int m = transA ? a.dim(1) : a.dim(0);
        int k = transA ? a.dim(0) : a.dim(1);
        int kb = transB ? b.dim(1) : b.dim(0);
        int n = transB ? b.dim(0) : b.dim(1);
        if (k != kb) {
            throw new IllegalArgumentException("matmul: inner dimensions differ: op(a) is " + m + "x" + k
                    + " (a " + a.shapeString() + (transA ? "ᵀ" : "") + "), op(b) is " + kb + "x" + n
                    + " (b " + b.shapeString() + (transB ? "ᵀ" : "") + ")");
        }
        Tensor c = Tensor.empty(a.device(), DType.F32, m, n); // beta 0: every element written
        Kernels.on("matmul", a, b);
        gemm(transA, transB, m, n, k, a, b, 0f, c);
        return record(c, "matmul", new Tensor[] {a, b}, g -> {
            Tensor ga = null;
            Tensor gb = null;
            if (a.requiresGrad()) {
                var target = gradientTarget(a);
                ga = target.tensor();
                // C = op(A)·op(B): dop(A) = dC·op(B)ᵀ, so dA = dC·op(B)ᵀ or (op(B)·dCᵀ) for a transposed A.
                if (!transA) gemm(false, !transB, m, k, n, g, b, target.beta(), ga);
                else gemm(transB, true, k, m, n, b, g, target.beta(), ga);
            }
            if (b.requiresGrad()) {
                var target = gradientTarget(b);
                gb = target.tensor();
                if (!transB) gemm(!transA, false, k, n, m, a, g, target.beta(), gb);
                else gemm(true, transA, n, k, m, g, a, target.beta(), gb);
            }
            return new Tensor[] {ga, gb};
        });
    }

    /** c = op(a)·op(b) + beta·c on whole 2-D tensors. */
    static void gemm(boolean transA, boolean transB, int m, int n, int k, Tensor a, Tensor b, float beta, Tensor c) {
        Kernels.of(c.device()).matmul().gemm(transA, transB, m, n, k, 1f, a, 0, a.dim(1), b, 0, b.dim(1), beta, c, 0, n);
    }

    // ================================================================ element-wise

    public static Tensor add(Tensor a, Tensor b) {
        requireSameShape(a, b, "add");
        Tensor out = Tensor.emptyLike(a);
        elementwise("add", a, b).addScaled(a, 1f, b, out);
        return record(out, "add", new Tensor[] {a, b}, g -> new Tensor[] {g, g});
    }

    public static Tensor sub(Tensor a, Tensor b) {
        requireSameShape(a, b, "sub");
        Tensor out = Tensor.emptyLike(a);
        elementwise("sub", a, b).addScaled(a, -1f, b, out);
        return record(out, "sub", new Tensor[] {a, b}, g -> new Tensor[] {g, b.requiresGrad() ? scaled(g, -1f) : null});
    }

    public static Tensor mul(Tensor a, Tensor b) {
        requireSameShape(a, b, "mul");
        Tensor out = Tensor.emptyLike(a);
        elementwise("mul", a, b).mul(a, b, out);
        return record(out, "mul", new Tensor[] {a, b}, g -> new Tensor[] {
            a.requiresGrad() ? product(g, b) : null,
            b.requiresGrad() ? product(g, a) : null});
    }

    /** alpha · a. */
    public static Tensor scale(Tensor a, double alpha) {
        requireFloat(a, "scale");
        Tensor out = scaled(a, (float) alpha);
        return record(out, "scale", new Tensor[] {a}, g -> new Tensor[] {scaled(g, (float) alpha)});
    }

    /** a + c for a constant c. */
    public static Tensor addScalar(Tensor a, double c) {
        requireFloat(a, "addScalar");
        Tensor out = Tensor.emptyLike(a);
        elementwise(a).addScalar(a, c, out);
        return record(out, "addScalar", new Tensor[] {a}, g -> new Tensor[] {g});
    }

    public static Tensor silu(Tensor a) {
        requireFloat(a, "silu");
        Tensor out = Tensor.emptyLike(a);
        elementwise(a).silu(a, out);
        return record(out, "silu", new Tensor[] {a}, g -> {
            Tensor gi = Tensor.emptyLike(a);
            elementwise(a).siluBackward(a, g, gi);
            return new Tensor[] {gi};
        });
    }

    /** Fused {@code silu(gate) · up}, the SwiGLU gating of an expert's hidden layer. */
    public static Tensor swiglu(Tensor gate, Tensor up) {
        requireSameShape(gate, up, "swiglu");
        Tensor out = Tensor.emptyLike(gate);
        elementwise("swiglu", gate, up).swiglu(gate, up, out);
        return record(out, "swiglu", new Tensor[] {gate, up}, g -> {
            Tensor gg = Tensor.emptyLike(gate);
            Tensor gu = Tensor.emptyLike(up);
            elementwise(gate).swigluBackward(gate, up, g, gg, gu);
            return new Tensor[] {gg, gu};
        });
    }

    /** Exact GELU: x · Φ(x), Φ the standard normal CDF (through erf). */
    public static Tensor gelu(Tensor a) {
        requireFloat(a, "gelu");
        Tensor out = Tensor.emptyLike(a);
        elementwise(a).gelu(a, out);
        return record(out, "gelu", new Tensor[] {a}, g -> {
            Tensor gi = Tensor.zerosLike(a);
            elementwise(a).geluBackward(a, g, gi);
            return new Tensor[] {gi};
        });
    }

    public static Tensor relu(Tensor a) {
        requireFloat(a, "relu");
        Tensor out = Tensor.zerosLike(a);
        elementwise(a).relu(a, out);
        return record(out, "relu", new Tensor[] {a}, g -> {
            Tensor gi = Tensor.zerosLike(a);
            elementwise(a).reluBackward(a, g, gi);
            return new Tensor[] {gi};
        });
    }

    public static Tensor sigmoid(Tensor a) {
        requireFloat(a, "sigmoid");
        Tensor out = Tensor.zerosLike(a);
        elementwise(a).sigmoid(a, out);
        return record(out, "sigmoid", new Tensor[] {a}, g -> {
            Tensor gi = Tensor.zerosLike(a);
            elementwise(a).sigmoidBackward(out, g, gi);
            return new Tensor[] {gi};
        });
    }

    /** 1 / a. */
    public static Tensor reciprocal(Tensor a) {
        requireFloat(a, "reciprocal");
        Tensor out = Tensor.zerosLike(a);
        elementwise(a).reciprocal(a, out);
        return record(out, "reciprocal", new Tensor[] {a}, g -> {
            Tensor gi = Tensor.zerosLike(a);
            elementwise(a).reciprocalBackward(out, g, gi);
            return new Tensor[] {gi};
        });
    }

    /** a², element-wise. */
    public static Tensor square(Tensor a) {
        requireFloat(a, "square");
        Tensor out = product(a, a);
        return record(out, "square", new Tensor[] {a}, g -> {
            Tensor gi = product(g, a);
            elementwise(gi).scale(2f, gi, gi);
            return new Tensor[] {gi};
        });
    }

    /** Row scaling: out[i, j] = x[i, j] · c[i], for x (N, D) and c (N) or (N, 1). */
    public static Tensor mulRows(Tensor x, Tensor c) {
        require2d(x, "mulRows", "x");
        requireFloat(c, "mulRows");
        if (c.numel() != x.dim(0)) {
            throw new IllegalArgumentException("mulRows: one factor per row expected: x " + x.shapeString()
                    + ", factors " + c.shapeString());
        }
        int n = x.dim(0);
        int d = x.dim(1);
        Tensor out = Tensor.emptyLike(x);
        elementwise("mulRows", x, c).mulRows(x, c, out);
        return record(out, "mulRows", new Tensor[] {x, c}, g -> {
            Tensor gx = null;
            Tensor gc = null;
            if (x.requiresGrad()) {
                gx = Tensor.emptyLike(x);
                elementwise(x).mulRows(g, c, gx);
            }
            if (c.requiresGrad()) {
                gc = Tensor.zerosLike(c);
                reductions(x).rowDots(g, x, gc);
            }
            return new Tensor[] {gx, gc};
        });
    }

    /** Row division: out[i, j] = x[i, j] / c[i], for x (N, D) and c (N); exact where x[i, j] = c[i] (x / x = 1). */
    public static Tensor divRows(Tensor x, Tensor c) {
        require2d(x, "divRows", "x");
        requireFloat(c, "divRows");
        if (c.numel() != x.dim(0)) {
            throw new IllegalArgumentException("divRows: one divisor per row expected: x " + x.shapeString()
                    + ", divisors " + c.shapeString());
        }
        Tensor out = Tensor.zerosLike(x);
        elementwise("divRows", x, c).divRows(x, c, out);
        return record(out, "divRows", new Tensor[] {x, c}, g -> {
            Tensor gx = null;
            Tensor gc = null;
            if (x.requiresGrad()) {
                gx = Tensor.zerosLike(x);
                elementwise(x).divRows(g, c, gx);
            }
            if (c.requiresGrad()) {
                gc = Tensor.zerosLike(c);
                elementwise(x).divRowsDivisorGrad(g, x, c, gc);
            }
            return new Tensor[] {gx, gc};
        });
    }

    /** Broadcast over rows: out[i, j] = x[i, j] · v[j] for x (N, D) and v (D). */
    public static Tensor mulColumns(Tensor x, Tensor v) {
        require2d(x, "mulColumns", "x");
        requireFloat(v, "mulColumns");
        int d = x.dim(1);
        if (v.numel() != d) {
            throw new IllegalArgumentException("mulColumns: one factor per column expected: x " + x.shapeString()
                    + ", factors " + v.shapeString());
        }
        Tensor out = Tensor.zerosLike(x);
        elementwise("mulColumns", x, v).mulColumns(x, v, out);
        return record(out, "mulColumns", new Tensor[] {x, v}, g -> {
            Tensor gx = null;
            Tensor gv = null;
            if (x.requiresGrad()) {
                gx = Tensor.zerosLike(x);
                elementwise(x).mulColumns(g, v, gx);
            }
            if (v.requiresGrad()) {
                gv = Tensor.zerosLike(v);
                reductions(x).columnDots(g, x, gv);
            }
            return new Tensor[] {gx, gv};
        });
    }

    // ================================================================ reductions

    /** Sum of all elements, a scalar (shape []). */
    public static Tensor sum(Tensor a) {
        requireFloat(a, "sum");
        Tensor out = Tensor.zeros(a.device());
        reductions(a).sum(a, out);
        return record(out, "sum", new Tensor[] {a}, g -> {
            Tensor gi = Tensor.zerosLike(a);
            elementwise(a).fillWith(g, gi);
            return new Tensor[] {gi};
        });
    }

    /** Mean of all elements, a scalar. */
    public static Tensor mean(Tensor a) {
        requireFloat(a, "mean");
        if (a.numel() == 0) throw new IllegalArgumentException("mean: empty tensor " + a.shapeString());
        return scale(sum(a), 1.0 / a.numel());
    }

    /** Sums along one dimension of a 2-D tensor: dim 0 gives (D) column sums, dim 1 gives (N) row sums. */
    public static Tensor sum(Tensor a, int dim) {
        require2d(a, "sum", "a");
        requireDim01(a, dim, "sum");
        int n = a.dim(0);
        int d = a.dim(1);
        Tensor out = Tensor.zeros(a.device(), dim == 0 ? d : n);
        if (dim == 1) reductions(a).rowSums(a, out);
        else reductions(a).columnSums(a, out);
        return record(out, "sum(dim=" + dim + ")", new Tensor[] {a}, g -> {
            Tensor gi = Tensor.zerosLike(a);
            if (dim == 1) elementwise(a).broadcastRows(g, gi);
            else elementwise(a).broadcastColumns(g, gi);
            return new Tensor[] {gi};
        });
    }

    /** Means along one dimension of a 2-D tensor (see {@link #sum(Tensor, int)}). */
    public static Tensor mean(Tensor a, int dim) {
        require2d(a, "mean", "a");
        requireDim01(a, dim, "mean"); // before a.dim(dim): -1 would count from the end, 2 would overflow
        int count = a.dim(dim);
        if (count == 0) throw new IllegalArgumentException("mean: dimension " + dim + " of " + a.shapeString() + " is empty");
        return scale(sum(a, dim), 1.0 / count);
    }

    /** Softmax along the last dimension. */
    public static Tensor softmax(Tensor a) {
        requireFloat(a, "softmax");
        lastDim(a, "softmax");
        Tensor out = Tensor.zerosLike(a);
        reductions(a).softmax(a, out);
        return record(out, "softmax", new Tensor[] {a}, g -> {
            // dx = y ⊙ (g − Σ_j g_j y_j), row by row
            Tensor gi = Tensor.zerosLike(a);
            reductions(a).softmaxBackward(out, g, gi);
            return new Tensor[] {gi};
        });
    }

    /** Log-softmax along the last dimension. */
    public static Tensor logSoftmax(Tensor a) {
        requireFloat(a, "logSoftmax");
        lastDim(a, "logSoftmax");
        Tensor out = Tensor.zerosLike(a);
        reductions(a).logSoftmax(a, out);
        return record(out, "logSoftmax", new Tensor[] {a}, g -> {
            // dx = g − softmax · Σ g
            Tensor gi = Tensor.zerosLike(a);
            reductions(a).logSoftmaxBackward(out, g, gi);
            return new Tensor[] {gi};
        });
    }

    /** log Σ exp along the last dimension: (..., D) → (...). */
    public static Tensor logSumExp(Tensor a) {
        requireFloat(a, "logSumExp");
        int d = lastDim(a, "logSumExp");
        if (d == 0) throw new IllegalArgumentException("logSumExp: empty last dimension in " + a.shapeString());
        int[] outShape = Arrays.copyOf(a.shape(), a.rank() - 1);
        Tensor out = Tensor.zeros(a.device(), outShape);
        reductions(a).logSumExp(a, out);
        return record(out, "logSumExp", new Tensor[] {a}, g -> {
            Tensor gi = Tensor.zerosLike(a);
            reductions(a).logSumExpBackward(a, out, g, gi);
            return new Tensor[] {gi};
        });
    }

    /** The k largest values of each row and their column indices; ties go to the lower index. */
    public record TopK(Tensor values, Tensor indices) {}

    /** Top-k over the last dimension of a 2-D tensor; values are differentiable, indices are int32. */
    public static TopK topK(Tensor a, int k) {
        require2d(a, "topK", "a");
        int d = a.dim(1);
        if (k < 1 || k > d) throw new IllegalArgumentException("topK: k = " + k + " outside [1, " + d + "] for " + a.shapeString());
        Tensor idx = Tensor.zeros(a.device(), DType.I32, a.dim(0), k);
        Kernels.of(a.device()).routing().topK(a, idx);
        idx.markIndicesBelow(d); // picks are columns of a, whatever the values (NaN sorts last)
        return new TopK(gatherColumns(a, idx), idx);
    }

    /** out[i, s] = a[i, idx[i, s]], for a (N, D) and int32 idx (N, K). */
    public static Tensor gatherColumns(Tensor a, Tensor idx) {
        require2d(a, "gatherColumns", "a");
        idx.requireDType(DType.I32, "gatherColumns");
        int n = a.dim(0);
        int d = a.dim(1);
        if (idx.rank() != 2 || idx.dim(0) != n) {
            throw new IllegalArgumentException("gatherColumns: indices " + idx.shapeString() + " must be (" + n + ", K) for a " + a.shapeString());
        }
        int k = idx.dim(1);
        Kernels kernels = Kernels.on("gatherColumns", a, idx);
        checkIndices(kernels, idx, d, "gatherColumns");
        Tensor out = Tensor.zeros(a.device(), n, k);
        kernels.indexing().gatherColumns(a, idx, out);
        return record(out, "gatherColumns", new Tensor[] {a, idx}, g -> {
            Tensor gi = Tensor.zerosLike(a);
            kernels.indexing().scatterAddColumns(g, idx, gi);
            return new Tensor[] {gi, null};
        });
    }

    // ================================================================ rows: gather, scatter, reshape, concat

    /** The device's range check of {@code idx}, unless the kernel that made it vouched for the range. */
    static void checkIndices(Kernels kernels, Tensor idx, int bound, String op) {
        if (!idx.indicesKnownBelow(bound)) kernels.indexing().checkIndices(idx, bound, op);
    }

    /** out[i] = x[idx[i]]: rows of x (N, ...) picked by int32 idx (M) → (M, ...). */
    public static Tensor indexSelect(Tensor x, Tensor idx) {
        return indexSelect(x, idx, "indexSelect");
    }

    /** {@link #indexSelect(Tensor, Tensor)} with errors reported as {@code op}'s. */
    private static Tensor indexSelect(Tensor x, Tensor idx, String op) {
        requireFloat(x, op);
        requireRows(x, op);
        requireIndexVector(idx, op);
        Kernels kernels = Kernels.on(op, x, idx);
        checkIndices(kernels, idx, x.rowCount(), op);
        int m = idx.dim(0);
        int[] shape = x.shape();
        shape[0] = m;
        Tensor out = Tensor.zeros(x.device(), shape);
        kernels.indexing().gatherRows(x, idx, out);
        return record(out, "indexSelect", new Tensor[] {x, idx}, g -> {
            Tensor gi = Tensor.zerosLike(x);
            kernels.indexing().scatterAddRows(g, idx, gi);
            return new Tensor[] {gi, null};
        });
    }

    /** out = base with row src[i] added to row idx[i] (duplicates accumulate); base (N, ...), src (M, ...). */
    public static Tensor indexAdd(Tensor base, Tensor idx, Tensor src) {
        requireFloat(base, "indexAdd");
        requireFloat(src, "indexAdd");
        requireIndexVector(idx, "indexAdd");
        requireRows(base, "indexAdd");
        requireRows(src, "indexAdd");
        if (src.rowCount() != idx.dim(0) || !sameTrailingShape(src, base)) {
            throw new IllegalArgumentException("indexAdd: source " + src.shapeString() + " must have " + idx.dim(0)
                    + " rows (one per index) of the shape of a row of base " + base.shapeString());
        }
        Kernels kernels = Kernels.on("indexAdd", base, idx, src);
        checkIndices(kernels, idx, base.rowCount(), "indexAdd");
        Tensor out = base.copy();
        kernels.indexing().scatterAddRows(src, idx, out);
        return record(out, "indexAdd", new Tensor[] {base, idx, src}, g -> {
            Tensor gs = null;
            if (src.requiresGrad()) {
                gs = Tensor.zerosLike(src);
                kernels.indexing().gatherRows(g, idx, gs);
            }
            return new Tensor[] {g, null, gs};
        });
    }

    /** Scatter-add into zeros: an (n, ...) tensor whose row idx[i] accumulates src row i. */
    public static Tensor indexAdd(int n, Tensor idx, Tensor src) {
        requireRows(src, "indexAdd");
        if (n < 0) throw new IllegalArgumentException("indexAdd: row count must be >= 0, got " + n);
        int[] shape = src.shape();
        shape[0] = n;
        return indexAdd(Tensor.zeros(src.device(), shape), idx, src);
    }

    /**
     * The combine of an MoE layer: for rows (R, D), weights (T, K) and int32 entryOfRow (R), each row's flat
     * entry e = t·K + k (each entry at most once; entries of no row, such as dropped ones, add nothing),
     * out (T, D) with out[t] = Σ weights[e]·rows[i] over the rows i of token t. Sums run in ascending row
     * order with each product rounded to float first, so the result is the bits of scaling the rows and
     * {@link #indexAdd index-adding} them into zeros, on every device (a GPU gathers each token's rows, no
     * atomics). One kernel pass each way instead of the gather, scale, scatter and their backwards.
     */
    public static Tensor weightedCombine(Tensor rows, Tensor weights, Tensor entryOfRow) {
        require2d(rows, "weightedCombine", "rows");
        require2d(weights, "weightedCombine", "weights");
        requireIndexVector(entryOfRow, "weightedCombine");
        if (entryOfRow.dim(0) != rows.dim(0)) {
            throw new IllegalArgumentException("weightedCombine: " + entryOfRow.dim(0) + " entries for the " + rows.dim(0)
                    + " rows of " + rows.shapeString() + "; one entry per row expected");
        }
        Kernels kernels = Kernels.on("weightedCombine", rows, weights, entryOfRow);
        checkIndices(kernels, entryOfRow, Math.toIntExact(weights.numel()), "weightedCombine");
        Tensor out = Tensor.empty(rows.device(), DType.F32, weights.dim(0), rows.dim(1));
        kernels.indexing().weightedCombine(rows, weights, entryOfRow, out);
        return record(out, "weightedCombine", new Tensor[] {rows, weights, entryOfRow}, g -> {
            Tensor gRows = rows.requiresGrad() ? Tensor.emptyLike(rows) : null;
            Tensor gWeights = weights.requiresGrad() ? Tensor.emptyLike(weights) : null;
            kernels.indexing().weightedCombineBackward(g, rows, weights, entryOfRow, gRows, gWeights);
            return new Tensor[] {gRows, gWeights, null};
        });
    }

    /** The same elements seen with another shape (one -1 inferred). */
    public static Tensor reshape(Tensor x, int... shape) {
        Tensor out;
        try {
            out = x.view(shape);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("reshape: " + x.shapeString() + " to " + Arrays.toString(shape)
                    + " is impossible (" + e.getMessage() + ")", e);
        }
        return record(out, "reshape", new Tensor[] {x}, g -> new Tensor[] {g.view(x.shape())});
    }

    /** Concatenation along dimension 0; all parts share the trailing shape. */
    public static Tensor concatRows(List<Tensor> parts) {
        if (parts.isEmpty()) throw new IllegalArgumentException("concatRows: no tensors given");
        Tensor first = parts.get(0);
        int rows = 0;
        for (Tensor p : parts) {
            requireFloat(p, "concatRows");
            requireRows(p, "concatRows");
            if (p.rank() != first.rank() || p.rowWidth() != first.rowWidth()
                    || !Arrays.equals(Arrays.copyOfRange(p.shape(), 1, p.rank()), Arrays.copyOfRange(first.shape(), 1, first.rank()))) {
                throw new IllegalArgumentException("concatRows: " + p.shapeString() + " does not match " + first.shapeString()
                        + " beyond the first dimension");
            }
            rows += p.rowCount();
        }
        int[] shape = first.shape();
        shape[0] = rows;
        Kernels.on("concatRows", parts.toArray(Tensor[]::new));
        Tensor out = Tensor.zeros(first.device(), shape);
        int[] starts = new int[parts.size() + 1];
        for (int i = 0; i < parts.size(); i++) {
            Tensor p = parts.get(i);
            starts[i + 1] = starts[i] + p.rowCount();
            out.rows(starts[i], starts[i + 1]).copyFrom(p);
        }
        return record(out, "concatRows", parts.toArray(Tensor[]::new), g -> {
            Tensor[] grads = new Tensor[parts.size()];
            for (int i = 0; i < grads.length; i++) grads[i] = g.rows(starts[i], starts[i + 1]);
            return grads;
        });
    }

    /** Splits dimension 0 into consecutive pieces of the given sizes. */
    public static List<Tensor> splitRows(Tensor x, int... sizes) {
        requireRows(x, "splitRows");
        int total = 0;
        for (int s : sizes) {
            if (s < 0) throw new IllegalArgumentException("splitRows: negative size in " + Arrays.toString(sizes));
            total += s;
        }
        if (total != x.rowCount()) {
            throw new IllegalArgumentException("splitRows: sizes " + Arrays.toString(sizes) + " add up to " + total
                    + ", tensor has " + x.rowCount() + " rows");
        }
        Tensor[] out = new Tensor[sizes.length];
        int start = 0;
        for (int i = 0; i < sizes.length; i++) {
            int from = start;
            int to = start + sizes[i];
            out[i] = record(x.rows(from, to).copy(), "splitRows", new Tensor[] {x}, g -> {
                Tensor gi = Tensor.zerosLike(x);
                gi.rows(from, to).copyFrom(g);
                return new Tensor[] {gi};
            });
            start = to;
        }
        return List.of(out);
    }

    // ================================================================ layers' building blocks

    /** Token embedding: rows of weight (V, D) picked by int32 ids (T) → (T, D); ids must be in [0, V). */
    public static Tensor embedding(Tensor weight, Tensor ids) {
        require2d(weight, "embedding", "weight");
        return indexSelect(weight, ids, "embedding");
    }

    /** RMSNorm over the last dimension: x / sqrt(mean(x²) + eps) · weight. */
    public static Tensor rmsNorm(Tensor x, Tensor weight, double eps) {
        requireFloat(x, "rmsNorm");
        requireFloat(weight, "rmsNorm");
        if (!(eps >= 0)) throw new IllegalArgumentException("rmsNorm: eps must be >= 0, got " + eps);
        int d = lastDim(x, "rmsNorm");
        if (weight.rank() != 1 || weight.dim(0) != d) {
            throw new IllegalArgumentException("rmsNorm: weight " + weight.shapeString() + " must be (" + d + ") for input " + x.shapeString());
        }
        int n = Math.toIntExact(x.numel() / Math.max(d, 1));
        ReductionKernels kernels = Kernels.on("rmsNorm", x, weight).reductions();
        Tensor out = Tensor.zerosLike(x);
        Tensor inv = Tensor.zeros(x.device(), n);
        kernels.rmsNorm(x, weight, eps, out, inv);
        return record(out, "rmsNorm", new Tensor[] {x, weight}, g -> {
            Tensor gx = Tensor.zerosLike(x);
            Tensor gWeight = Tensor.zerosLike(weight);
            kernels.rmsNormBackward(x, weight, inv, g, gx, gWeight);
            return new Tensor[] {gx, gWeight};
        });
    }

    /** Mean cross-entropy of logits (N, V) against int32 targets (N); target −1 is ignored. */
    public static Tensor crossEntropy(Tensor logits, Tensor targets) {
        require2d(logits, "crossEntropy", "logits");
        requireIndexVector(targets, "crossEntropy");
        int n = logits.dim(0);
        if (targets.dim(0) != n) {
            throw new IllegalArgumentException("crossEntropy: " + targets.dim(0) + " targets for " + n + " rows of logits");
        }
        ReductionKernels kernels = Kernels.on("crossEntropy", logits, targets).reductions();
        Tensor out = Tensor.zeros(logits.device());
        kernels.crossEntropy(logits, targets, out);
        return record(out, "crossEntropy", new Tensor[] {logits, targets}, g -> {
            Tensor gi = Tensor.zerosLike(logits);
            kernels.crossEntropyBackward(logits, targets, g, gi);
            return new Tensor[] {gi, null};
        });
    }

    // ================================================================ helpers

    private static Tensor scaled(Tensor a, float alpha) {
        Tensor out = Tensor.zerosLike(a);
        elementwise(a).scale(alpha, a, out);
        return out;
    }

    private static Tensor product(Tensor a, Tensor b) {
        Tensor out = Tensor.zerosLike(a);
        elementwise("mul", a, b).mul(a, b, out);
        return out;
    }

    private static ElementwiseKernels elementwise(Tensor a) {
        return Kernels.of(a.device()).elementwise();
    }

    private static ElementwiseKernels elementwise(String op, Tensor a, Tensor b) {
        return Kernels.on(op, a, b).elementwise();
    }

    private static ReductionKernels reductions(Tensor a) {
        return Kernels.of(a.device()).reductions();
    }

    private static int lastDim(Tensor a, String op) {
        if (a.rank() == 0) throw new IllegalArgumentException(op + ": needs at least one dimension, got a scalar");
        return a.dim(-1);
    }

    static void requireFloat(Tensor t, String op) {
        t.requireDType(DType.F32, op);
    }

    static void require2d(Tensor t, String op, String what) {
        if (t.rank() != 2) {
            throw new IllegalArgumentException(op + ": " + what + " must be 2-D, got shape " + t.shapeString());
        }
        requireFloat(t, op);
    }

    static void requireSameShape(Tensor a, Tensor b, String op) {
        requireFloat(a, op);
        requireFloat(b, op);
        if (!a.sameShape(b)) {
            throw new IllegalArgumentException(op + ": shapes differ: " + a.shapeString() + " vs " + b.shapeString());
        }
    }

    /** Row ops index the first dimension, which a scalar does not have. */
    static void requireRows(Tensor t, String op) {
        if (t.rank() == 0) throw new IllegalArgumentException(op + ": needs rows (at least one dimension), got a scalar");
    }

    static void requireDim01(Tensor a, int dim, String op) {
        if (dim != 0 && dim != 1) {
            throw new IllegalArgumentException(op + ": dim must be 0 or 1 for a 2-D tensor, got dim " + dim + " for "
                    + a.shapeString());
        }
    }

    static boolean sameTrailingShape(Tensor a, Tensor b) {
        return Arrays.equals(Arrays.copyOfRange(a.shape(), 1, a.rank()), Arrays.copyOfRange(b.shape(), 1, b.rank()));
    }

    static void requireIndexVector(Tensor idx, String op) {
        idx.requireDType(DType.I32, op);
        if (idx.rank() != 1) throw new IllegalArgumentException(op + ": indices must be 1-D, got " + idx.shapeString());
    }
}
