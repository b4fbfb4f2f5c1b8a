package moe4j.kernels.cuda;

import moe4j.kernels.KernelTiming;
import moe4j.kernels.AttentionKernels;
import moe4j.kernels.ElementwiseKernels;
import moe4j.kernels.ExecutionContext;
import moe4j.kernels.IndexKernels;
import moe4j.kernels.Kernels;
import moe4j.kernels.MatmulKernels;
import moe4j.kernels.OptimizerKernels;
import moe4j.kernels.ReductionKernels;
import moe4j.kernels.RoutingKernels;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.Tensor;

/**
 * The kernels of one GPU behind the device-neutral interfaces, float32 (TF32 off) like the CPU's, issued
 * on the calling thread's stream: matrix products (cuBLAS), the element-wise group, row and column
 * indexing, the routing group, the reductions ({@link CudaReductions}), attention ({@link CudaAttention})
 * and the AdamW update. Where a kernel has a limit (top-k over at most 1024 columns, a head dimension
 * of at most 256) it throws {@link UnsupportedOperationException} naming it. The MoE layer also runs
 * whole on the GPU through {@link CudaMoELayer}.
 */
final class CudaKernels implements Kernels {
    private final Device device;
    private final CudaGpu gpu;
    private final Matmul matmul = new Matmul();
    private final Elementwise elementwise = new Elementwise();
    private final Index index = new Index();
    private final Routing routing = new Routing();
    private final CudaReductions reductions;
    private final CudaAttention attention;
    private final Optimizer optimizer = new Optimizer();

    CudaKernels(Device device) {
        this.device = device;
        this.gpu = CudaGpu.of(device.index());
        this.reductions = new CudaReductions(gpu);
        this.attention = new CudaAttention(gpu);
    }

    CudaStream stream() {
        return CudaStream.of(gpu);
    }

    /**
     * out[t] = Σ over token t's K entries of (weights ? weights[e] : 1)·rows[rowOfEntry[e]], in ascending row
     * order, rows −1 skipped, every row of out written ({@code combine_rows_f32}, a block per token; K ≤ 32):
     * the weighted combine, and the sum a gather's adjoint takes per source row ({@code weights} 0).
     */
    static void combineRows(CudaStream s, long rows, long rowOfEntry, long weights, long out, int tokens, int k, int d) {
        s.launch(KernelSource.PERMUTE, "combine_rows_f32").grid(Math.min(tokens, 65535 * 4)).block(256)
                .ptr(rows).ptr(rowOfEntry).ptr(weights).ptr(0L).ptr(out).i32(tokens).i32(k).i32(d).i32(0).run();
    }

    static long at(Tensor t, long elementOffset) {
        return CudaAllocator.cuda(t.memory()).at(elementOffset);
    }

    static long at(Tensor t) {
        return at(t, 0);
    }

    static UnsupportedOperationException missing(String op) {
        return new UnsupportedOperationException("cuda: " + op + " has no CUDA kernel yet; run it on the cpu device");
    }

    private Launch op(String kernel) {
        return stream().launch(KernelSource.OPS, kernel);
    }

    @Override
    public Device device() {
        return device;
    }

    @Override
    public void synchronize() {
        stream().synchronize();
    }

    @Override
    public void startKernelTiming() {
        stream().startTiming();
    }

    @Override
    public KernelTiming stopKernelTiming() {
        return stream().stopTiming();
    }

    @Override
    public MatmulKernels matmul() {
        return matmul;
    }

    @Override
    public ElementwiseKernels elementwise() {
        return elementwise;
    }

    @Override
    public IndexKernels indexing() {
        return index;
    }

    @Override
    public RoutingKernels routing() {
        return routing;
    }

    @Override
    public ReductionKernels reductions() {
        return reductions;
    }

    @Override
    public AttentionKernels attention() {
        return attention;
    }

    @Override
    public OptimizerKernels optimizer() {
        return optimizer;
    }

    // ---------------------------------------------------------------- matmul

