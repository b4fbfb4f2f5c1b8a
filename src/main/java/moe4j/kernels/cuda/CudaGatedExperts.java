package moe4j.kernels.cuda;

import static moe4j.kernels.cuda.CudaKernels.at;

import moe4j.kernels.MatmulKernels;
import moe4j.kernels.RowGather;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.Tensor;

/**
 * The gated (SwiGLU) experts of an MoE layer in mixed precision as one computation
 * ({@link MatmulKernels#gatedExperts}), in the grouped layout of a {@link RowPlan} from start to end:
 * <pre>
 *   forward:  x → layout, bf16 (one pass; rows taken through the row index when there is one) → [gate | up] = x·Wg, x·Wu (fp32) → h = silu(gate)·up (bf16)
 *             → h·Wd (fp32) → packed rows of out (one pass; none for a compact plan, whose layout is the packed rows)
 *   backward: dOut → layout, bf16 (one pass) → dWd = hᵀ·dOut, dh = dOut·Wdᵀ (fp32) → [dgate | dup] (bf16)
 *             → dWg, dWu = xᵀ·[dgate | dup]; dx = dgate·Wgᵀ + dup·Wuᵀ (fp32) → packed rows of dx (one pass;
 *             summed per source row when the rows were gathered: one gather per source row over its
 *             entries, no atomics)
 * </pre>
 * Composed from grouped products, the same function converts or moves its rows at each of the five
 * products and keeps its activations in fp32; here the hidden rows are written once, already bf16, and
 * the rows are converted once per direction. Padding rows are zero in x and in dOut, so they stay zero
 * through every step and add nothing to a weight gradient. What the backward needs (x and h in bf16,
 * [gate | up] in fp32, the row map) lives in tensors of the caller's memory scope.
 */
final class CudaGatedExperts {
    private CudaGatedExperts() {}

