package moe4j.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.function.BiConsumer;
import moe4j.kernels.DeviceBackend;
import moe4j.kernels.ExecutionContext;
import moe4j.kernels.Kernels;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The cuda device behind the kernel interfaces: every kernel on the GPU against the same kernel on the
 * CPU, same inputs, f32 results within 1e-5 norm-wise (forward and backward), integer results equal,
 * the deterministic ones the same bits on a second run. Skipped without a GPU.
 */
@Tag("gpu")
class CudaDeviceKernelsTest {
    static final Device GPU = Device.cuda(0);
    static Kernels cpu;
    static Kernels gpu;
    static Rng rng = new Rng(77);

    @BeforeAll
    static void needsGpu() {
        assumeTrue(CudaDriver.available(), "no CUDA GPU here");
        DeviceBackend.find("cuda");
        cpu = Kernels.of(Device.CPU);
        gpu = Kernels.of(GPU);
    }

    static Tensor rand(int... shape) {
        return Tensor.randn(rng, 1.0, shape);
    }

    static Tensor positive(int... shape) {
        Tensor t = rand(shape);
        for (long i = 0; i < t.numel(); i++) t.set(i, 0.5f + Math.abs(t.get(i)));
        return t;
    }

    static void close(String what, Tensor expected, Tensor actualOnGpu) {
        closeWithin(what, expected, actualOnGpu, 1e-5, 0);
    }

    /** Runs {@code op(kernels, outputs)} on both devices with copies of the same inputs and compares outputs. */
    static void same(String what, Tensor[] inputs, int[][] outShapes, BiConsumer<Kernels, Tensor[]> op) {
        Tensor[] c = withOutputs(inputs, outShapes, Device.CPU);
        Tensor[] g = withOutputs(onGpu(inputs), outShapes, GPU);
        op.accept(cpu, c);
        op.accept(gpu, g);
        for (int j = 0; j < outShapes.length; j++) close(what + " output " + j, c[inputs.length + j], g[inputs.length + j]);
    }

    static Tensor[] onGpu(Tensor[] inputs) {
        Tensor[] out = new Tensor[inputs.length];
        for (int i = 0; i < inputs.length; i++) out[i] = inputs[i].to(GPU);
        return out;
    }

    /** {@code inputs} followed by zero float32 outputs of {@code outShapes} on {@code device}. */
    static Tensor[] withOutputs(Tensor[] inputs, int[][] outShapes, Device device) {
        Tensor[] all = java.util.Arrays.copyOf(inputs, inputs.length + outShapes.length);
        for (int j = 0; j < outShapes.length; j++) all[inputs.length + j] = Tensor.zeros(device, DType.F32, outShapes[j]);
        return all;
    }

    @Test
    void tensorsTravelToTheGpuAndBackUnchanged() {
        Tensor x = rand(37, 29);
        assertArrayEquals(x.toFloatArray(), x.to(GPU).to(Device.CPU).toFloatArray());
        Tensor ids = Tensor.ofInts(new int[] {3, -1, 7, 1 << 30}, 4);
        assertArrayEquals(ids.toIntArray(), ids.to(GPU).to(Device.CPU).toIntArray());
        assertArrayEquals(new float[12], Tensor.zeros(GPU, DType.F32, 3, 4).to(Device.CPU).toFloatArray());
        assertThrows(IllegalStateException.class, () -> x.to(GPU).get(0));
    }

    @Test
    void convertBetweenF32AndBf16IsTheCpusBits() {
        Tensor x = rand(33, 65);
        float[] special = {0f, -0f, Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, Float.MAX_VALUE, Float.MIN_VALUE,
            1f + 0x1p-8f, 1f + 0x1p-8f + 0x1p-9f, -(1f + 0x1p-7f + 0x1p-8f), 0x1p-130f};
        for (int i = 0; i < special.length; i++) x.set(i, special[i]);
        Tensor cpuBf16 = Tensor.zeros(DType.BF16, 33, 65);
        cpu.elementwise().convert(x, cpuBf16);
        Tensor gpuBf16 = Tensor.zeros(GPU, DType.BF16, 33, 65);
        gpu.elementwise().convert(x.to(GPU), gpuBf16);
        Tensor back = Tensor.zeros(GPU, DType.F32, 33, 65);
        gpu.elementwise().convert(gpuBf16, back);
        Tensor cpuBack = Tensor.zeros(33, 65);
        cpu.elementwise().convert(cpuBf16, cpuBack);
        float[] want = cpuBack.toFloatArray();
        float[] got = back.to(Device.CPU).toFloatArray();
        for (int i = 0; i < want.length; i++) {
            assertEquals(Float.floatToIntBits(want[i]), Float.floatToIntBits(got[i]), "element " + i + " from " + x.get(i));
        }
        // the bf16 bits themselves, read back through the host conversion
        assertArrayEquals(cpuBf16.to(DType.F32).toFloatArray(), gpuBf16.to(Device.CPU).to(DType.F32).toFloatArray());
        // same type: a copy; other pairs are refused by name
        Tensor copy = Tensor.zeros(GPU, DType.F32, 33, 65);
        gpu.elementwise().convert(x.to(GPU), copy);
        assertArrayEquals(x.toFloatArray(), copy.to(Device.CPU).toFloatArray());
        var e = assertThrows(UnsupportedOperationException.class,
                () -> gpu.elementwise().convert(Tensor.zeros(GPU, DType.I32, 4), Tensor.zeros(GPU, DType.F32, 4)));
        assertTrue(e.getMessage().contains("I32"), e.getMessage());
    }

    /** One product case: its name, its inputs (the first two are the product's matrix operands), output shapes, the op. */
    interface ProductCheck {
        void check(String what, Tensor[] inputs, int[][] outShapes, BiConsumer<Kernels, Tensor[]> op);
    }