    /**
     * cuBLAS products in float32 (TF32 off), or, when the calling thread's {@link ExecutionContext} asks
     * for {@link DType#BF16} products, mixed precision: each float32 operand is rounded to bfloat16 into a
     * stream-ordered scratch buffer on the way in (freed once the product is queued), the product runs on
     * the tensor cores with float32 accumulation, and the result is stored in float32.
     */
    private final class Matmul implements MatmulKernels {
        /**
         * The row layout of bf16 grouped products: AUTO (by the group sizes, {@link RowPlan}); COMPACT forces
         * ragged products, PADDED or BUCKETED force padding (system property {@code moe4j.cuda.groupedLayout},
         * for comparing them).
         */
        private static CudaMoELayer.RowLayout groupedLayout() {
            String v = System.getProperty("moe4j.cuda.groupedLayout", "auto");
            try {
                return CudaMoELayer.RowLayout.valueOf(v.toUpperCase(java.util.Locale.ROOT));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("moe4j.cuda.groupedLayout is '" + v + "': valid values are auto, compact, padded, bucketed");
            }
        }

        @Override
        public void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha, Tensor a, long aOff, int lda, Tensor b,
                         long bOff, int ldb, float beta, Tensor c, long cOff, int ldc) {
            if (m == 0 || n == 0) return;
            if (k == 0) {
                scaleRegion(c, cOff, m, n, ldc, beta);
                return;
            }
            CudaStream s = stream();
            if (!bf16Products()) {
                s.gemm(transA, transB, m, n, k, alpha, at(a, aOff), lda, at(b, bOff), ldb, beta, at(c, cOff), ldc,
                        Cublas.CUDA_R_32F, Cublas.CUDA_R_32F);
                return;
            }
            try (Bf16Copies copies = new Bf16Copies(s)) {
                long a16 = copies.of(a, aOff, transA ? k : m, transA ? m : k, lda);
                long b16 = copies.of(b, bOff, transB ? n : k, transB ? k : n, ldb);
                s.gemm(transA, transB, m, n, k, alpha, a16, lda, b16, ldb, beta, at(c, cOff), ldc, Cublas.CUDA_R_16BF, Cublas.CUDA_R_32F);
            }
        }

        @Override
        public void groupedGemm(int[] offsets, int k, int n, Tensor x, Tensor[] w, long[] wOff, boolean transW, Tensor y, float beta) {
            CudaStream s = stream();
            if (!bf16Products()) {
                for (int g = 0; g + 1 < offsets.length; g++) {
                    int rows = offsets[g + 1] - offsets[g];
                    if (rows == 0) continue;
                    s.gemm(false, transW, rows, n, k, 1f, at(x, (long) offsets[g] * k), k, at(w[g], wOff[g]), transW ? k : n, beta,
                            at(y, (long) offsets[g] * n), n, Cublas.CUDA_R_32F, Cublas.CUDA_R_32F);
                }
                return;
            }
            int first = offsets[0];
            int rowsTotal = offsets[offsets.length - 1] - first;
            if (rowsTotal == 0) return;
            try (Bf16Copies copies = new Bf16Copies(s)) {
                // a packed layer passes one tensor for every group: it is converted once, not once per expert
                Map<Tensor, Long> w16 = new IdentityHashMap<>();
                for (Tensor t : w) w16.computeIfAbsent(t, copies::of);
                RowPlan plan = beta == 0f ? planFor(offsets, n) : null;
                if (plan != null && !plan.compact()) {
                    // small groups: the rows go into the padded layout on their way to bf16, one batched product per
                    // bucket writes a padded result, and its rows are moved back to the packed output
                    Bf16Copies.RowMap map = copies.rowMap(offsets, plan);
                    long xPad = copies.padded(x, (long) first * k, k, map);
                    long yPad = copies.scratch(4L * plan.rows() * n);
                    Bf16Products.buckets(s, plan, false, transW, n, k, g -> xPad + 2L * plan.expertBase()[g] * k, k,
                            g -> w16.get(w[g]) + 2L * wOff[g], transW ? k : n, g -> yPad + 4L * plan.expertBase()[g] * n, n, 0f);
                    map.unpad(s, yPad, at(y, (long) first * n), n);
                    return;
                }
                long x16 = copies.of(x, (long) first * k, rowsTotal, k, k);
                List<RaggedGemm.Product> products = new ArrayList<>();
                for (int g = 0; g + 1 < offsets.length; g++) {
                    int rows = offsets[g + 1] - offsets[g];
                    if (rows == 0) continue;
                    products.add(new RaggedGemm.Product(false, transW, rows, n, k, x16 + 2L * (offsets[g] - first) * k, k,
                            w16.get(w[g]) + 2L * wOff[g], transW ? k : n, at(y, (long) offsets[g] * n), n));
                }
                Bf16Products.ragged(s, "grouped product k=" + k + " n=" + n + " transW=" + transW + " groups=" + w.length + " rows~"
                        + Integer.highestOneBit(rowsTotal), products, beta);
            }
        }

