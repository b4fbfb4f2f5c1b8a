package moe4j.kernels.cpu;

import moe4j.kernels.AttentionKernels;
import moe4j.kernels.ElementwiseKernels;
import moe4j.kernels.IndexKernels;
import moe4j.kernels.Kernels;
import moe4j.kernels.MatmulKernels;
import moe4j.kernels.OptimizerKernels;
import moe4j.kernels.ReductionKernels;
import moe4j.kernels.RoutingKernels;
import moe4j.tensor.Device;

/** The CPU's kernels: Vector API loops on the tensors' host memory, run on the calling thread (and its context's GEMM workers). */
public final class CpuKernels implements Kernels {
    public static final CpuKernels INSTANCE = new CpuKernels();

    private final MatmulKernels matmul = new CpuMatmul();
    private final ElementwiseKernels elementwise = new CpuElementwise();
    private final ReductionKernels reductions = new CpuReductions();
    private final IndexKernels indexing = new CpuIndexing();
    private final RoutingKernels routing = new CpuRouting();
    private final AttentionKernels attention = new CpuAttention();
    private final OptimizerKernels optimizer = new CpuOptimizer();

    private CpuKernels() {}

    @Override
    public Device device() {
        return Device.CPU;
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
    public ReductionKernels reductions() {
        return reductions;
    }

    @Override
    public IndexKernels indexing() {
        return indexing;
    }

    @Override
    public RoutingKernels routing() {
        return routing;
    }

    @Override
    public AttentionKernels attention() {
        return attention;
    }

    @Override
    public OptimizerKernels optimizer() {
        return optimizer;
    }
}
