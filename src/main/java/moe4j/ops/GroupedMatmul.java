package moe4j.ops;

import static moe4j.autograd.Autograd.gradientTarget;
import static moe4j.autograd.Autograd.record;

import java.util.Arrays;
import java.util.List;
import moe4j.kernels.Kernels;
import moe4j.kernels.MatmulKernels;
import moe4j.tensor.Tensor;

/**
 * The ragged grouped matrix product of an MoE layer, differentiable: rows of {@code x} are grouped by
 * expert (consecutive runs of the given sizes, any of them 0) and group {@code g} is multiplied by its
 * own weight. Nothing is padded: exactly the rows that exist are computed.
 *
 * <p>Two weight layouts, numerically the same function:
 * <ul>
 *   <li>packed: one tensor {@code (G, K, N)}, group g computes {@code x_g · W[g]};</li>
 *   <li>list: G linear weights {@code (N, K)} stored (out, in), group g computes {@code x_g · W_gᵀ}.</li>
 * </ul>
 * Every weight gets a gradient, zero for a group without rows.
 */
public final class GroupedMatmul {
    private GroupedMatmul() {}

    /** {@code x (R, K)} times packed {@code w (G, K, N)} by groups of rows → {@code (R, N)}. */
    public static Tensor packed(Tensor x, int[] groupSizes, Tensor w) {
        Ops.require2d(x, "groupedMatmul", "x");
        Ops.requireFloat(w, "groupedMatmul");
        if (w.rank() != 3 || w.dim(0) != groupSizes.length || w.dim(1) != x.dim(1)) {
            throw new IllegalArgumentException("groupedMatmul: packed weight " + w.shapeString() + " must be ("
                    + groupSizes.length + ", " + x.dim(1) + ", N) for input " + x.shapeString() + " and "
                    + groupSizes.length + " groups");
        }
        int k = w.dim(1);
        int n = w.dim(2);
        long wStride = (long) k * n;
        Tensor[] perGroup = new Tensor[groupSizes.length];
        long[] offs = new long[groupSizes.length];
        for (int g = 0; g < perGroup.length; g++) {
            perGroup[g] = w;
            offs[g] = g * wStride;
        }
        return compute(x, groupSizes, k, n, new Tensor[] {w}, perGroup, offs, false);
    }

    /** {@code x (R, K)} times the transposes of G linear weights {@code (N, K)} by groups of rows → {@code (R, N)}. */
    public static Tensor list(Tensor x, int[] groupSizes, List<Tensor> weights) {
        Ops.require2d(x, "groupedMatmul", "x");
        if (weights.size() != groupSizes.length) {
            throw new IllegalArgumentException("groupedMatmul: " + weights.size() + " weights for " + groupSizes.length + " groups");
        }
        int k = x.dim(1);
        int n = weights.isEmpty() ? 0 : weights.get(0).dim(0);
        Tensor[] perGroup = new Tensor[groupSizes.length];
        long[] offs = new long[groupSizes.length];
        for (int g = 0; g < perGroup.length; g++) {
            Tensor wg = weights.get(g);
            Ops.requireFloat(wg, "groupedMatmul");
            if (wg.rank() != 2 || wg.dim(0) != n || wg.dim(1) != k) {
                throw new IllegalArgumentException("groupedMatmul: weight " + g + " is " + wg.shapeString()
                        + ", expected (" + n + ", " + k + ") for input " + x.shapeString());
            }
            perGroup[g] = wg;
        }
        return compute(x, groupSizes, k, n, weights.toArray(Tensor[]::new), perGroup, offs, true);
    }