    /**
     * C = 0.7·op(A)·op(B) + 0.3·C0 for the four transpositions, A stored with {@code pad} more columns than it
     * uses and read from element {@code aOff}.
     */
    static void gemmCases(String prefix, int m, int n, int k, int pad, int aOff, ProductCheck check) {
        for (boolean ta : new boolean[] {false, true}) {
            for (boolean tb : new boolean[] {false, true}) {
                Tensor a = rand(ta ? k : m, ta ? m + pad : k + pad);
                Tensor b = rand(tb ? n : k, tb ? k : n);
                Tensor c0 = rand(m, n);
                int lda = ta ? m + pad : k + pad, ldb = tb ? k : n;
                check.check(prefix + "gemm ta=" + ta + " tb=" + tb, new Tensor[] {a, b, c0}, new int[][] {{m, n}}, (kk, t) -> {
                    kk.elementwise().scale(1f, t[2], t[3]);
                    kk.matmul().gemm(ta, tb, m, n, k, 0.7f, t[0], aOff, lda, t[1], 0, ldb, 0.3f, t[3], 0, n);
                });
            }
        }
    }

    /**
     * The grouped product over four groups of rows split at {@code offsets} (weights stored (k, n) and
     * transposed), then its weight gradient into dW0 with {@code wgradBeta} (0.5 accumulates; 0 overwrites,
     * which in bf16 lets small groups run padded, one batched product per bucket).
     */
    static void groupedCases(String prefix, int k, int n, int[] offsets, float wgradBeta, ProductCheck check) {
        int rows = offsets[offsets.length - 1];
        Tensor x = rand(rows, k);
        Tensor w = rand(4, k * n);
        Tensor dy = rand(rows, n);
        long[] wOff = {0, k * n, 2L * k * n, 3L * k * n};
        for (boolean transW : new boolean[] {false, true}) {
            check.check(prefix + "groupedGemm transW=" + transW, new Tensor[] {x, w}, new int[][] {{rows, n}}, (kk, t) ->
                    kk.matmul().groupedGemm(offsets, k, n, t[0], new Tensor[] {t[1], t[1], t[1], t[1]}, wOff, transW, t[2], 0f));
        }
        Tensor dw0 = rand(4, k * n);
        check.check(prefix + "groupedWeightGrad beta=" + wgradBeta, new Tensor[] {x, dy, dw0}, new int[][] {{4, k * n}}, (kk, t) -> {
            kk.elementwise().scale(1f, t[2], t[3]);
            kk.matmul().groupedWeightGrad(offsets, k, n, t[0], t[1], new Tensor[] {t[3], t[3], t[3], t[3]}, wOff, wgradBeta);
        });
    }

    @Test
    void kernelTimingNamesEveryCallOnceAndFitsItsSpan() {
        Tensor a = rand(64, 32).to(GPU), b = rand(32, 48).to(GPU), c = Tensor.zeros(GPU, DType.F32, 64, 48);
        Tensor x = rand(1000).to(GPU), y = Tensor.zeros(GPU, DType.F32, 1000);
        gpu.startKernelTiming();
        for (int i = 0; i < 3; i++) gpu.matmul().gemm(false, false, 64, 48, 32, 1f, a, 0, 32, b, 0, 48, 0f, c, 0, 48);
        gpu.elementwise().convert(x, y); // a same-type convert is a device-to-device copy
        moe4j.kernels.KernelTiming t = gpu.stopKernelTiming();
        var byName = new java.util.HashMap<String, moe4j.kernels.KernelTiming.Entry>();
        t.kernels().forEach(e -> byName.put(e.name(), e));
        assertEquals(java.util.Set.of("cublas gemm f32 NN 64x48x32", "copy device to device <64K"), byName.keySet(), t.toString());
        assertEquals(3, byName.get("cublas gemm f32 NN 64x48x32").calls());
        assertEquals(1, byName.get("copy device to device <64K").calls());
        assertTrue(t.busySeconds() > 0 && t.busySeconds() <= t.spanSeconds() * (1 + 1e-6), t.toString());
        assertEquals(null, gpu.stopKernelTiming(), "timing stopped: nothing more is timed");
    }

    @Test
    void parameterCopiesAreConvertedOnceInsideAReuseScopeAndAfreshAfterIt() {
        Tensor x = rand(64, 32).to(GPU);
        Tensor w = rand(32, 48).to(GPU).requiresGrad(true); // a parameter: a leaf that requires a gradient
        Tensor c1 = Tensor.zeros(GPU, DType.F32, 64, 48), c2 = Tensor.zeros(GPU, DType.F32, 64, 48), c3 = Tensor.zeros(GPU, DType.F32, 64, 48);
        moe4j.kernels.KernelTiming t;
        try (var ctx = ExecutionContext.enter(GPU, 1, DType.BF16)) {
            gpu.startKernelTiming();
            try (var reuse = gpu.matmul().reuseCopies(moe4j.kernels.MatmulKernels::isParameter)) {
                gpu.matmul().gemm(false, false, 64, 48, 32, 1f, x, 0, 32, w, 0, 48, 0f, c1, 0, 48);
                gpu.matmul().gemm(false, false, 64, 48, 32, 1f, x, 0, 32, w, 0, 48, 0f, c2, 0, 48);
            }
            t = gpu.stopKernelTiming();
            gpu.elementwise().scale(2f, w, w); // the parameter changes between scopes (an optimizer step)
            try (var reuse = gpu.matmul().reuseCopies(moe4j.kernels.MatmulKernels::isParameter)) {
                gpu.matmul().gemm(false, false, 64, 48, 32, 1f, x, 0, 32, w, 0, 48, 0f, c3, 0, 48);
            }
        }
        int casts = t.kernels().stream().filter(e -> e.name().equals("cast_f32_bf16")).mapToInt(moe4j.kernels.KernelTiming.Entry::calls).sum();
        assertEquals(3, casts, "x twice, the parameter once: " + t);
        float[] first = c1.to(Device.CPU).toFloatArray();
        assertArrayEquals(first, c2.to(Device.CPU).toFloatArray());
        float[] doubled = c3.to(Device.CPU).toFloatArray();
        for (int i = 0; i < first.length; i++) assertEquals(2 * first[i], doubled[i], "a new scope converts the changed parameter: " + i);
    }

    @Test
    void gemmAllTranspositionsOffsetsAndBeta() {
        gemmCases("", 19, 23, 31, 2, 1, CudaDeviceKernelsTest::same);
    }

    @Test
    void groupedProductsWithEmptyGroups() {
        groupedCases("", 12, 10, new int[] {0, 5, 5, 17, 18}, 0.5f, CudaDeviceKernelsTest::same);
    }

