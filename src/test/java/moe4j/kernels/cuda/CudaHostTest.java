package moe4j.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The host-side logic of the CUDA backend, without a GPU: runs in CI. */
class CudaHostTest {

    // ---------------------------------------------------------------- kernels

    /** Every kernel name the Java code launches is defined by the module it names (f32 and bf16 for typed ones). */
    @Test
    void everyLaunchedKernelExists() throws IOException {
        Map<KernelSource, List<String>> defined = new HashMap<>();
        for (KernelSource m : KernelSource.values()) defined.put(m, m.kernelNames());
        assertTrue(defined.get(KernelSource.PERMUTE).containsAll(List.of("perm_scatter", "combine_rows_f32", "combine_rows_bf16",
                "combine_backward_bf16", "gather_rows")), defined.toString());
        assertTrue(defined.get(KernelSource.ELEMENTWISE).containsAll(List.of("swiglu_forward_bf16", "gelu_backward_f32",
                "relu_forward_bf16", "scale_rows_f32", "cast_f32_bf16", "fill_uniform_bf16")), defined.toString());
        Pattern plain = Pattern.compile("launch\\(KernelSource\\.(\\w+), \"(\\w+)\"\\)");
        Pattern typed = Pattern.compile("launch\\(KernelSource\\.(\\w+), k\\(\"(\\w+)\"\\)\\)");
        // CudaKernels' op("name") launches a kernel of the ops module
        Pattern ops = Pattern.compile("\\bop\\(\"(\\w+)\"\\)");
        int checked = 0;
        try (var files = Files.walk(Path.of("src/main/java/moe4j/kernels/cuda"))) {
            for (Path f : files.filter(p -> p.toString().endsWith(".java")).toList()) {
                String src = Files.readString(f);
                Matcher m = plain.matcher(src);
                while (m.find()) {
                    assertTrue(defined.get(KernelSource.valueOf(m.group(1))).contains(m.group(2)), f + " launches " + m.group(2));
                    checked++;
                }
                Matcher o = ops.matcher(src);
                while (o.find()) {
                    assertTrue(defined.get(KernelSource.OPS).contains(o.group(1)), f + " launches " + o.group(1) + " of ops.cu");
                    checked++;
                }
                Matcher t = typed.matcher(src);
                while (t.find()) {
                    for (String suffix : new String[] {"_f32", "_bf16"}) {
                        assertTrue(defined.get(KernelSource.valueOf(t.group(1))).contains(t.group(2) + suffix), f + " launches " + t.group(2));
                    }
                    checked++;
                }
            }
        }
        assertTrue(checked >= 15, "launch sites found: " + checked);
    }

    @Test
    void cacheKeyChangesWithSourceArchDriverAndCompiler() {
        String k = KernelSource.cacheKey("router.cu", "src", 90, 13000, "13.0");
        assertEquals(k, KernelSource.cacheKey("router.cu", "src", 90, 13000, "13.0"));
        assertTrue(k.startsWith("router-sm90-drv13000-nvrtc13.0-"), k);
        assertNotEquals(k, KernelSource.cacheKey("router.cu", "src ", 90, 13000, "13.0"));
        assertNotEquals(k, KernelSource.cacheKey("router.cu", "src", 89, 13000, "13.0"));
        assertNotEquals(k, KernelSource.cacheKey("router.cu", "src", 90, 12080, "13.0"));
        assertNotEquals(k, KernelSource.cacheKey("router.cu", "src", 90, 13000, "12.9"));
    }

    @Test
    void cacheCompilesOnceAndSurvivesAnUnwritableDirectory(@TempDir Path dir) throws IOException {
        AtomicInteger compiles = new AtomicInteger();
        byte[] image = {1, 2, 3};
        assertEquals(3, KernelSource.cached(dir, "key", () -> { compiles.incrementAndGet(); return image; }).length);
        assertEquals(3, KernelSource.cached(dir, "key", () -> { compiles.incrementAndGet(); return image; }).length);
        assertEquals(1, compiles.get());
        Path file = dir.resolve("a-file");
        Files.writeString(file, "not a directory");
        assertEquals(3, KernelSource.cached(file.resolve("sub"), "key", () -> image).length);
    }

