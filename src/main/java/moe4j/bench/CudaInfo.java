package moe4j.bench;

import java.io.PrintWriter;

/** What {@code moe4j info} shows of the CUDA GPUs: read through the driver API, cuBLAS and NVRTC. */
public final class CudaInfo {
    private CudaInfo() {}

    /** The dense GEMM rate of {@code gpu} measured now (bf16 operands with fp32 accumulation, or f32), TFLOP/s. */
    public static double denseGemmTflops(moe4j.tensor.Device gpu, boolean bf16) {
        return moe4j.kernels.cuda.CudaGemmRate.tflops(gpu.index(), bf16);
    }

    /** The GPU's name, e.g. for a report's machine line. */
    public static String gpuName(moe4j.tensor.Device gpu) {
        return moe4j.kernels.cuda.CudaDriver.get().deviceName(gpu.index());
    }

    /** The CUDA GPUs through the driver API (name, memory, compute capability, driver, cuBLAS and NVRTC versions). */
    public static com.google.gson.JsonArray gpus(PrintWriter out) {
        com.google.gson.JsonArray list = new com.google.gson.JsonArray();
        out.println("gpus");
        try {
            moe4j.kernels.cuda.CudaDriver driver = moe4j.kernels.cuda.CudaDriver.get();
            int v = driver.driverVersion();
            String cublas = version(() -> moe4j.kernels.cuda.Cublas.get().version());
            String nvrtc = version(() -> moe4j.kernels.cuda.Nvrtc.get().version());
            out.printf("  driver API %d.%d, cuBLAS %s, NVRTC %s%n", v / 1000, v % 1000 / 10, cublas, nvrtc);
            for (int i = 0; i < driver.deviceCount(); i++) {
                com.google.gson.JsonObject g = new com.google.gson.JsonObject();
                int cc = driver.computeCapability(i);
                g.addProperty("device", "cuda:" + i);
                g.addProperty("name", driver.deviceName(i));
                g.addProperty("memoryBytes", driver.totalMemory(i));
                g.addProperty("computeCapability", cc / 10 + "." + cc % 10);
                g.addProperty("multiprocessors", driver.multiprocessors(i));
                g.addProperty("driver", v);
                g.addProperty("cublas", cublas);
                g.addProperty("nvrtc", nvrtc);
                out.printf("  cuda:%d  %s, %.1f GiB, compute capability %d.%d, %d SMs%n", i, driver.deviceName(i),
                        driver.totalMemory(i) / (double) (1L << 30), cc / 10, cc % 10, driver.multiprocessors(i));
                list.add(g);
            }
        } catch (RuntimeException e) {
            out.println("  none: " + e.getMessage());
        }
        return list;
    }

    static String version(java.util.function.Supplier<String> v) {
        try {
            return v.get();
        } catch (RuntimeException e) {
            return "not available (" + e.getMessage() + ")";
        }
    }

}