    /**
     * Mixed precision: {@code op} on the GPU in a bf16-products context with the raw float32 inputs equals
     * the CPU's float32 op on inputs whose matrix operands (the first two) were rounded to bf16 first
     * (the products accumulate in fp32 either way, so only the summation order differs), and differs
     * from the GPU's own float32 result by the rounding (so the bf16 path did run).
     */
    static void sameWithBf16Products(String what, Tensor[] inputs, int[][] outShapes, BiConsumer<Kernels, Tensor[]> op) {
        Tensor[] roundedInputs = inputs.clone();
        for (int i = 0; i < 2; i++) roundedInputs[i] = inputs[i].to(DType.BF16).to(DType.F32);
        Tensor[] c = withOutputs(roundedInputs, outShapes, Device.CPU);
        Tensor[] g = withOutputs(onGpu(inputs), outShapes, GPU);
        Tensor[] g32 = withOutputs(onGpu(inputs), outShapes, GPU);
        op.accept(cpu, c);
        try (var ctx = moe4j.kernels.ExecutionContext.enter(GPU, 1, DType.BF16)) {
            op.accept(gpu, g);
        }
        op.accept(gpu, g32);
        for (int j = 0; j < outShapes.length; j++) {
            Tensor out = g[inputs.length + j];
            close(what + " output " + j, c[inputs.length + j], out);
            double rel = moe4j.autograd.GradCheck.relativeError(out.to(Device.CPU).toDoubleArray(),
                    g32[inputs.length + j].to(Device.CPU).toDoubleArray());
            assertTrue(rel > 1e-4 && rel < 2e-2, what + ": bf16 against f32 products differ by " + rel + ", expected bf16 rounding");
        }
    }

    @Test
    void bf16ProductsRoundTheirOperandsAndAccumulateInF32() {
        gemmCases("bf16 ", 37, 45, 64, 3, 2, CudaDeviceKernelsTest::sameWithBf16Products);
        groupedCases("bf16 ", 48, 40, new int[] {3, 20, 20, 51, 60}, 0.5f, CudaDeviceKernelsTest::sameWithBf16Products);
        // small groups of unequal sizes (200, 70, 64, 1 rows from row 5): padded into buckets of 256, 128 and
        // 64 rows, the first two a single product each, the last one batched product of two groups
        groupedCases("bf16 bucketed ", 48, 40, new int[] {5, 205, 275, 339, 340}, 0f, CudaDeviceKernelsTest::sameWithBf16Products);
        groupedCases("bf16 padded ", 48, 40, new int[] {0, 60, 120, 170, 230}, 0f, CudaDeviceKernelsTest::sameWithBf16Products);
    }

    @Test
    void elementwiseKernels() {
        int[] s = {33, 17};
        Tensor a = rand(s), b = rand(s), g = rand(s), p = positive(s);
        Tensor rowsV = positive(33), colsV = rand(17), scalar = rand(1);
        int[][] one = {s};
        same("addScaled", new Tensor[] {a, b}, one, (k, t) -> k.elementwise().addScaled(t[0], -0.3f, t[1], t[2]));
        same("axpy", new Tensor[] {a, b}, one, (k, t) -> { k.elementwise().scale(1f, t[1], t[2]); k.elementwise().axpy(0.25f, t[0], t[2]); });
        same("mul", new Tensor[] {a, b}, one, (k, t) -> k.elementwise().mul(t[0], t[1], t[2]));
        same("scale", new Tensor[] {a}, one, (k, t) -> k.elementwise().scale(1.5f, t[0], t[1]));
        same("addScalar", new Tensor[] {a}, one, (k, t) -> k.elementwise().addScalar(t[0], 1e-3, t[1]));
        same("fillWith", new Tensor[] {scalar}, one, (k, t) -> k.elementwise().fillWith(t[0], t[1]));
        same("silu", new Tensor[] {a}, one, (k, t) -> k.elementwise().silu(t[0], t[1]));
        same("siluBackward", new Tensor[] {a, g}, one, (k, t) -> k.elementwise().siluBackward(t[0], t[1], t[2]));
        same("swiglu", new Tensor[] {a, b}, one, (k, t) -> k.elementwise().swiglu(t[0], t[1], t[2]));
        same("swigluBackward", new Tensor[] {a, b, g}, new int[][] {s, s}, (k, t) -> k.elementwise().swigluBackward(t[0], t[1], t[2], t[3], t[4]));
        same("gelu", new Tensor[] {a}, one, (k, t) -> k.elementwise().gelu(t[0], t[1]));
        same("geluBackward", new Tensor[] {a, g}, one, (k, t) -> k.elementwise().geluBackward(t[0], t[1], t[2]));
        same("relu", new Tensor[] {a}, one, (k, t) -> k.elementwise().relu(t[0], t[1]));
        same("reluBackward", new Tensor[] {a, g}, one, (k, t) -> k.elementwise().reluBackward(t[0], t[1], t[2]));
        same("sigmoid", new Tensor[] {a}, one, (k, t) -> k.elementwise().sigmoid(t[0], t[1]));
        same("sigmoidBackward", new Tensor[] {p, g}, one, (k, t) -> k.elementwise().sigmoidBackward(t[0], t[1], t[2]));
        same("reciprocal", new Tensor[] {p}, one, (k, t) -> k.elementwise().reciprocal(t[0], t[1]));
        same("reciprocalBackward", new Tensor[] {p, g}, one, (k, t) -> k.elementwise().reciprocalBackward(t[0], t[1], t[2]));
        same("mulRows", new Tensor[] {a, rowsV}, one, (k, t) -> k.elementwise().mulRows(t[0], t[1], t[2]));
        same("divRows", new Tensor[] {a, rowsV}, one, (k, t) -> k.elementwise().divRows(t[0], t[1], t[2]));
        same("divRowsDivisorGrad", new Tensor[] {g, a, rowsV}, new int[][] {{33}}, (k, t) -> k.elementwise().divRowsDivisorGrad(t[0], t[1], t[2], t[3]));
        same("addColumns", new Tensor[] {a, colsV}, one, (k, t) -> k.elementwise().addColumns(t[0], t[1], t[2]));
        same("mulColumns", new Tensor[] {a, colsV}, one, (k, t) -> k.elementwise().mulColumns(t[0], t[1], t[2]));
        same("broadcastRows", new Tensor[] {rowsV}, one, (k, t) -> k.elementwise().broadcastRows(t[0], t[1]));
        same("broadcastColumns", new Tensor[] {colsV}, one, (k, t) -> k.elementwise().broadcastColumns(t[0], t[1]));
    }