    static MatmulKernels.GatedExpertsBackward forward(CudaStream s, RowPlan plan, int[] offsets, Tensor x, RowGather gather, Tensor gateW,
                                                      Tensor upW, Tensor downW, Tensor out) {
        int groups = offsets.length - 1;
        int d = x.dim(1);
        int h = gateW.dim(2);
        int first = offsets[0];
        int[] rows = new int[groups];
        for (int g = 0; g < groups; g++) rows[g] = offsets[g + 1] - offsets[g];
        int[] layout = Bf16Copies.RowMap.layoutOf(offsets, plan);
        int layoutRows = plan.rows();
        Device device = x.device();
        if (layoutRows == 0) return (gOut, gx, gGate, betaGate, gUp, betaUp, gDown, betaDown) -> {
            CudaStream bs = CudaStream.of(s.gpu); // the backward's thread's own stream (a stream belongs to one thread)
            if (gx != null && gx.numel() > 0) bs.zero(at(gx), 4L * gx.numel()); // no row was taken from x
            clearUnlessAdding(bs, gGate, betaGate);
            clearUnlessAdding(bs, gUp, betaUp);
            clearUnlessAdding(bs, gDown, betaDown);
        };
        Tensor mapOnDevice = Tensor.empty(device, DType.I32, layout.length);
        Bf16Copies.RowMap map = Bf16Copies.RowMap.upload(s, at(mapOnDevice), layout, layoutRows);
        Tensor x16 = Tensor.empty(device, DType.BF16, layoutRows, d);
        Tensor gateUp = Tensor.empty(device, DType.F32, layoutRows, 2 * h);
        Tensor h16 = Tensor.empty(device, DType.BF16, layoutRows, h);
        String shape = "gated experts d=" + d + " h=" + h + " groups=" + groups + " rows~" + Integer.highestOneBit(Math.max(1, layoutRows));
        try (Bf16Copies copies = new Bf16Copies(s)) {
            long wg = copies.of(gateW), wu = copies.of(upW), wd = copies.of(downW);
            if (gather == null) map.pad(s, at(x, (long) first * d), at(x16), d);
            else map.padGathered(s, at(x), at(gather.rowIndex(), first), at(x16), d);
            long xl = at(x16), gu = at(gateUp), hl = at(h16);
            // [gate | up] rows: two products writing the two halves of each fp32 row
            Bf16Products.run(s, plan, rows, shape + " gate", false, false, h, d, g -> xl + 2L * map.layoutRow(g) * d, d,
                    g -> wg + 2L * g * d * h, h, g -> gu + 4L * map.layoutRow(g) * 2 * h, 2 * h, 0f);
            Bf16Products.run(s, plan, rows, shape + " up", false, false, h, d, g -> xl + 2L * map.layoutRow(g) * d, d,
                    g -> wu + 2L * g * d * h, h, g -> gu + 4L * map.layoutRow(g) * 2 * h + 4L * h, 2 * h, 0f);
            s.launch(KernelSource.ELEMENTWISE, "swiglu_forward_f32_bf16").over(activationThreads(layoutRows, h)).ptr(gu).ptr(hl)
                    .i64(layoutRows).i32(h).run();
            long ol = plan.compact() ? at(out, (long) first * d) : copies.scratch(4L * layoutRows * d);
            Bf16Products.run(s, plan, rows, shape + " down", false, false, d, h, g -> hl + 2L * map.layoutRow(g) * h, h,
                    g -> wd + 2L * g * h * d, d, g -> ol + 4L * map.layoutRow(g) * d, d, 0f);
            if (!plan.compact()) map.unpad(s, ol, at(out, (long) first * d), d);
        }
        return (gOut, gx, gGate, betaGate, gUp, betaUp, gDown, betaDown) -> {
            CudaStream bs = CudaStream.of(s.gpu); // the backward's thread's own stream (a stream belongs to one thread)
            if (betaGate != 0f && betaGate != 1f || betaUp != 0f && betaUp != 1f || betaDown != 0f && betaDown != 1f) {
                throw new IllegalArgumentException("gated experts backward: gradient betas must be 0 (overwrite) or 1 (add), got "
                        + betaGate + ", " + betaUp + ", " + betaDown);
            }
            // the map as the forward uploaded it, read from its tensor (which this backward keeps alive)
            Bf16Copies.RowMap kept = new Bf16Copies.RowMap(at(mapOnDevice), map.groups(), map.maxCap(), map.paddedRows(), layout);
            try (Bf16Copies copies = new Bf16Copies(bs)) {
                long xl = at(x16), gu = at(gateUp), hl = at(h16);
                long dy = copies.scratch(2L * layoutRows * d);
                kept.pad(bs, at(gOut, (long) first * d), dy, d);
                if (gDown != null) {
                    // dWd_g (h × d) = h_gᵀ · dOut_g
                    zeroRowGroups(bs, rows, gDown, (long) h * d, betaDown);
                    Bf16Products.run(bs, plan, rows, shape + " down weight gradient", true, false, d, h, g -> hl + 2L * map.layoutRow(g) * h, h,
                            g -> dy + 2L * map.layoutRow(g) * d, d, g -> at(gDown, (long) g * h * d), d, betaDown);
                }
                long wg = copies.of(gateW), wu = copies.of(upW), wd = copies.of(downW);
                long dh = copies.scratch(4L * layoutRows * h);
                Bf16Products.run(bs, plan, rows, shape + " dh", false, true, h, d, g -> dy + 2L * map.layoutRow(g) * d, d,
                        g -> wd + 2L * g * h * d, d, g -> dh + 4L * map.layoutRow(g) * h, h, 0f);
                long dgu = copies.scratch(2L * layoutRows * 2 * h);
                bs.launch(KernelSource.ELEMENTWISE, "swiglu_backward_f32_bf16").over(activationThreads(layoutRows, h)).ptr(gu).ptr(dh).ptr(dgu)
                        .i64(layoutRows).i32(h).run();
                if (gGate != null) {
                    zeroRowGroups(bs, rows, gGate, (long) d * h, betaGate);
                    Bf16Products.run(bs, plan, rows, shape + " gate weight gradient", true, false, h, d, g -> xl + 2L * map.layoutRow(g) * d, d,
                            g -> dgu + 2L * map.layoutRow(g) * 2 * h, 2 * h, g -> at(gGate, (long) g * d * h), h, betaGate);
                }
                if (gUp != null) {
                    zeroRowGroups(bs, rows, gUp, (long) d * h, betaUp);
                    Bf16Products.run(bs, plan, rows, shape + " up weight gradient", true, false, h, d, g -> xl + 2L * map.layoutRow(g) * d, d,
                            g -> dgu + 2L * map.layoutRow(g) * 2 * h + 2L * h, 2 * h, g -> at(gUp, (long) g * d * h), h, betaUp);
                }
                if (gx != null) {
                    // dx = dgate·Wgᵀ + dup·Wuᵀ: the second product adds into the first's result
                    boolean direct = plan.compact() && gather == null; // a compact layout's rows are gx's own
                    long dxl = direct ? at(gx, (long) first * d) : copies.scratch(4L * layoutRows * d);
                    Bf16Products.run(bs, plan, rows, shape + " dx gate", false, true, d, h, g -> dgu + 2L * map.layoutRow(g) * 2 * h, 2 * h,
                            g -> wg + 2L * g * d * h, h, g -> dxl + 4L * map.layoutRow(g) * d, d, 0f);
                    Bf16Products.run(bs, plan, rows, shape + " dx up", false, true, d, h, g -> dgu + 2L * map.layoutRow(g) * 2 * h + 2L * h, 2 * h,
                            g -> wu + 2L * g * d * h, h, g -> dxl + 4L * map.layoutRow(g) * d, d, 1f);
                    if (gather != null) sumPerSourceRow(bs, copies, kept, dxl, gather, first, gx, d);
                    else if (!direct) kept.unpad(bs, dxl, at(gx, (long) first * d), d);
                }
            }
        };
    }

