package moe4j.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.function.BiConsumer;
import moe4j.kernels.DeviceBackend;
import moe4j.kernels.Kernels;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The cuda device behind the kernel interfaces: every implemented kernel on the GPU against the same
 * kernel on the CPU, same inputs, f32 results within 1e-5 norm-wise, integer results equal. Skipped
 * without a GPU.
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
        double[] a = actualOnGpu.to(Device.CPU).toDoubleArray();
        double[] b = expected.toDoubleArray();
        double diff = 0, norm = 0;
        for (int i = 0; i < b.length; i++) {
            diff += (a[i] - b[i]) * (a[i] - b[i]);
            norm += b[i] * b[i];
        }
        double err = Math.sqrt(diff) / Math.max(Math.sqrt(norm), 1e-30);
        assertTrue(err <= 1e-5, what + ": relative error " + err);
    }

    /** Runs {@code op(kernels, outputs)} on both devices with copies of the same inputs and compares outputs. */
    static void same(String what, Tensor[] inputs, int[][] outShapes, BiConsumer<Kernels, Tensor[]> op) {
        Tensor[] c = new Tensor[inputs.length + outShapes.length];
        Tensor[] g = new Tensor[c.length];
        for (int i = 0; i < inputs.length; i++) {
            c[i] = inputs[i];
            g[i] = inputs[i].to(GPU);
        }
        for (int j = 0; j < outShapes.length; j++) {
            c[inputs.length + j] = Tensor.zeros(outShapes[j]);
            g[inputs.length + j] = Tensor.zeros(GPU, DType.F32, outShapes[j]);
        }
        op.accept(cpu, c);
        op.accept(gpu, g);
        for (int j = 0; j < outShapes.length; j++) close(what + " output " + j, c[inputs.length + j], g[inputs.length + j]);
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
    void gemmAllTranspositionsOffsetsAndBeta() {
        for (boolean ta : new boolean[] {false, true}) {
            for (boolean tb : new boolean[] {false, true}) {
                int m = 19, n = 23, k = 31;
                Tensor a = rand(ta ? k : m, ta ? m + 2 : k + 2);
                Tensor b = rand(tb ? n : k, tb ? k : n);
                Tensor c0 = rand(m, n);
                int lda = ta ? m + 2 : k + 2, ldb = tb ? k : n;
                same("gemm ta=" + ta + " tb=" + tb, new Tensor[] {a, b, c0}, new int[][] {{m, n}}, (kk, t) -> {
                    kk.elementwise().scale(1f, t[2], t[3]);
                    kk.matmul().gemm(ta, tb, m, n, k, 0.7f, t[0], 1, lda, t[1], 0, ldb, 0.3f, t[3], 0, n);
                });
            }
        }
    }

    @Test
    void groupedProductsWithEmptyGroups() {
        int k = 12, n = 10;
        int[] offsets = {0, 5, 5, 17, 18};
        Tensor x = rand(18, k);
        Tensor w = rand(4, k * n);
        Tensor dy = rand(18, n);
        for (boolean transW : new boolean[] {false, true}) {
            same("groupedGemm transW=" + transW, new Tensor[] {x, w}, new int[][] {{18, n}}, (kk, t) ->
                    kk.matmul().groupedGemm(offsets, k, n, t[0], new Tensor[] {t[1], t[1], t[1], t[1]},
                            new long[] {0, k * n, 2L * k * n, 3L * k * n}, transW, t[2], 0f));
        }
        Tensor dw0 = rand(4, k * n);
        same("groupedWeightGrad", new Tensor[] {x, dy, dw0}, new int[][] {{4, k * n}}, (kk, t) -> {
            kk.elementwise().scale(1f, t[2], t[3]);
            kk.matmul().groupedWeightGrad(offsets, k, n, t[0], t[1], new Tensor[] {t[3], t[3], t[3], t[3]},
                    new long[] {0, k * n, 2L * k * n, 3L * k * n}, 0.5f);
        });
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
    }

    @Test
    void missingKernelsSaySo() {
        UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class, () -> gpu.reductions());
        assertTrue(e.getMessage().startsWith("cuda: "), e.getMessage());
    }
}