    @Test
    void indexingKernels() {
        Tensor src = rand(20, 9);
        Tensor idx = Tensor.ofInts(new int[] {3, 0, 19, 3, 7, 7, 7, 1}, 8);
        same("gatherRows", new Tensor[] {src, idx}, new int[][] {{8, 9}}, (k, t) -> k.indexing().gatherRows(t[0], t[1], t[2]));
        Tensor rows = rand(8, 9);
        same("scatterAddRows", new Tensor[] {rows, idx}, new int[][] {{20, 9}}, (k, t) -> k.indexing().scatterAddRows(t[0], t[1], t[2]));
        Tensor a = rand(6, 11);
        Tensor cols = Tensor.ofInts(new int[] {0, 10, 5, 5, 1, 2, 3, 4, 9, 8, 7, 6}, 6, 2);
        same("gatherColumns", new Tensor[] {a, cols}, new int[][] {{6, 2}}, (k, t) -> k.indexing().gatherColumns(t[0], t[1], t[2]));
        Tensor g = rand(6, 2);
        same("scatterAddColumns", new Tensor[] {g, cols}, new int[][] {{6, 11}}, (k, t) -> k.indexing().scatterAddColumns(t[0], t[1], t[2]));
        gpu.indexing().checkIndices(idx.to(GPU), 20, "test");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> gpu.indexing().checkIndices(idx.to(GPU), 19, "embedding"));
        assertTrue(e.getMessage().contains("embedding") && e.getMessage().contains("19") && e.getMessage().contains("position 2"), e.getMessage());
    }

    /**
     * The weighted combine gathers per token, rows in ascending order, products rounded before the sum: the
     * CPU's bits, run after run, every element written (outputs start as NaN). In its backward the row
     * gradients (one product each) are the CPU's bits too and the weight gradients (dot products in another
     * order) within 1e-5, exactly 0 at dropped entries; either gradient alone is the same.
     */
    @Test
    void weightedCombineIsTheCpusBits() {
        // T, K, experts, D: K = 1; K = 8 with rows wider than a block; the largest K
        for (int[] shape : new int[][] {{50, 1, 7, 33}, {300, 8, 64, 257}, {40, 32, 40, 64}}) {
            int t = shape[0], k = shape[1], experts = shape[2], d = shape[3];
            int[] ids = new int[t * k];
            for (int i = 0; i < ids.length; i++) ids[i] = i / k == 3 || rng.nextDouble() < 0.15 ? -1 : (int) (rng.nextDouble() * experts);
            Tensor entries = Tensor.zeros(DType.I32, t * k), tokens = Tensor.zeros(DType.I32, t * k), counts = Tensor.zeros(DType.I32, experts);
            cpu.routing().groupByExpert(Tensor.ofInts(ids, t, k), experts, entries, tokens, counts);
            int kept = 0;
            for (int c : counts.toIntArray()) kept += c;
            Tensor entryOfRow = entries.rows(0, kept).copy(); // expert order: a token's rows are not in slot order
            Tensor rows = rand(kept, d), weights = rand(t, k), gradOut = rand(t, d);
            Tensor gRows = rows.to(GPU), gWeights = weights.to(GPU), gEntries = entryOfRow.to(GPU), gGradOut = gradOut.to(GPU);
            String what = "weightedCombine T=" + t + " K=" + k + " D=" + d;

            Tensor cpuOut = Tensor.zeros(t, d);
            cpu.indexing().weightedCombine(rows, weights, entryOfRow, cpuOut);
            for (int run = 0; run < 2; run++) {
                Tensor gpuOut = Tensor.full(Float.NaN, t, d).to(GPU);
                gpu.indexing().weightedCombine(gRows, gWeights, gEntries, gpuOut);
                sameBits(what + " run " + run, cpuOut, gpuOut);
            }

            Tensor cpuGradRows = Tensor.zeros(kept, d), cpuGradWeights = Tensor.zeros(t, k);
            cpu.indexing().weightedCombineBackward(gradOut, rows, weights, entryOfRow, cpuGradRows, cpuGradWeights);
            Tensor gpuGradRows = Tensor.full(Float.NaN, kept, d).to(GPU), gpuGradWeights = Tensor.full(Float.NaN, t, k).to(GPU);
            gpu.indexing().weightedCombineBackward(gGradOut, gRows, gWeights, gEntries, gpuGradRows, gpuGradWeights);
            sameBits(what + " gradient of the rows", cpuGradRows, gpuGradRows);
            close(what + " gradient of the weights", cpuGradWeights, gpuGradWeights);
            float[] gw = gpuGradWeights.to(Device.CPU).toFloatArray();
            for (int e = 0; e < ids.length; e++) if (ids[e] < 0) assertEquals(0f, gw[e], what + ": dropped entry " + e);

            Tensor onlyRows = Tensor.full(Float.NaN, kept, d).to(GPU);
            gpu.indexing().weightedCombineBackward(gGradOut, gRows, gWeights, gEntries, onlyRows, null);
            sameBits(what + " gradient of the rows alone", cpuGradRows, onlyRows);
            Tensor onlyWeights = Tensor.full(Float.NaN, t, k).to(GPU);
            gpu.indexing().weightedCombineBackward(gGradOut, gRows, gWeights, gEntries, null, onlyWeights);
            assertArrayEquals(gw, onlyWeights.to(Device.CPU).toFloatArray(), what + " gradient of the weights alone");
        }
    }

    static void sameBits(String what, Tensor cpuOut, Tensor gpuOut) {
        float[] want = cpuOut.toFloatArray();
        float[] got = gpuOut.to(Device.CPU).toFloatArray();
        assertEquals(want.length, got.length, what + ": element count");
        for (int i = 0; i < want.length; i++) {
            assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[i]), what + ": element " + i + " (" + want[i] + " vs " + got[i] + ")");
        }
    }

    static void sameInts(String what, Tensor cpuOut, Tensor gpuOut) {
        assertArrayEquals(cpuOut.toIntArray(), gpuOut.to(Device.CPU).toIntArray(), what);
    }

    @Test
    void routingKernels() {
        Tensor scores = rand(50, 40);
        Tensor ci = Tensor.zeros(Device.CPU, DType.I32, 50, 6);
        Tensor gi = Tensor.zeros(GPU, DType.I32, 50, 6);
        cpu.routing().topK(scores, ci);
        gpu.routing().topK(scores.to(GPU), gi);
        sameInts("topK", ci, gi);

        int[] ids = new int[300];
        for (int i = 0; i < ids.length; i++) ids[i] = (int) (rng.nextDouble() * 13) - (i % 17 == 0 ? 14 : 0);
        for (int i = 0; i < ids.length; i++) if (ids[i] < 0) ids[i] = -1;
        Tensor indices = Tensor.ofInts(ids, 100, 3);
        Tensor ce = Tensor.zeros(Device.CPU, DType.I32, 300), ct = Tensor.zeros(Device.CPU, DType.I32, 300), cc = Tensor.zeros(Device.CPU, DType.I32, 13);
        Tensor ge = Tensor.zeros(GPU, DType.I32, 300), gt = Tensor.zeros(GPU, DType.I32, 300), gc = Tensor.zeros(GPU, DType.I32, 13);
        cpu.routing().groupByExpert(indices, 13, ce, ct, cc);
        gpu.routing().groupByExpert(indices.to(GPU), 13, ge, gt, gc);
        sameInts("groupByExpert entries", ce, ge);
        sameInts("groupByExpert tokens", ct, gt);
        sameInts("groupByExpert counts", cc, gc);

        int[] keys = new int[500];
        for (int i = 0; i < keys.length; i++) keys[i] = (int) (rng.nextDouble() * 9);
        Tensor k = Tensor.ofInts(keys, 500);
        Tensor co = Tensor.zeros(Device.CPU, DType.I32, 500), go = Tensor.zeros(GPU, DType.I32, 500);
        cpu.routing().stableArgsort(k, 9, co);
        gpu.routing().stableArgsort(k.to(GPU), 9, go);
        sameInts("stableArgsort", co, go);
        Tensor cinv = Tensor.zeros(Device.CPU, DType.I32, 500), ginv = Tensor.zeros(GPU, DType.I32, 500);
        cpu.routing().inversePermutation(co, cinv);
        gpu.routing().inversePermutation(go, ginv);
        sameInts("inversePermutation", cinv, ginv);
        Tensor cb = Tensor.zeros(Device.CPU, DType.I32, 9), gb = Tensor.zeros(GPU, DType.I32, 9);
        cpu.routing().bincount(k, cb);
        gpu.routing().bincount(k.to(GPU), gb);
        sameInts("bincount", cb, gb);

        // group-limited routing (64 experts in 8 groups, 3 kept): the same columns kept, the same values, bit for bit
        Tensor wide = rand(70, 64);
        for (int c = 0; c < 8; c++) wide.set(8 + c, wide.get(c)); // row 0: groups 0 and 1 tie (the lower one wins)
        Tensor cl = Tensor.zeros(70, 64);
        Tensor gl = Tensor.zeros(GPU, DType.F32, 70, 64);
        cpu.routing().limitToTopGroups(wide, 8, 3, cl);
        gpu.routing().limitToTopGroups(wide.to(GPU), 8, 3, gl);
        assertArrayEquals(cl.toFloatArray(), gl.to(Device.CPU).toFloatArray(), "limitToTopGroups");
        int kept = 0;
        for (float v : cl.toFloatArray()) if (v != Float.NEGATIVE_INFINITY) kept++;
        assertEquals(70 * 3 * 8, kept, "three groups of eight kept per row");
    }

    @Test
    void wholeTensorSums() {
        for (int n : new int[] {1, 255, 1000, 1_000_003}) {
            Tensor a = rand(n);
            same("sum n=" + n, new Tensor[] {a}, new int[][] {{1}}, (k, t) -> k.reductions().sum(t[0], t[1]));
            double expected = cpu.reductions().sumOfSquares(a);
            double actual = gpu.reductions().sumOfSquares(a.to(GPU));
            assertTrue(Math.abs(actual - expected) <= 1e-10 * expected, "sumOfSquares n=" + n + ": " + actual + " vs " + expected);
        }
        Tensor big = rand(1_000_003).to(GPU);
        assertEquals(gpu.reductions().sumOfSquares(big), gpu.reductions().sumOfSquares(big), "same bits on every run");
    }

    @Test
    void firstNonFiniteFindsTheSmallestPosition() {
        Tensor a = rand(300_001);
        assertEquals(-1, gpu.reductions().firstNonFinite(a.to(GPU)));
        a.set(299_999, Float.NaN);
        assertEquals(299_999, gpu.reductions().firstNonFinite(a.to(GPU)));
        a.set(70_000, Float.NEGATIVE_INFINITY);
        a.set(123_456, Float.POSITIVE_INFINITY);
        assertEquals(cpu.reductions().firstNonFinite(a), gpu.reductions().firstNonFinite(a.to(GPU)));
        assertEquals(70_000, gpu.reductions().firstNonFinite(a.to(GPU)));
    }

    @Test
    void rowAndColumnReductions() {
        for (int[] s : new int[][] {{33, 17}, {5, 1000}, {700, 3}}) {
            Tensor a = rand(s), b = rand(s);
            same("rowSums " + s[1], new Tensor[] {a}, new int[][] {{s[0]}}, (k, t) -> k.reductions().rowSums(t[0], t[1]));
            same("columnSums " + s[1], new Tensor[] {a}, new int[][] {{s[1]}}, (k, t) -> k.reductions().columnSums(t[0], t[1]));
            same("columnDots " + s[1], new Tensor[] {a, b}, new int[][] {{s[1]}}, (k, t) -> k.reductions().columnDots(t[0], t[1], t[2]));
            same("rowDots " + s[1], new Tensor[] {a, b}, new int[][] {{s[0]}}, (k, t) -> k.reductions().rowDots(t[0], t[1], t[2]));
        }
    }

    @Test
    void softmaxFamilyForwardAndBackward() {
        for (int[] s : new int[][] {{3, 11, 17}, {6, 1000}, {40, 1}}) {
            Tensor a = rand(s), g = rand(s);
            int[] rowsShape = java.util.Arrays.copyOf(s, s.length - 1);
            Tensor gRows = rand(rowsShape);
            String d = " D=" + s[s.length - 1];
            same("softmax" + d, new Tensor[] {a}, new int[][] {s}, (k, t) -> k.reductions().softmax(t[0], t[1]));
            same("softmaxBackward" + d, new Tensor[] {a, g}, new int[][] {s, s}, (k, t) -> {
                k.reductions().softmax(t[0], t[2]);
                k.reductions().softmaxBackward(t[2], t[1], t[3]);
            });
            same("logSoftmax" + d, new Tensor[] {a}, new int[][] {s}, (k, t) -> k.reductions().logSoftmax(t[0], t[1]));
            same("logSoftmaxBackward" + d, new Tensor[] {a, g}, new int[][] {s, s}, (k, t) -> {
                k.reductions().logSoftmax(t[0], t[2]);
                k.reductions().logSoftmaxBackward(t[2], t[1], t[3]);
            });
            same("logSumExp" + d, new Tensor[] {a}, new int[][] {rowsShape}, (k, t) -> k.reductions().logSumExp(t[0], t[1]));
            same("logSumExpBackward" + d, new Tensor[] {a, gRows}, new int[][] {rowsShape, s}, (k, t) -> {
                k.reductions().logSumExp(t[0], t[2]);
                k.reductions().logSumExpBackward(t[0], t[2], t[1], t[3]);
            });
        }
        Tensor minusInf = Tensor.full(Float.NEGATIVE_INFINITY, 2, 5);
        Tensor out = Tensor.zeros(GPU, DType.F32, 2);
        gpu.reductions().logSumExp(minusInf.to(GPU), out);
        assertArrayEquals(new float[] {Float.NEGATIVE_INFINITY, Float.NEGATIVE_INFINITY}, out.to(Device.CPU).toFloatArray());
    }

    @Test
    void rmsNormForwardAndBackward() {
        for (int[] s : new int[][] {{2, 7, 64}, {9, 1000}, {300, 5}}) {
            int d = s[s.length - 1];
            int n = (int) (java.util.Arrays.stream(s).asLongStream().reduce(1, (x, y) -> x * y) / d);
            Tensor x = rand(s), w = positive(d), g = rand(s);
            same("rmsNorm D=" + d, new Tensor[] {x, w}, new int[][] {s, {n}}, (k, t) -> k.reductions().rmsNorm(t[0], t[1], 1e-6, t[2], t[3]));
            same("rmsNormBackward D=" + d, new Tensor[] {x, w, g}, new int[][] {s, {n}, s, {d}}, (k, t) -> {
                k.reductions().rmsNorm(t[0], t[1], 1e-5, t[3], t[4]);
                k.reductions().rmsNormBackward(t[0], t[1], t[4], t[2], t[5], t[6]);
            });
        }
    }

    @Test
    void crossEntropyForwardAndBackward() {
        int n = 37, v = 1000;
        Tensor logits = rand(n, v);
        for (long i = 0; i < logits.numel(); i++) logits.set(i, 3 * logits.get(i));
        int[] ids = new int[n];
        for (int i = 0; i < n; i++) ids[i] = i % 5 == 2 ? -1 : (int) (rng.nextDouble() * v);
        Tensor targets = Tensor.ofInts(ids, n);
        Tensor g = Tensor.full(0.7f, 1);
        same("crossEntropy", new Tensor[] {logits, targets}, new int[][] {{1}}, (k, t) -> k.reductions().crossEntropy(t[0], t[1], t[2]));
        same("crossEntropyBackward", new Tensor[] {logits, targets, g}, new int[][] {{n, v}}, (k, t) ->
                k.reductions().crossEntropyBackward(t[0], t[1], t[2], t[3]));
        Tensor ignored = Tensor.ofInts(new int[] {-1, -1, -1}, 3);
        same("crossEntropy all ignored", new Tensor[] {rand(3, 8), ignored, g}, new int[][] {{1}, {3, 8}}, (k, t) -> {
            k.reductions().crossEntropy(t[0], t[1], t[3]);
            k.reductions().crossEntropyBackward(t[0], t[1], t[2], t[4]);
        });
        ids[11] = v;
        ids[20] = -7;
        Tensor bad = Tensor.ofInts(ids, n).to(GPU);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> gpu.reductions().crossEntropy(logits.to(GPU), bad, Tensor.zeros(GPU, DType.F32, 1)));
        assertTrue(e.getMessage().contains("target " + v + " at row 11") && e.getMessage().contains("[0, " + v + ")"), e.getMessage());
    }

    static Tensor[] adamState(int n) {
        Tensor v = positive(n);
        for (long i = 0; i < n; i++) v.set(i, 1e-3f * v.get(i));
        return new Tensor[] {rand(n), rand(n), rand(n), v};
    }

    static void adamTwice(Kernels k, Tensor[] t) {
        for (int step = 1; step <= 2; step++) {
            float c1 = (float) (1 - Math.pow(0.9, step)), c2 = (float) (1 - Math.pow(0.95, step));
            k.optimizer().adamW(t[0], t[1], t[2], t[3], 3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, c1, c2, 0.37f);
        }
    }

    @Test
    void adamWMatchesTheCpu() {
        Tensor[] host = adamState(10_007);
        Tensor[] dev = new Tensor[4];
        for (int i = 0; i < 4; i++) dev[i] = host[i].to(GPU);
        adamTwice(cpu, host);
        adamTwice(gpu, dev);
        for (int i : new int[] {0, 2, 3}) close("adamW tensor " + i, host[i], dev[i]);
    }

    /** The kernel rounds every float operation in the CPU's order, so the update is the same bits. */
    @Test
    void adamWIsBitIdenticalToTheCpu() {
        Tensor[] host = adamState(4099);
        Tensor[] dev = new Tensor[4];
        for (int i = 0; i < 4; i++) dev[i] = host[i].to(GPU);
        adamTwice(cpu, host);
        adamTwice(gpu, dev);
        for (int i : new int[] {0, 2, 3}) assertArrayEquals(host[i].toFloatArray(), dev[i].to(Device.CPU).toFloatArray(), "tensor " + i);
    }

    @Test
    void dropOverCapacityKeepsTheFirstTokensPerSlotAndExpert() {
        int t = 400, k = 3, e = 7;
        int[] ids = new int[t * k];
        for (int i = 0; i < ids.length; i++) ids[i] = (int) (rng.nextDouble() * rng.nextDouble() * e);
        Tensor indices = Tensor.ofInts(ids, t, k);
        for (int capacity : new int[] {0, 1, 20, 90, 1000}) {
            Tensor co = Tensor.zeros(Device.CPU, DType.I32, t, k), go = Tensor.zeros(GPU, DType.I32, t, k);
            cpu.routing().dropOverCapacity(indices, e, capacity, co);
            gpu.routing().dropOverCapacity(indices.to(GPU), e, capacity, go);
            sameInts("dropOverCapacity capacity=" + capacity, co, go);
        }
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class,
                () -> gpu.routing().dropOverCapacity(indices.to(GPU), 5, 2, Tensor.zeros(GPU, DType.I32, t, k)));
        assertTrue(bad.getMessage().contains("dropOverCapacity"), bad.getMessage());
    }

    @Test
    void ropeForwardAndAdjoint() {
        int[] s = {2, 9, 3, 16};
        Tensor x = rand(s);
        for (float sign : new float[] {1f, -1f}) {
            same("rope sign=" + sign, new Tensor[] {x}, new int[][] {s}, (k, t) -> k.attention().rope(t[0], 10000.0, 1.0, 0, sign, t[1]));
        }
        same("rope theta=500", new Tensor[] {rand(1, 70, 2, 64)}, new int[][] {{1, 70, 2, 64}}, (k, t) -> k.attention().rope(t[0], 500.0, 1.0, 0, 1f, t[1]));
        same("rope scaled and offset", new Tensor[] {rand(1, 70, 2, 64)}, new int[][] {{1, 70, 2, 64}},
                (k, t) -> k.attention().rope(t[0], 500.0, 4.0, 37, 1f, t[1]));
    }

    /** Forward and backward of the fused attention against the CPU's blocked GEMM attention; the saved tensors differ by design. */
    static void attentionCase(int b, int s, int hq, int hkv, int hd, int window) {
        Tensor q = rand(b, s, hq, hd), k = rand(b, s, hkv, hd), v = rand(b, s, hkv, hd), gOut = rand(b, s, hq, hd);
        Tensor[] host = attention(cpu, q, k, v, gOut, window);
        Tensor[] dev = attention(gpu, q.to(GPU), k.to(GPU), v.to(GPU), gOut.to(GPU), window);
        String shape = " B=" + b + " S=" + s + " Hq=" + hq + " Hkv=" + hkv + " hd=" + hd + " window=" + window;
        String[] names = {"out", "dq", "dk", "dv"};
        for (int i = 0; i < 4; i++) close("attention " + names[i] + shape, host[i], dev[i]);
        Tensor[] again = attention(gpu, q.to(GPU), k.to(GPU), v.to(GPU), gOut.to(GPU), window);
        for (int i = 0; i < 4; i++) {
            assertArrayEquals(dev[i].to(Device.CPU).toFloatArray(), again[i].to(Device.CPU).toFloatArray(), "same bits on every run: " + names[i]);
        }
    }

    /** out, dq, dk, dv and the saved tensor of one forward and backward with window {@code window}. */
    static Tensor[] attention(Kernels kk, Tensor q, Tensor k, Tensor v, Tensor gOut, int window) {
        int b = q.dim(0), s = q.dim(1), hq = q.dim(2);
        Tensor saved = Tensor.zeros(q.device(), kk.attention().savedShape(b, hq, s));
        Tensor out = Tensor.zerosLike(q), gq = Tensor.zerosLike(q), gk = Tensor.zerosLike(k), gv = Tensor.zerosLike(v);
        kk.attention().causalAttention(q, k, v, 16, window, saved, out);
        kk.attention().causalAttentionBackward(gOut, q, k, v, out, saved, 16, window, gq, gk, gv);
        return new Tensor[] {out, gq, gk, gv, saved};
    }

    @Test
    void causalAttentionForwardAndBackward() {
        attentionCase(1, 2, 1, 1, 8, 0);
        attentionCase(2, 37, 4, 2, 24, 0);
        attentionCase(1, 64, 4, 1, 64, 0);
        attentionCase(2, 19, 2, 2, 160, 0);
        attentionCase(1, 130, 8, 8, 32, 0);
    }

    @Test
    void slidingWindowAttentionForwardAndBackward() {
        attentionCase(1, 37, 2, 1, 24, 5);
        attentionCase(2, 70, 4, 2, 64, 16);
        attentionCase(1, 19, 2, 2, 32, 1);
        attentionCase(1, 20, 2, 1, 16, 40);
    }

    static Tensor bf16Rounded(Tensor t) {
        return t.to(DType.BF16).to(DType.F32);
    }

    /**
     * ‖actual − expected‖ ≤ tol·‖expected‖ + floor·√n: the floor (an rms error per element) only matters for
     * gradients that vanish in exact arithmetic (dQ and dK where every row sees a single key).
     */
    static double closeWithin(String what, Tensor expected, Tensor actualOnGpu, double tol, double floor) {
        double[] a = actualOnGpu.to(Device.CPU).toDoubleArray();
        double[] b = expected.toDoubleArray();
        double diff = 0, norm = 0;
        for (int i = 0; i < b.length; i++) {
            diff += (a[i] - b[i]) * (a[i] - b[i]);
            norm += b[i] * b[i];
        }
        double err = Math.sqrt(diff) / Math.max(Math.sqrt(norm), 1e-30);
        assertTrue(Math.sqrt(diff) <= tol * Math.sqrt(norm) + floor * Math.sqrt(b.length), what + ": relative error " + err);
        return err;
    }

    /** log Σ_j exp(q_i·k_j/√hd) over the keys row i sees, in float64: (B, Hq, S). */
    static Tensor logSumExps(Tensor q, Tensor k, int window) {
        int b = q.dim(0), s = q.dim(1), hq = q.dim(2), hd = q.dim(3), hkv = k.dim(2);
        double scale = CudaAttention.scale(hd);
        Tensor lse = Tensor.zeros(b, hq, s);
        for (int bi = 0; bi < b; bi++) {
            for (int h = 0; h < hq; h++) {
                int g = h / (hq / hkv);
                for (int i = 0; i < s; i++) {
                    int lo = window > 0 ? Math.max(0, i - window + 1) : 0;
                    double[] sc = new double[i + 1 - lo];
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = lo; j <= i; j++) {
                        double dot = 0;
                        for (int d = 0; d < hd; d++) {
                            dot += (double) q.get((((long) bi * s + i) * hq + h) * hd + d) * k.get((((long) bi * s + j) * hkv + g) * hd + d);
                        }
                        sc[j - lo] = dot * scale;
                        max = Math.max(max, sc[j - lo]);
                    }
                    double sum = 0;
                    for (double x : sc) sum += Math.exp(x - max);
                    lse.set(((long) bi * hq + h) * s + i, (float) (max + Math.log(sum)));
                }
            }
        }
        return lse;
    }

    /**
     * The tensor-core kernels (bf16 products in a bf16 execution context) against the CPU op on the same
     * inputs rounded to bf16: out, dq, dk, dv within 2e-2 norm-wise (the P and dS operands are rounded to
     * bf16 too; about 3e-3 is expected), the log-sum-exps within 1e-4 of a float64 loop (the score products
     * are exact in fp32), the same bits on a second run, and not the f32 kernels' result.
     */
    static void tensorCoreCase(int b, int s, int hq, int hkv, int hd, int window) {
        Tensor q = rand(b, s, hq, hd), k = rand(b, s, hkv, hd), v = rand(b, s, hkv, hd), gOut = rand(b, s, hq, hd);
        Tensor[] host = attention(cpu, bf16Rounded(q), bf16Rounded(k), bf16Rounded(v), bf16Rounded(gOut), window);
        Tensor lse = logSumExps(bf16Rounded(q), bf16Rounded(k), window);
        Tensor[] dev, again, exact;
        try (var ctx = ExecutionContext.enter(GPU, 1, DType.BF16)) {
            dev = attention(gpu, q.to(GPU), k.to(GPU), v.to(GPU), gOut.to(GPU), window);
            again = attention(gpu, q.to(GPU), k.to(GPU), v.to(GPU), gOut.to(GPU), window);
        }
        exact = attention(gpu, q.to(GPU), k.to(GPU), v.to(GPU), gOut.to(GPU), window);
        String shape = " B=" + b + " S=" + s + " Hq=" + hq + " Hkv=" + hkv + " hd=" + hd + " window=" + window;
        String[] names = {"out", "dq", "dk", "dv", "lse"};
        StringBuilder errors = new StringBuilder("bf16 attention" + shape + ":");
        for (int i = 0; i < 4; i++) {
            double err = closeWithin("bf16 attention " + names[i] + shape, host[i], dev[i], 2e-2, 1e-4);
            errors.append(String.format(java.util.Locale.ROOT, " %s %.1e", names[i], err));
        }
        double lseErr = closeWithin("bf16 attention lse" + shape, lse, dev[4], 1e-4, 0);
        errors.append(String.format(java.util.Locale.ROOT, " lse %.1e", lseErr));
        System.out.println(errors);
        for (int i = 0; i < 5; i++) {
            assertArrayEquals(dev[i].to(Device.CPU).toFloatArray(), again[i].to(Device.CPU).toFloatArray(), "same bits on every run: " + names[i]);
        }
        double[] a = dev[0].to(Device.CPU).toDoubleArray(), e = exact[0].to(Device.CPU).toDoubleArray();
        double diff = 0;
        for (int i = 0; i < a.length; i++) diff += (a[i] - e[i]) * (a[i] - e[i]);
        assertTrue(diff > 0, "bf16 products must not run the f32 kernels" + shape);
    }

    @Test
    void tensorCoreAttentionForwardAndBackward() {
        for (int hd : new int[] {64, 128}) {
            tensorCoreCase(1, 1, 1, 1, hd, 0);
            tensorCoreCase(1, 37, 2, 1, hd, 0);
            tensorCoreCase(2, 64, 2, 2, hd, 0);
            tensorCoreCase(1, 130, 4, 2, hd, 0);
            tensorCoreCase(1, 200, 4, 1, hd, 0);
            tensorCoreCase(1, 150, 4, 4, hd, 7);
            tensorCoreCase(2, 129, 2, 1, hd, 64);
            tensorCoreCase(1, 100, 1, 1, hd, 300);
        }
    }

    /** Head dimensions without a tensor-core kernel run the f32 kernels in a bf16 context: the CPU's result to 1e-5. */
    @Test
    void otherHeadDimensionsFallBackToTheExactKernels() {
        Tensor q = rand(1, 40, 2, 32), k = rand(1, 40, 1, 32), v = rand(1, 40, 1, 32), gOut = rand(1, 40, 2, 32);
        Tensor[] host = attention(cpu, q, k, v, gOut, 0);
        Tensor[] dev;
        try (var ctx = ExecutionContext.enter(GPU, 1, DType.BF16)) {
            dev = attention(gpu, q.to(GPU), k.to(GPU), v.to(GPU), gOut.to(GPU), 0);
        }
        for (int i = 0; i < 4; i++) close("attention hd=32 in a bf16 context, output " + i, host[i], dev[i]);
    }

    @Test
    void limitsSaySo() {
        Tensor q = Tensor.zeros(GPU, DType.F32, 1, 2, 1, 300);
        UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class,
                () -> gpu.attention().causalAttention(q, q, q, 16, 0, Tensor.zeros(GPU, DType.F32, 1, 1, 2), Tensor.zeros(GPU, DType.F32, 1, 2, 1, 300)));
        assertTrue(e.getMessage().startsWith("cuda attention: head dimension 300"), e.getMessage());
        Tensor weights = Tensor.zeros(GPU, DType.F32, 1, 33);
        e = assertThrows(UnsupportedOperationException.class, () -> gpu.indexing().weightedCombine(Tensor.zeros(GPU, DType.F32, 1, 4),
                weights, Tensor.ofInts(new int[] {0}, 1).to(GPU), Tensor.zeros(GPU, DType.F32, 1, 4)));
        assertTrue(e.getMessage().contains("more than 32 slots") && e.getMessage().contains("33"), e.getMessage());
    }
}