    /**
     * {@code gx[n] = Σ} of the layout rows taken from source row n: one gather per source row over its
     * {@code slots} entries, in ascending row order ({@code combine_rows_f32} without weights: no atomics,
     * every row of gx written, the same bits on every run). Beyond 32 slots per source row, which that kernel
     * does not take, the rows are scatter-added into a zeroed gx with atomics.
     */
    private static void sumPerSourceRow(CudaStream s, Bf16Copies copies, Bf16Copies.RowMap map, long layout, RowGather gather, int first,
                                        Tensor gx, int d) {
        int sources = gx.dim(0);
        if (sources == 0) return;
        int slots = gather.slots();
        if (slots > 32) {
            s.zero(at(gx), 4L * gx.numel());
            map.unpadScatterAdd(s, layout, at(gather.rowIndex(), first), at(gx), d);
            return;
        }
        long entries = (long) sources * slots;
        long rowOfEntry = copies.scratch(4L * entries);
        s.memset(rowOfEntry, (byte) 0xff, 4L * entries);
        map.layoutRowOfEntry(s, at(gather.entryOfRow(), first), rowOfEntry);
        CudaKernels.combineRows(s, layout, rowOfEntry, 0L, at(gx), sources, slots, d);
    }

    /** Threads of the activation kernels: one per four columns when the hidden width allows, else one per element. */
    private static long activationThreads(int rows, int h) {
        return (long) rows * (h % 4 == 0 ? h / 4 : h);
    }

    /** A weight gradient's groups without rows get no product: zero unless the gradient is being added to (beta 1). */
    private static void zeroRowGroups(CudaStream s, int[] rows, Tensor grad, long perGroup, float beta) {
        if (beta == 1f) return;
        for (int g = 0; g < rows.length; g++) {
            if (rows[g] == 0) s.zero(at(grad, g * perGroup), 4L * perGroup);
        }
    }

    /** All of {@code grad} zero unless it is being added to (an empty layout computes nothing). */
    private static void clearUnlessAdding(CudaStream s, Tensor grad, float beta) {
        if (grad != null && beta != 1f && grad.numel() > 0) s.zero(at(grad), 4L * grad.numel());
    }
}
