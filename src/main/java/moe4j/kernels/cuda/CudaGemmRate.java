package moe4j.kernels.cuda;

/**
 * The dense matrix-product rate of one GPU, measured on the spot: the denominator of a GPU run's model
 * FLOP utilisation, so that MFU is stated against what this GPU's cuBLAS delivers today rather than a
 * datasheet figure. One square product of {@link #SIZE} in the run's precision (bf16 operands with fp32
 * accumulation, or f32 with TF32 off), random operands (zeros would draw less power and run faster),
 * a few warm-up calls, then the mean of timed calls between two stream synchronisations.
 */
public final class CudaGemmRate {
    /** Large enough to fill an H200's tensor cores, small enough to take well under a second. */
    static final int SIZE = 8192;
    private static final int WARMUP = 3;
    private static final int TIMED = 10;

    private CudaGemmRate() {}

    /** TFLOP/s of {@code SIZE}³ products on GPU {@code gpuOrdinal}, bf16 operands or f32. */
    public static double tflops(int gpuOrdinal, boolean bf16) {
        CudaStream s = CudaStream.of(CudaGpu.of(gpuOrdinal));
        long n = SIZE;
        int type = bf16 ? Cublas.CUDA_R_16BF : Cublas.CUDA_R_32F;
        String fill = bf16 ? "fill_uniform_bf16" : "fill_uniform_f32";
        try (DevicePool.Scope scope = s.pool().openScope()) {
            long bytes = n * n * (bf16 ? 2 : 4);
            long a = s.pool().allocate(bytes, "the GEMM rate probe's A");
            long b = s.pool().allocate(bytes, "the GEMM rate probe's B");
            long c = s.pool().allocate(n * n * 4, "the GEMM rate probe's C");
            s.launch(KernelSource.ELEMENTWISE, fill).over(n * n).ptr(a).i64(n * n).i64(1).f32(1f).run();
            s.launch(KernelSource.ELEMENTWISE, fill).over(n * n).ptr(b).i64(n * n).i64(2).f32(1f).run();
            for (int i = 0; i < WARMUP; i++) s.gemm(false, false, SIZE, SIZE, SIZE, 1f, a, SIZE, b, SIZE, 0f, c, SIZE, type, Cublas.CUDA_R_32F);
            s.synchronize();
            long start = System.nanoTime();
            for (int i = 0; i < TIMED; i++) s.gemm(false, false, SIZE, SIZE, SIZE, 1f, a, SIZE, b, SIZE, 0f, c, SIZE, type, Cublas.CUDA_R_32F);
            s.synchronize();
            double seconds = (System.nanoTime() - start) / 1e9 / TIMED;
            return 2.0 * n * n * n / seconds / 1e12;
        }
    }
}