    /** The nvcc of this machine compiles every module for sm_90a, as NVRTC does on the GPU (prelude included). */
    @Test
    void everyModuleCompilesWithNvcc(@TempDir Path dir) throws Exception {
        Path nvcc = List.of(Path.of("/usr/local/cuda/bin/nvcc"), Path.of("/usr/local/bin/nvcc")).stream()
                .filter(Files::isExecutable).findFirst().orElse(null);
        assumeTrue(nvcc != null, "no nvcc on this machine");
        for (KernelSource m : KernelSource.values()) {
            Path src = dir.resolve(m.file());
            Files.writeString(src, m.source());
            Process p = new ProcessBuilder(nvcc.toString(), "-gencode=arch=compute_90a,code=sm_90a", "-cubin", "-Werror", "all-warnings",
                    "-o", dir.resolve(m.file() + ".cubin").toString(), src.toString()).redirectErrorStream(true).start();
            String log = new String(p.getInputStream().readAllBytes());
            assertEquals(0, p.waitFor(), m.file() + " failed to compile:\n" + log);
        }
    }

    // ---------------------------------------------------------------- bindings

    /** Each driver entry point's descriptor has as many parameters as its declaration in cuda.h (when the header is here). */
    @Test
    void driverDescriptorsMatchCudaHeader() throws IOException {
        Path header = Path.of("/usr/local/cuda/include/cuda.h");
        assumeTrue(Files.isRegularFile(header), "no cuda.h on this machine");
        String h = Files.readString(header);
        for (CudaDriver.Entry e : CudaDriver.ENTRIES) {
            Matcher m = Pattern.compile("CUresult CUDAAPI " + e.name() + "\\(([^;]*?)\\);", Pattern.DOTALL).matcher(h);
            assertTrue(m.find(), e.name() + " not declared in cuda.h");
            String params = m.group(1).trim();
            int count = params.equals("void") || params.isEmpty() ? 0 : params.split(",").length;
            assertEquals(count, e.descriptor().argumentLayouts().size(), e.name() + "(" + params + ")");
        }
    }