    /**
     * The gated (SwiGLU) experts over R rows grouped by expert, packed weights {@code gateW, upW (G, D, H)} and
     * {@code downW (G, H, D)}: {@code out_g = (silu(x_g·gateW[g]) ⊙ x_g·upW[g])·downW[g]}, as the device's one
     * computation ({@link MatmulKernels#gatedExperts}); callers check {@link MatmulKernels#fusesGatedExperts}
     * and otherwise compose {@link #packed} and {@code Ops.swiglu}. The rows are {@code x (R, D)}, or through
     * {@code gather} rows {@code x[rowIndex[i]]} of an (N, D) {@code x}: the same as
     * {@code gatedExperts(Ops.indexSelect(x, gather.rowIndex()), null, ...)}, without the gathered rows in between.
     */
    public static Tensor gatedExperts(Tensor x, moe4j.kernels.RowGather gather, int[] groupSizes, Tensor gateW, Tensor upW,
                                      Tensor downW) {
        Ops.require2d(x, "gatedExperts", "x");
        int r = gather != null ? gather.rows() : x.dim(0);
        int g = groupSizes.length;
        int d = x.dim(1);
        int h = gateW.rank() == 3 ? gateW.dim(2) : -1;
        for (Tensor w : new Tensor[] {gateW, upW, downW}) Ops.requireFloat(w, "gatedExperts");
        if (gateW.rank() != 3 || gateW.dim(0) != g || gateW.dim(1) != d || !upW.sameShape(gateW)
                || downW.rank() != 3 || downW.dim(0) != g || downW.dim(1) != h || downW.dim(2) != d) {
            throw new IllegalArgumentException("gatedExperts: weights gate " + gateW.shapeString() + ", up " + upW.shapeString() + ", down "
                    + downW.shapeString() + " must be (" + g + ", " + d + ", H), (" + g + ", " + d + ", H) and (" + g + ", H, " + d
                    + ") for input " + x.shapeString() + " and " + g + " groups");
        }
        int[] offsets = offsets(groupSizes, r);
        Kernels device = gather == null ? Kernels.on("gatedExperts", x, gateW, upW, downW)
                : Kernels.on("gatedExperts", x, gather.rowIndex(), gather.entryOfRow(), gateW, upW, downW);
        if (gather != null) {
            // the device reads x's rows and writes its gradient's rows through these: a bad one is an error here, not
            // a stray access (free for a dispatch's indices, which the kernel that made them vouched for)
            Ops.checkIndices(device, gather.rowIndex(), x.dim(0), "gatedExperts");
            Ops.checkIndices(device, gather.entryOfRow(), Math.multiplyExact(x.dim(0), gather.slots()), "gatedExperts");
        }
        MatmulKernels kernels = device.matmul();
        Tensor out = Tensor.empty(x.device(), moe4j.tensor.DType.F32, r, d);
        MatmulKernels.GatedExpertsBackward backward = kernels.gatedExperts(offsets, x, gather, gateW, upW, downW, out);
        boolean wantX = x.requiresGrad();
        int[] xShape = x.shape();
        return record(out, "gatedExperts", new Tensor[] {x, gateW, upW, downW}, gOut -> {
            Tensor gx = wantX ? Tensor.empty(gOut.device(), moe4j.tensor.DType.F32, xShape) : null;
            var gate = gateW.requiresGrad() ? gradientTarget(gateW) : null;
            var up = upW.requiresGrad() ? gradientTarget(upW) : null;
            var down = downW.requiresGrad() ? gradientTarget(downW) : null;
            backward.run(gOut, gx, gate == null ? null : gate.tensor(), gate == null ? 0f : gate.beta(),
                    up == null ? null : up.tensor(), up == null ? 0f : up.beta(), down == null ? null : down.tensor(),
                    down == null ? 0f : down.beta());
            return new Tensor[] {gx, gate == null ? null : gate.tensor(), up == null ? null : up.tensor(),
                    down == null ? null : down.tensor()};
        });
    }