        @Override
        public void groupedWeightGrad(int[] offsets, int k, int n, Tensor x, Tensor dy, Tensor[] dw, long[] dwOff, float beta) {
            CudaStream s = stream();
            for (int g = 0; g + 1 < offsets.length; g++) {
                if (offsets[g + 1] == offsets[g]) scaleRegion(dw[g], dwOff[g], k, n, n, beta);
            }
            if (!bf16Products()) {
                for (int g = 0; g + 1 < offsets.length; g++) {
                    int rows = offsets[g + 1] - offsets[g];
                    if (rows == 0) continue;
                    s.gemm(true, false, k, n, rows, 1f, at(x, (long) offsets[g] * k), k, at(dy, (long) offsets[g] * n), n, beta,
                            at(dw[g], dwOff[g]), n, Cublas.CUDA_R_32F, Cublas.CUDA_R_32F);
                }
                return;
            }
            int first = offsets[0];
            int rowsTotal = offsets[offsets.length - 1] - first;
            if (rowsTotal == 0) return;
            try (Bf16Copies copies = new Bf16Copies(s)) {
                RowPlan plan = planFor(offsets, n);
                if (!plan.compact()) {
                    // zero padding rows add nothing to Xᵀ·dY, so each bucket is one batched product over its cap rows,
                    // written straight into the gradients with the call's beta
                    Bf16Copies.RowMap map = copies.rowMap(offsets, plan);
                    long xPad = copies.padded(x, (long) first * k, k, map);
                    long dyPad = copies.padded(dy, (long) first * n, n, map);
                    Bf16Products.buckets(s, plan, true, false, n, k, g -> xPad + 2L * plan.expertBase()[g] * k, k,
                            g -> dyPad + 2L * plan.expertBase()[g] * n, n, g -> at(dw[g], dwOff[g]), n, beta);
                    return;
                }
                long x16 = copies.of(x, (long) first * k, rowsTotal, k, k);
                long dy16 = copies.of(dy, (long) first * n, rowsTotal, n, n);
                List<RaggedGemm.Product> products = new ArrayList<>();
                for (int g = 0; g + 1 < offsets.length; g++) {
                    int rows = offsets[g + 1] - offsets[g];
                    if (rows == 0) continue;
                    products.add(new RaggedGemm.Product(true, false, k, n, rows, x16 + 2L * (offsets[g] - first) * k, k,
                            dy16 + 2L * (offsets[g] - first) * n, n, at(dw[g], dwOff[g]), n));
                }
                Bf16Products.ragged(s, "grouped weight gradient k=" + k + " n=" + n + " groups=" + dw.length + " rows~"
                        + Integer.highestOneBit(rowsTotal), products, beta);
            }
        }

        @Override
        public boolean fusesGatedExperts() {
            return bf16Products();
        }

        @Override
        public GatedExpertsBackward gatedExperts(int[] offsets, Tensor x, moe4j.kernels.RowGather gather, Tensor gateW, Tensor upW,
                                                 Tensor downW, Tensor out) {
            if (!bf16Products()) throw new UnsupportedOperationException("cuda gatedExperts runs with bf16 products only (fusesGatedExperts)");
            // one layout for all five products, chosen by the gate and up products (two thirds of the work)
            return CudaGatedExperts.forward(stream(), planFor(offsets, gateW.dim(2)), offsets, x, gather, gateW, upW, downW, out);
        }

        @Override
        public Reuse reuseCopies(java.util.function.Predicate<Tensor> which) {
            return stream().kept().open(which);
        }

        /**
         * The layout of a bf16 grouped product over the groups of {@code offsets} with {@code width} output
         * columns: compact (ragged products) when every group's product fills the GPU, else padded or
         * bucketed ({@link RowPlan}), which runs many small groups as one batched product per bucket.
         */
        private RowPlan planFor(int[] offsets, int width) {
            int[] counts = new int[offsets.length - 1];
            for (int g = 0; g < counts.length; g++) counts[g] = offsets[g + 1] - offsets[g];
            return RowPlan.of(groupedLayout(), counts, width, gpu.multiprocessors);
        }

        private static boolean bf16Products() {
            return ExecutionContext.current().productInputs() == DType.BF16;
        }

