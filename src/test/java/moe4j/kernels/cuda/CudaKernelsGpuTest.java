package moe4j.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import moe4j.nn.Routing;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** The bindings and kernels on a GPU, each against an independent host computation. Skipped without a GPU. */
@Tag("gpu")
class CudaKernelsGpuTest {
    static CudaStream s;

    @BeforeAll
    static void needsGpu() {
        assumeTrue(CudaDriver.available(), "no CUDA GPU here");
        s = CudaStream.of(CudaGpu.of(0));
    }

    @Test
    void everyKernelCompilesAndLoads() {
        int n = s.gpu().loadAllKernels();
        int expected = 0;
        for (KernelSource m : KernelSource.values()) expected += m.kernelNames().size();
        assertEquals(expected, n);
        assertTrue(n > 30, "kernels found: " + n);
    }

    @Test
    void gemmF32MatchesFloat64Loop() {
        int m = 33, n = 47, k = 129;
        float[] a = random(m * k, 1), b = random(k * n, 2);
        try (DevicePool.Scope scope = s.pool().openScope()) {
            long da = upload(a), db = upload(b), dc = s.pool().allocate(4L * m * n, "C");
            s.gemm(false, false, m, n, k, 1f, da, k, db, n, 0f, dc, n, Cublas.CUDA_R_32F, Cublas.CUDA_R_32F);
            float[] c = s.readFloats(dc, m * n);
            double[] ref = new double[m * n];
            for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) {
                double acc = 0;
                for (int p = 0; p < k; p++) acc += (double) a[i * k + p] * b[p * n + j];
                ref[i * n + j] = acc;
            }
            assertTrue(relErr(c, ref) < 1e-6, "gemm error " + relErr(c, ref));
            // transposed operands: Cᵀ (n×m) = Bᵀ · Aᵀ with both read transposed from the same storage
            long dct = s.pool().allocate(4L * m * n, "Ct");
            s.gemm(true, true, n, m, k, 1f, db, n, da, k, 0f, dct, m, Cublas.CUDA_R_32F, Cublas.CUDA_R_32F);
            float[] ct = s.readFloats(dct, m * n);
            double[] reft = new double[m * n];
            for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) reft[j * m + i] = ref[i * n + j];
            assertTrue(relErr(ct, reft) < 1e-6, "transposed gemm error " + relErr(ct, reft));
        }
    }

    @Test
    void raggedStrategiesAgree() {
        int e = 6, inner = 40, cols = 24;
        int[] rows = {5, 0, 17, 1, 33, 9};
        int total = 65;
        float[] a = random(total * inner, 3), w = random(e * inner * cols, 4);
        try (DevicePool.Scope scope = s.pool().openScope()) {
            long da = upload(a), dw = upload(w);
            float[][] results = new float[RaggedGemm.Strategy.values().length][];
            for (RaggedGemm.Strategy st : RaggedGemm.Strategy.values()) {
                long dc = s.pool().allocate(4L * total * cols, "C");
                s.zero(dc, 4L * total * cols);
                java.util.List<RaggedGemm.Product> ps = new java.util.ArrayList<>();
                long o = 0;
                for (int x = 0; x < e; x++) {
                    ps.add(new RaggedGemm.Product(false, false, rows[x], cols, inner, da + 4 * o * inner, inner,
                            dw + 4L * x * inner * cols, cols, dc + 4 * o * cols, cols));
                    o += rows[x];
                }
                RaggedGemm rg = new RaggedGemm(s);
                rg.force(st);
                rg.run("test", ps, Cublas.CUDA_R_32F, Cublas.CUDA_R_32F);
                results[st.ordinal()] = s.readFloats(dc, total * cols);
            }
            double[] ref = new double[total * cols];
            int o = 0;
            for (int x = 0; x < e; x++) {
                for (int r = o; r < o + rows[x]; r++) for (int j = 0; j < cols; j++) {
                    double acc = 0;
                    for (int p = 0; p < inner; p++) acc += (double) a[r * inner + p] * w[(x * inner + p) * cols + j];
                    ref[r * cols + j] = acc;
                }
                o += rows[x];
            }
            for (RaggedGemm.Strategy st : RaggedGemm.Strategy.values()) {
                assertTrue(relErr(results[st.ordinal()], ref) < 1e-6, st + " error " + relErr(results[st.ordinal()], ref));
            }
        }
    }

    @Test
    void permutationIsTheCpuStableSort() {
        int t = 700, k = 3, e = 37;
        Rng rng = new Rng(12);
        int[] idx = new int[t * k];
        for (int i = 0; i < t; i++) {
            java.util.Set<Integer> seen = new java.util.HashSet<>();
            for (int j = 0; j < k; j++) {
                int v;
                do v = (int) (rng.nextDouble() * e); while (!seen.add(v));
                idx[i * k + j] = i % 11 == 0 && j == 1 ? -1 : v; // some dropped entries
            }
        }
        Routing ref = Routing.sortByExpert(Tensor.ofInts(idx, t, k), e);
        int n = t * k, blocks = (n + 255) / 256;
        try (DevicePool.Scope scope = s.pool().openScope()) {
            long didx = uploadInts(idx);
            long bc = s.pool().allocate(4L * blocks * e, "bc"), bb = s.pool().allocate(4L * blocks * e, "bb");
            long counts = s.pool().allocate(4L * e, "counts"), offsets = s.pool().allocate(4L * (e + 1), "offsets");
            long scale = s.pool().allocate(4L * e, "scale");
            long entryRow = s.pool().allocate(4L * n, "er"), rowEntry = s.pool().allocate(4L * n, "re"), rowToken = s.pool().allocate(4L * n, "rt");
            s.launch(KernelSource.PERMUTE, "perm_block_histogram").grid(blocks).block(256).shared(4 * e).ptr(didx).i32(n).i32(e).i32(-1).ptr(bc).run();
            s.launch(KernelSource.PERMUTE, "perm_scan").grid(1).block(1024).ptr(bc).i32(blocks).i32(e).ptr(counts).ptr(offsets).ptr(bb).ptr(scale).run();
            s.launch(KernelSource.PERMUTE, "perm_scatter").grid(blocks).block(256).ptr(didx).i32(n).i32(k).i32(e).i32(-1).ptr(bb)
                    .ptr(offsets).ptr(0L).ptr(rowEntry).ptr(rowToken).ptr(entryRow).run();
            int rows = ref.rowCount();
            assertArrayEquals(ref.rowsPerExpert(), s.readInts(counts, e));
            assertArrayEquals(ref.entryOfRow().toIntArray(), s.readInts(rowEntry, rows));
            assertArrayEquals(ref.tokenOfRow().toIntArray(), s.readInts(rowToken, rows));
            int[] er = s.readInts(entryRow, n);
            int[] entryOfRow = ref.entryOfRow().toIntArray();
            for (int r = 0; r < rows; r++) assertEquals(r, er[entryOfRow[r]]);
            for (int i = 0; i < n; i++) if (idx[i] < 0) assertEquals(-1, er[i]);
        }
    }

    @Test
    void bf16CastRoundsToNearestEven() {
        float[] v = {1f, -2.5f, 1.00390625f /* halfway: stays 1 */, 1.01171875f /* halfway: up to even */, 3.0e-39f, Float.MAX_VALUE, Float.NaN};
        try (DevicePool.Scope scope = s.pool().openScope()) {
            long src = upload(v);
            long bf = s.pool().allocate(2L * v.length, "bf16"), back = s.pool().allocate(4L * v.length, "back");
            s.launch(KernelSource.ELEMENTWISE, "cast_f32_bf16").over(v.length).ptr(src).ptr(bf).i64(v.length).run();
            s.launch(KernelSource.ELEMENTWISE, "cast_bf16_f32").over(v.length).ptr(bf).ptr(back).i64(v.length).run();
            float[] r = s.readFloats(back, v.length);
            for (int i = 0; i < v.length; i++) {
                int u = Float.floatToRawIntBits(v[i]);
                float expected = Float.isNaN(v[i]) ? Float.NaN : Float.intBitsToFloat((u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000);
                assertEquals(expected, r[i], 0f, "element " + i + " = " + v[i]);
            }
        }
    }

    @Test
    void outOfMemoryNamesTheRequestAndThePool() {
        CudaException e = assertThrows(CudaException.class, () -> s.pool().allocate(1L << 50, "an impossible buffer"));
        assertTrue(e.getMessage().contains("an impossible buffer") && e.getMessage().contains("pool"), e.getMessage());
    }

    @Test
    void failedCallsNameTheCallAndTheError() {
        CudaException e = assertThrows(CudaException.class,
                () -> s.launch(KernelSource.ELEMENTWISE, "cast_f32_bf16").grid(1).block(1024).shared(1 << 30).ptr(0).ptr(0).i64(0).run());
        assertTrue(e.getMessage().contains("cuLaunchKernel(cast_f32_bf16") && e.getMessage().contains("CUDA_ERROR"), e.getMessage());
    }

    // ---------------------------------------------------------------- helpers

    static float[] random(int n, long seed) {
        Rng r = new Rng(seed);
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) r.nextGaussian();
        return a;
    }

    static long upload(float[] a) {
        long d = s.pool().allocate(4L * a.length, "test input");
        try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
            s.copyToDevice(d, arena.allocateFrom(java.lang.foreign.ValueLayout.JAVA_FLOAT, a), 4L * a.length);
            s.synchronize();
        }
        return d;
    }

    static long uploadInts(int[] a) {
        long d = s.pool().allocate(4L * a.length, "test input");
        try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
            s.copyToDevice(d, arena.allocateFrom(java.lang.foreign.ValueLayout.JAVA_INT, a), 4L * a.length);
            s.synchronize();
        }
        return d;
    }

    static double relErr(float[] a, double[] ref) {
        double diff = 0, norm = 0;
        for (int i = 0; i < ref.length; i++) {
            diff += (a[i] - ref[i]) * (a[i] - ref[i]);
            norm += ref[i] * ref[i];
        }
        return Math.sqrt(diff / norm);
    }

}