    private static Tensor compute(Tensor x, int[] sizes, int k, int n, Tensor[] weightTensors,
                                  Tensor[] w, long[] wOff, boolean transW) {
        int[] offsets = offsets(sizes, x.dim(0));
        Tensor[] all = new Tensor[weightTensors.length + 1];
        all[0] = x;
        System.arraycopy(weightTensors, 0, all, 1, weightTensors.length);
        MatmulKernels kernels = Kernels.on("groupedMatmul", all).matmul();
        // every row belongs to a group and every group's product is written with beta 0
        Tensor y = Tensor.empty(x.device(), moe4j.tensor.DType.F32, x.dim(0), n);
        kernels.groupedGemm(offsets, k, n, x, w, wOff, transW, y, 0f);
        Tensor[] inputs = new Tensor[weightTensors.length + 1];
        inputs[0] = x;
        System.arraycopy(weightTensors, 0, inputs, 1, weightTensors.length);
        return record(y, "groupedMatmul", inputs, g -> {
            Tensor[] grads = new Tensor[inputs.length];
            // the input gradient and the weight gradient both read g: a device that converts it does it once
            try (var shared = kernels.reuseCopies(t -> t == g)) {
                if (x.requiresGrad()) {
                    // dX_g = dY_g · op(W_g)ᵀ: the same grouped product with the other transpose
                    Tensor gx = Tensor.emptyLike(x);
                    kernels.groupedGemm(offsets, n, k, g, w, wOff, !transW, gx, 0f);
                    grads[0] = gx;
                }
                boolean anyWeight = false;
                for (Tensor wt : weightTensors) anyWeight |= wt.requiresGrad();
                if (anyWeight) {
                    Tensor[] dw = new Tensor[sizes.length];
                    if (transW) {
                        // list layout, W_g (N, K): dW_g = dY_gᵀ · X_g, i.e. the weight gradient with the operands swapped;
                        // one call takes one beta: when the experts' targets disagree, every one gets a new tensor
                        // and a weight listed twice would have two groups add into one buffer in one batched product
                        var targets = new moe4j.autograd.Autograd.GradientTarget[sizes.length];
                        boolean sameBeta = distinct(weightTensors);
                        for (int e = 0; e < sizes.length; e++) {
                            targets[e] = gradientTarget(weightTensors[e]);
                            sameBeta &= targets[e].beta() == targets[0].beta();
                        }
                        float beta = sameBeta ? targets[0].beta() : 0f;
                        for (int e = 0; !sameBeta && e < sizes.length; e++) {
                            // a zeroed buffer handed out for overwriting now gets its gradient added instead
                            if (targets[e].beta() == 0f && targets[e].tensor() == weightTensors[e].grad()) targets[e].tensor().fill(0f);
                        }
                        for (int e = 0; e < sizes.length; e++) {
                            // every group's gradient is written (a group without rows gets zeros, or keeps its sum)
                            grads[e + 1] = sameBeta ? targets[e].tensor() : Tensor.emptyLike(weightTensors[e]);
                            dw[e] = grads[e + 1];
                        }
                        kernels.groupedWeightGrad(offsets, n, k, g, x, dw, wOff, beta);
                    } else {
                        var target = gradientTarget(weightTensors[0]);
                        Arrays.fill(dw, target.tensor());
                        kernels.groupedWeightGrad(offsets, k, n, x, g, dw, wOff, target.beta());
                        grads[1] = target.tensor();
                    }
                }
            }
            return grads;
        });
    }

    /** Whether no tensor appears twice in {@code ts} (by identity). */
    private static boolean distinct(Tensor[] ts) {
        var seen = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<Tensor, Boolean>());
        for (Tensor t : ts) if (!seen.add(t)) return false;
        return true;
    }

    private static int[] offsets(int[] sizes, int rows) {
        int[] offsets = new int[sizes.length + 1];
        for (int g = 0; g < sizes.length; g++) {
            if (sizes[g] < 0) throw new IllegalArgumentException("groupedMatmul: negative group size " + sizes[g] + " for group " + g);
            offsets[g + 1] = offsets[g] + sizes[g];
        }
        if (offsets[sizes.length] != rows) {
            throw new IllegalArgumentException("groupedMatmul: group sizes " + Arrays.toString(sizes) + " add up to "
                    + offsets[sizes.length] + ", input has " + rows + " rows");
        }
        return offsets;
    }
}