    @Test
    void gemmArgumentsAreCheckedWithTheirNames() {
        Cublas.checkGemmArguments(false, false, 4, 5, 6, 6, 5, 5);
        Cublas.checkGemmArguments(true, true, 4, 5, 6, 4, 6, 5);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> Cublas.checkGemmArguments(false, false, -1, 5, 6, 6, 5, 5))
                .getMessage().contains("m=-1"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> Cublas.checkGemmArguments(false, false, 4, 5, 6, 5, 5, 5))
                .getMessage().contains("lda=5"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> Cublas.checkGemmArguments(false, true, 4, 5, 6, 6, 5, 5))
                .getMessage().contains("ldb=5"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> Cublas.checkGemmArguments(false, false, 4, 5, 6, 6, 5, 4))
                .getMessage().contains("ldc=4"));
        assertEquals(Cublas.CUBLAS_COMPUTE_32F_PEDANTIC, Cublas.computeType(Cublas.CUDA_R_32F));
        assertEquals(Cublas.CUBLAS_COMPUTE_32F, Cublas.computeType(Cublas.CUDA_R_16BF));
    }

    @Test
    void launchGeometry() {
        assertEquals(1, Launch.blocksFor(0, 256, 100));
        assertEquals(1, Launch.blocksFor(256, 256, 100));
        assertEquals(2, Launch.blocksFor(257, 256, 100));
        assertEquals(100, Launch.blocksFor(1L << 40, 256, 100));
        assertThrows(IllegalArgumentException.class, () -> Launch.blocksFor(-1, 256, 100));
        assertThrows(IllegalArgumentException.class, () -> Launch.blocksFor(10, 2048, 100));
        assertEquals(132 * 16, Launch.maxBlocks(132));
    }

    @Test
    void paddedLayoutOnlyWhenPaddingIsCheap() {
        int[] even = {1000, 1010, 990, 1020};
        RowPlan auto = RowPlan.of(CudaMoELayer.RowLayout.AUTO, even);
        assertTrue(auto.strided(4));
        assertEquals(4096, auto.rows());
        assertArrayEquals(new int[] {0, 1024, 2048, 3072}, auto.expertBase());
        int[] skewed = {3000, 10, 10, 10};
        assertTrue(RowPlan.of(CudaMoELayer.RowLayout.PADDED, skewed).strided(4));
        assertEquals(4 * 3008, RowPlan.of(CudaMoELayer.RowLayout.PADDED, skewed).rows());
        assertFalse(RowPlan.of(CudaMoELayer.RowLayout.AUTO, skewed).strided(4), "skewed counts take buckets");
        RowPlan compact = RowPlan.of(CudaMoELayer.RowLayout.COMPACT, even);
        assertTrue(compact.compact());
        assertEquals(4020, compact.rows());
        assertTrue(RowPlan.of(CudaMoELayer.RowLayout.PADDED, new int[] {0, 0}).compact(), "no rows: nothing to pad");
    }

    @Test
    void autoStaysCompactWhenEveryExpertFillsTheGpu() {
        int[] large = {2045, 3316, 348, 570, 1285, 2785, 2154, 3881}; // D=2048 H=7168 E=8: 2H = 14336 columns
        assertTrue(RowPlan.expertsFillTheGpu(large, 14336, 132));
        assertTrue(RowPlan.of(CudaMoELayer.RowLayout.AUTO, large, 14336, 132).compact());
        int[] small = {1000, 1010, 990, 1020}; // 2H = 2048: 8 x 8 tiles per expert, not 132
        assertFalse(RowPlan.expertsFillTheGpu(small, 2048, 132));
        assertTrue(RowPlan.of(CudaMoELayer.RowLayout.AUTO, small, 2048, 132).strided(4));
        assertFalse(RowPlan.expertsFillTheGpu(new int[] {0, 0}, 2048, 132));
    }

    /** Buckets: every non-empty expert in exactly one, rows disjoint and large enough, padding bounded. */
    @Test
    void bucketsHoldEveryExpertOnceWithBoundedPadding() {
        int[] counts = {777, 189, 875, 1580, 0, 65, 663, 1335, 14, 2145, 91, 576, 3, 1763, 1761, 580};
        RowPlan plan = RowPlan.of(CudaMoELayer.RowLayout.BUCKETED, counts);
        assertFalse(plan.compact());
        boolean[] seen = new boolean[counts.length];
        java.util.List<int[]> ranges = new ArrayList<>();
        long used = 0;
        for (RowPlan.Bucket b : plan.buckets()) {
            int largest = 0;
            for (int e : b.experts()) largest = Math.max(largest, counts[e]);
            assertEquals(RowPlan.roundUp(largest), b.cap());
            for (int e : b.experts()) {
                assertFalse(seen[e], "expert " + e + " twice");
                seen[e] = true;
                assertTrue(counts[e] <= b.cap());
                assertTrue(RowPlan.roundUp(counts[e]) >= RowPlan.BUCKET_FILL * b.cap(), "expert " + e + " padded too much");
                ranges.add(new int[] {plan.expertBase()[e], plan.expertBase()[e] + b.cap()});
                used += counts[e];
            }
        }
        for (int e = 0; e < counts.length; e++) assertEquals(counts[e] > 0, seen[e], "expert " + e);
        ranges.sort((x, y) -> Integer.compare(x[0], y[0]));
        for (int i = 1; i < ranges.size(); i++) assertTrue(ranges.get(i)[0] >= ranges.get(i - 1)[1], "overlapping experts");
        assertTrue(ranges.get(ranges.size() - 1)[1] <= plan.rows());
        long total = 0;
        for (int c : counts) total += c;
        assertEquals(total, used);
        assertTrue(plan.rows() < 1.5 * total, "padding " + plan.rows() + " rows for " + total);
    }

    // ---------------------------------------------------------------- pool

    /** A fake device: addresses from a counter, a capacity, a log of frees. */
    static final class FakeAllocator implements DevicePool.Allocator {
        final long capacity;
        long used;
        long next = 0x1000;
        final Map<Long, Long> sizes = new HashMap<>();
        final List<Long> freed = new ArrayList<>();

        FakeAllocator(long capacity) {
            this.capacity = capacity;
        }

        @Override
        public long allocate(long bytes) {
            if (used + bytes > capacity) return 0;
            long a = next;
            next += bytes;
            used += bytes;
            sizes.put(a, bytes);
            return a;
        }

        @Override
        public void free(long address) {
            used -= sizes.remove(address);
            freed.add(address);
        }

        @Override
        public String deviceState() {
            return "fake device " + used + "/" + capacity;
        }
    }

    @Test
    void scopesReturnTheirAllocations() {
        FakeAllocator dev = new FakeAllocator(1 << 20);
        DevicePool pool = new DevicePool("cuda:0", dev);
        long persistent = pool.allocate(100, "weights");
        assertEquals(256, pool.bytesInUse());
        try (DevicePool.Scope step = pool.openScope()) {
            long a = pool.allocate(1000, "a");
            long b = pool.allocate(10, "b");
            pool.free(b);
            try (DevicePool.Scope inner = pool.openScope()) {
                pool.allocate(300, "c");
                assertEquals(3, pool.liveBuffers()); // weights, a, c (b was freed)
            }
            assertEquals(2, pool.liveBuffers());
            assertTrue(dev.sizes.containsKey(a));
        }
        assertEquals(1, pool.liveBuffers());
        assertEquals(256, pool.bytesInUse());
        assertEquals(256 + 1024 + 512, pool.peakBytes()); // b had gone before c came
        assertTrue(dev.sizes.containsKey(persistent));
        assertEquals(4, pool.allocations());
        assertThrows(IllegalArgumentException.class, () -> pool.free(12345));
    }

    @Test
    void scopesCloseInnermostFirst() {
        DevicePool pool = new DevicePool("cuda:0", new FakeAllocator(1 << 20));
        DevicePool.Scope outer = pool.openScope();
        DevicePool.Scope inner = pool.openScope();
        assertThrows(IllegalStateException.class, outer::close);
        inner.close();
        outer.close();
    }

    @Test
    void outOfMemoryNamesTheRequestAndThePoolState() {
        DevicePool pool = new DevicePool("cuda:1", new FakeAllocator(4096));
        pool.allocate(3000, "weights");
        CudaException e = assertThrows(CudaException.class, () -> pool.allocate(2000, "expert hidden rows"));
        String m = e.getMessage();
        assertTrue(m.contains("cuda:1") && m.contains("2.0 KiB") && m.contains("expert hidden rows") && m.contains("3.0 KiB in 1 buffers")
                && m.contains("fake device 3072/4096"), m);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> pool.allocate(-5, "x")).getMessage().contains("-5"));
    }

    @Test
    void unavailableIsOneSentence() {
        RuntimeException e = CudaException.unavailable("no CUDA GPU is visible (cuInit: CUDA_ERROR_NO_DEVICE)", null);
        assertTrue(e instanceof moe4j.kernels.DeviceUnavailableException);
        assertEquals("cublas: cublasGemmEx failed: CUBLAS_STATUS_INVALID_VALUE (an invalid value was used as an argument)",
                CudaException.callFailed("cublas", "cublasGemmEx", "CUBLAS_STATUS_INVALID_VALUE",
                        "an invalid value was used as an argument"));
    }
}
