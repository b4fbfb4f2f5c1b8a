package moe4j.kernels.cpu;

import moe4j.kernels.OptimizerKernels;
import moe4j.tensor.Tensor;

final class CpuOptimizer implements OptimizerKernels {
    @Override
    public void adamW(Tensor p, Tensor g, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps, float decay,
                      float c1, float c2, float gradScale) {
        Elementwise.adamW(p.numel(), p.data(), g.data(), m.data(), v.data(), lr, beta1, beta2, eps, decay, c1, c2, gradScale);
    }
}