        /** C (m×n at offset, row stride ld) *= beta: zero for 0, untouched for 1; one call when the rows are contiguous. */
        private void scaleRegion(Tensor c, long off, int m, int n, int ld, float beta) {
            if (beta == 1f || m == 0 || n == 0) return;
            CudaStream s = stream();
            int rows = ld == n ? 1 : m;
            long width = ld == n ? (long) m * n : n;
            for (int r = 0; r < rows; r++) {
                long row = at(c, off + (long) r * ld);
                if (beta == 0f) s.zero(row, 4L * width);
                else s.launch(KernelSource.ELEMENTWISE, "scale_f32").over(width).ptr(row).i64(width).f32(beta).run();
            }
        }
    }

    // ---------------------------------------------------------------- element-wise

    private final class Elementwise implements ElementwiseKernels {
        private void unary(String kernel, Tensor a, Tensor out) {
            long n = out.numel();
            if (n > 0) op(kernel).over(n).ptr(at(a)).ptr(at(out)).i64(n).run();
        }

        private void binary(String kernel, Tensor a, Tensor b, Tensor out) {
            long n = out.numel();
            if (n > 0) op(kernel).over(n).ptr(at(a)).ptr(at(b)).ptr(at(out)).i64(n).run();
        }

        private void rows(String kernel, Tensor x, Tensor v, Tensor out) {
            long n = out.numel();
            if (n > 0) op(kernel).over(n).ptr(at(x)).ptr(at(v)).ptr(at(out)).i64(out.rowCount()).i32(out.rowWidth()).run();
        }

        @Override
        public void convert(Tensor src, Tensor out) {
            if (src.numel() != out.numel()) {
                throw new IllegalArgumentException("convert: " + src.dtype() + src.shapeString() + " into " + out.dtype()
                        + out.shapeString() + ": element counts differ");
            }
            long n = out.numel();
            if (src.dtype() == out.dtype()) {
                out.copyFrom(src);
            } else if (src.dtype() == DType.F32 && out.dtype() == DType.BF16) {
                if (n > 0) stream().launch(KernelSource.ELEMENTWISE, "cast_f32_bf16").over(n).ptr(at(src)).ptr(at(out)).i64(n).run();
            } else if (src.dtype() == DType.BF16 && out.dtype() == DType.F32) {
                if (n > 0) stream().launch(KernelSource.ELEMENTWISE, "cast_bf16_f32").over(n).ptr(at(src)).ptr(at(out)).i64(n).run();
            } else {
                throw new UnsupportedOperationException("convert on cuda: " + src.dtype() + " into " + out.dtype()
                        + " (the cuda device converts between F32 and BF16)");
            }
        }

        @Override
        public void addScaled(Tensor a, float alpha, Tensor b, Tensor out) {
            long n = out.numel();
            if (n > 0) op("add_scaled").over(n).ptr(at(a)).f32(alpha).ptr(at(b)).ptr(at(out)).i64(n).run();
        }

        @Override
        public void axpy(float alpha, Tensor x, Tensor y) {
            long n = y.numel();
            if (n > 0) op("axpy").over(n).f32(alpha).ptr(at(x)).ptr(at(y)).i64(n).run();
        }

        @Override
        public void mul(Tensor a, Tensor b, Tensor out) {
            binary("mul", a, b, out);
        }

        @Override
        public void scale(float alpha, Tensor a, Tensor out) {
            long n = out.numel();
            if (n > 0) op("scale").over(n).f32(alpha).ptr(at(a)).ptr(at(out)).i64(n).run();
        }

        @Override
        public void addScalar(Tensor a, double c, Tensor out) {
            long n = out.numel();
            if (n > 0) op("add_scalar").over(n).ptr(at(a)).f64(c).ptr(at(out)).i64(n).run();
        }

        @Override
        public void fillWith(Tensor scalar, Tensor out) {
            unary("fill_with", scalar, out);
        }

        @Override
        public void silu(Tensor a, Tensor out) {
            unary("silu", a, out);
        }

        @Override
        public void siluBackward(Tensor a, Tensor g, Tensor gradIn) {
            binary("silu_backward", a, g, gradIn);
        }

        @Override
        public void swiglu(Tensor gate, Tensor up, Tensor out) {
            binary("swiglu_split", gate, up, out);
        }

        @Override
        public void swigluBackward(Tensor gate, Tensor up, Tensor g, Tensor gradGate, Tensor gradUp) {
            long n = g.numel();
            if (n > 0) op("swiglu_split_backward").over(n).ptr(at(gate)).ptr(at(up)).ptr(at(g)).ptr(at(gradGate)).ptr(at(gradUp)).i64(n).run();
        }

        @Override
        public void gelu(Tensor a, Tensor out) {
            long n = out.numel();
            if (n > 0) stream().launch(KernelSource.ELEMENTWISE, "gelu_forward_f32").over(n).ptr(at(a)).ptr(at(out)).i64(n).run();
        }

        @Override
        public void geluBackward(Tensor a, Tensor g, Tensor gradIn) {
            long n = g.numel();
            if (n > 0) stream().launch(KernelSource.ELEMENTWISE, "gelu_backward_f32").over(n).ptr(at(a)).ptr(at(g)).ptr(at(gradIn)).i64(n).run();
        }

        @Override
        public void relu(Tensor a, Tensor out) {
            long n = out.numel();
            if (n > 0) stream().launch(KernelSource.ELEMENTWISE, "relu_forward_f32").over(n).ptr(at(a)).ptr(at(out)).i64(n).run();
        }

        @Override
        public void reluBackward(Tensor a, Tensor g, Tensor gradIn) {
            long n = g.numel();
            if (n > 0) stream().launch(KernelSource.ELEMENTWISE, "relu_backward_f32").over(n).ptr(at(a)).ptr(at(g)).ptr(at(gradIn)).i64(n).run();
        }

        @Override
        public void sigmoid(Tensor a, Tensor out) {
            unary("sigmoid", a, out);
        }

        @Override
        public void sigmoidBackward(Tensor out, Tensor g, Tensor gradIn) {
            binary("sigmoid_backward", out, g, gradIn);
        }

        @Override
        public void reciprocal(Tensor a, Tensor out) {
            unary("reciprocal", a, out);
        }

        @Override
        public void reciprocalBackward(Tensor out, Tensor g, Tensor gradIn) {
            binary("reciprocal_backward", out, g, gradIn);
        }

        @Override
        public void mulRows(Tensor x, Tensor c, Tensor out) {
            rows("mul_rows", x, c, out);
        }

        @Override
        public void divRows(Tensor x, Tensor c, Tensor out) {
            rows("div_rows", x, c, out);
        }

        @Override
        public void divRowsDivisorGrad(Tensor g, Tensor x, Tensor c, Tensor gc) {
            int n = g.rowCount();
            if (n > 0) op("div_rows_divisor_grad").grid((n + 3) / 4).block(128).ptr(at(g)).ptr(at(x)).ptr(at(c)).ptr(at(gc)).i32(n)
                    .i32(g.rowWidth()).run();
        }

        @Override
        public void addColumns(Tensor x, Tensor v, Tensor out) {
            rows("add_columns", x, v, out);
        }

        @Override
        public void mulColumns(Tensor x, Tensor v, Tensor out) {
            rows("mul_columns", x, v, out);
        }

        @Override
        public void broadcastRows(Tensor v, Tensor out) {
            long n = out.numel();
            if (n > 0) op("broadcast_rows").over(n).ptr(at(v)).ptr(at(out)).i64(out.rowCount()).i32(out.rowWidth()).run();
        }

        @Override
        public void broadcastColumns(Tensor v, Tensor out) {
            long n = out.numel();
            if (n > 0) op("broadcast_columns").over(n).ptr(at(v)).ptr(at(out)).i64(out.rowCount()).i32(out.rowWidth()).run();
        }
    }

    // ---------------------------------------------------------------- indexing

    private final class Index implements IndexKernels {
        @Override
        public void checkIndices(Tensor idx, int bound, String op) {
            long n = idx.numel();
            if (n == 0) return;
            CudaStream s = stream();
            long fromEnd = s.pool.allocate(8, "index check result");
            try {
                s.zero(fromEnd, 8);
                op("check_indices").over(n).ptr(at(idx)).i64(n).i32(bound).ptr(fromEnd).run();
                int[] r = s.readInts(fromEnd, 2);
                long bad = (r[0] & 0xffffffffL) | ((long) r[1] << 32);
                if (bad > 0) {
                    long pos = n - bad;
                    int[] v = s.readInts(at(idx, pos), 1);
                    throw new IllegalArgumentException(op + ": index " + v[0] + " at position " + pos + " is outside [0, " + bound + ")");
                }
            } finally {
                s.pool.free(fromEnd);
            }
        }

        @Override
        public void gatherRows(Tensor src, Tensor idx, Tensor dst) {
            int rows = dst.rowCount();
            if (rows == 0) return;
            long rowBytes = 4L * dst.rowWidth();
            int unit = rowBytes % 16 == 0 ? 16 : rowBytes % 8 == 0 ? 8 : 4;
            stream().launch(KernelSource.PERMUTE, "gather_rows").grid(Math.min(rows, 65535 * 8)).block(128)
                    .ptr(at(src)).ptr(at(idx)).ptr(at(dst)).i32(rows).i64(rowBytes).i32(unit).run();
        }

        @Override
        public void scatterAddRows(Tensor src, Tensor idx, Tensor dst) {
            int rows = src.rowCount();
            if (rows == 0) return;
            // float atomics: duplicates are summed in an unspecified order (not the CPU's index order)
            stream().launch(KernelSource.PERMUTE, "scatter_add_rows_f32").grid(Math.min(rows, 65535 * 8)).block(128)
                    .ptr(at(src)).ptr(at(idx)).ptr(at(dst)).i32(rows).i32(src.rowWidth()).run();
        }

        @Override
        public void gatherColumns(Tensor a, Tensor idx, Tensor out) {
            long n = out.numel();
            if (n > 0) op("gather_columns").over(n).ptr(at(a)).ptr(at(idx)).ptr(at(out)).i64(a.rowCount()).i32(a.rowWidth())
                    .i32(idx.rowWidth()).run();
        }

        @Override
        public void scatterAddColumns(Tensor g, Tensor idx, Tensor gradIn) {
            long rows = gradIn.rowCount();
            if (rows > 0) op("scatter_add_columns").over(rows).ptr(at(g)).ptr(at(idx)).ptr(at(gradIn)).i64(rows).i32(gradIn.rowWidth())
                    .i32(idx.rowWidth()).run();
        }

        /**
         * A gather per token ({@code combine_rows_f32}, no atomics, no zero fill) through the inverse map: each
         * entry's row, −1 for an entry of no row, from entryOfRow on the device.
         */
        @Override
        public void weightedCombine(Tensor rows, Tensor weights, Tensor entryOfRow, Tensor out) {
            int tokens = weights.dim(0), k = weights.dim(1), d = out.rowWidth();
            if (tokens == 0 || d == 0) return;
            if (k > 32) throw missing("weightedCombine over more than 32 slots per token (asked for " + k + ")");
            CudaStream s = stream();
            try (DevicePool.Scope scope = s.pool.openScope()) {
                long rowOfEntry = rowOfEntry(s, entryOfRow, (long) tokens * k);
                combineRows(s, at(rows), rowOfEntry, at(weights), at(out), tokens, k, d);
            }
        }

        /** rowOfEntry[entryOfRow[i]] = i, −1 at the other entries, in stream-ordered scratch of the open pool scope. */
        private long rowOfEntry(CudaStream s, Tensor entryOfRow, long entries) {
            long map = s.pool.allocate(4L * entries, "row of each combine entry");
            s.memset(map, (byte) 0xff, 4L * entries);
            long rowCount = entryOfRow.numel();
            if (rowCount > 0) op("inverse_permutation").over(rowCount).ptr(at(entryOfRow)).ptr(map).i64(rowCount).run();
            return map;
        }

        /** One block per row ({@code combine_backward_f32}): the row's gradient and its weight's in one pass. */
        @Override
        public void weightedCombineBackward(Tensor gradOut, Tensor rows, Tensor weights, Tensor entryOfRow, Tensor gradRows,
                                            Tensor gradWeights) {
            CudaStream s = stream();
            if (gradWeights != null && gradWeights.numel() > 0) s.zero(at(gradWeights), 4L * gradWeights.numel()); // entries of no row
            int rowCount = rows.rowCount(), d = rows.rowWidth();
            if (rowCount == 0 || (gradRows == null && gradWeights == null)) return;
            s.launch(KernelSource.PERMUTE, "combine_backward_f32").grid(Math.min(rowCount, 65535 * 8)).block(256)
                    .ptr(at(gradOut)).ptr(at(rows)).ptr(at(entryOfRow)).ptr(at(weights)).ptr(0L)
                    .ptr(gradRows == null ? 0L : at(gradRows)).ptr(gradWeights == null ? 0L : at(gradWeights))
                    .i32(rowCount).i32(weights.dim(1)).i32(d).run();
        }
    }

    // ---------------------------------------------------------------- optimizer

    /** All four tensors float32 with the same number of elements, else an error naming them. */
    static void checkAdamW(Tensor p, Tensor g, Tensor m, Tensor v) {
        CudaReductions.requireF32("adamW", p, g, m, v);
        long n = p.numel();
        if (g.numel() != n || m.numel() != n || v.numel() != n) {
            throw new IllegalArgumentException("cuda adamW: parameter " + p.shapeString() + ", gradient " + g.shapeString() + ", moments "
                    + m.shapeString() + " and " + v.shapeString() + " must have the same number of elements");
        }
    }

    private final class Optimizer implements OptimizerKernels {
        @Override
        public void adamW(Tensor p, Tensor g, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps, float decay, float c1,
                          float c2, float gradScale) {
            checkAdamW(p, g, m, v);
            long n = p.numel();
            if (n > 0) stream().launch(KernelSource.REDUCE, "adamw").over(n).ptr(at(p)).ptr(at(g)).ptr(at(m)).ptr(at(v)).i64(n).f32(lr)
                    .f32(beta1).f32(beta2).f32(eps).f32(decay).f32(c1).f32(c2).f32(gradScale).run();
        }
    }

    // ---------------------------------------------------------------- routing

    /** int32 (T, K) ids and output of the same shape, at least one expert, a capacity ≥ 0, else an error naming the value. */
    static void checkDropOverCapacity(Tensor indices, int numExperts, int capacity, Tensor out) {
        if (indices.dtype() != DType.I32 || out.dtype() != DType.I32 || indices.rank() != 2 || !indices.sameShape(out)) {
            throw new IllegalArgumentException("cuda dropOverCapacity: needs int32 (T, K) ids and an output of their shape, got "
                    + indices.dtype() + " " + indices.shapeString() + " and " + out.dtype() + " " + out.shapeString());
        }
        if (numExperts < 1) throw new IllegalArgumentException("cuda dropOverCapacity: " + numExperts + " experts, expected at least 1");
        if (capacity < 0) throw new IllegalArgumentException("cuda dropOverCapacity: capacity " + capacity + " must be >= 0");
    }

    /** int32 ids and an int32 output of their shape, else an error naming both. */
    static void checkSameIntShape(String op, Tensor indices, Tensor out) {
        if (indices.dtype() != DType.I32 || out.dtype() != DType.I32 || !indices.sameShape(out)) {
            throw new IllegalArgumentException("cuda " + op + ": needs int32 ids and an int32 output of their shape, got "
                    + indices.dtype() + " " + indices.shapeString() + " and " + out.dtype() + " " + out.shapeString());
        }
    }

    // ---------------------------------------------------------------- routing kernels

    private final class Routing implements RoutingKernels {
        @Override
        public void topK(Tensor a, Tensor idx) {
            int n = a.rowCount(), d = a.rowWidth(), k = idx.rowWidth();
            if (d > 1024 || k > 32) throw missing("topK over more than 1024 columns or more than 32 picks");
            if (n > 0) stream().launch(KernelSource.ROUTER, "topk_rows").grid((n + 3) / 4).block(128).ptr(at(a)).i32(n).i32(d).i32(k)
                    .ptr(at(idx)).run();
        }

        @Override
        public void bincount(Tensor values, Tensor counts) {
            CudaStream s = stream();
            s.zero(at(counts), 4L * counts.numel());
            long n = values.numel();
            if (n > 0) op("bincount").over(n).ptr(at(values)).i64(n).i32((int) counts.numel()).ptr(at(counts)).run();
        }

        @Override
        public void stableArgsort(Tensor keys, int bound, Tensor order) {
            group(keys, 1, bound, false, order, null, null);
        }

        @Override
        public void inversePermutation(Tensor perm, Tensor inv) {
            long n = perm.numel();
            if (n > 0) op("inverse_permutation").over(n).ptr(at(perm)).ptr(at(inv)).i64(n).run();
        }

        @Override
        public void groupByExpert(Tensor indices, int numExperts, Tensor entryOfRow, Tensor tokenOfRow, Tensor counts) {
            int k = indices.rank() == 2 ? indices.dim(1) : 1;
            group(indices, k, numExperts, true, entryOfRow, tokenOfRow, counts);
        }

        @Override
        public void firstSlotPerRank(Tensor indices, int expertsPerRank, Tensor out) {
            checkSameIntShape("firstSlotPerRank", indices, out);
            if (expertsPerRank < 1) throw new IllegalArgumentException("cuda firstSlotPerRank: " + expertsPerRank
                    + " experts per rank, expected at least 1");
            int k = indices.rank() == 2 ? indices.dim(1) : 1;
            long tokens = indices.numel() / k;
            if (tokens > 0) op("first_slot_per_rank").over(tokens).ptr(at(indices)).i64(tokens).i32(k).i32(expertsPerRank)
                    .ptr(at(out)).run();
        }

        @Override
        public void localExperts(Tensor indices, int first, int count, Tensor out) {
            checkSameIntShape("localExperts", indices, out);
            long n = indices.numel();
            if (n > 0) op("local_experts").over(n).ptr(at(indices)).i64(n).i32(first).i32(count).ptr(at(out)).run();
        }

        @Override
        public void dropOverCapacity(Tensor indices, int numExperts, int capacity, Tensor out) {
            checkDropOverCapacity(indices, numExperts, capacity, out);
            int t = indices.dim(0), k = indices.dim(1);
            if (indices.numel() == 0) return;
            index.checkIndices(indices, numExperts, "dropOverCapacity");
            stream().launch(KernelSource.REDUCE, "drop_over_capacity").over((long) k * numExperts).ptr(at(indices)).i32(t).i32(k)
                    .i32(numExperts).i32(capacity).ptr(at(out)).run();
        }

        @Override
        public void limitToTopGroups(Tensor scores, int groups, int topKGroups, Tensor out) {
            int n = scores.rowCount(), d = scores.rowWidth();
            if (groups < 1 || d % groups != 0 || d / groups < 2 || topKGroups < 1 || topKGroups > groups) {
                throw new IllegalArgumentException("cuda limitToTopGroups: " + d + " columns in " + groups + " groups, keeping "
                        + topKGroups + ": expected groups dividing the columns into groups of at least 2, and 1 <= kept <= groups");
            }
            if (groups > 64) throw missing("limitToTopGroups over more than 64 groups (asked for " + groups + ")");
            if (n > 0) stream().launch(KernelSource.ROUTER, "limit_to_top_groups").grid((n + 127) / 128).block(128).ptr(at(scores))
                    .i32(n).i32(d).i32(groups).i32(topKGroups).ptr(at(out)).run();
        }

        /**
         * Stable grouping of the flat keys by value through the permutation kernels; {@code droppedLast}: keys
         * of -1 go after every group, in their order.
         */
        private void group(Tensor keys, int k, int bound, boolean droppedLast, Tensor rowEntry, Tensor rowToken, Tensor counts) {
            if (keys.dtype() != DType.I32) throw new IllegalArgumentException("grouping needs int32 keys, got " + keys.dtype());
            int bins = bound + (droppedLast ? 1 : 0);
            if (bins > 1024) throw missing("grouping by more than 1024 keys");
            int n = Math.toIntExact(keys.numel());
            CudaStream s = stream();
            if (n == 0) {
                if (counts != null) s.zero(at(counts), 4L * bound);
                return;
            }
            int blocks = (n + 255) / 256;
            DevicePool pool = s.pool;
            try (DevicePool.Scope scope = pool.openScope()) {
                long blockCounts = pool.allocate(4L * blocks * bins, "group block histograms");
                long blockBase = pool.allocate(4L * blocks * bins, "group block offsets");
                long binCounts = pool.allocate(4L * bins, "group counts");
                long offsets = pool.allocate(4L * (bins + 1), "group offsets");
                long scale = pool.allocate(4L * bins, "unused scale");
                long entryRow = pool.allocate(4L * n, "entry rows");
                long tokens = rowToken != null ? at(rowToken) : pool.allocate(4L * n, "row tokens");
                int dropped = droppedLast ? bound : -1;
                s.launch(KernelSource.PERMUTE, "perm_block_histogram").grid(blocks).block(256).shared(4 * bins)
                        .ptr(at(keys)).i32(n).i32(bins).i32(dropped).ptr(blockCounts).run();
                s.launch(KernelSource.PERMUTE, "perm_scan").grid(1).block(1024)
                        .ptr(blockCounts).i32(blocks).i32(bins).ptr(binCounts).ptr(offsets).ptr(blockBase).ptr(scale).run();
                s.launch(KernelSource.PERMUTE, "perm_scatter").grid(blocks).block(256).ptr(at(keys)).i32(n).i32(k).i32(bins).i32(dropped)
                        .ptr(blockBase).ptr(offsets).ptr(0L).ptr(at(rowEntry)).ptr(tokens).ptr(entryRow).run();
                if (counts != null) s.copyOnDevice(at(counts), binCounts, 4L * bound);
            }
        }
    }
}
