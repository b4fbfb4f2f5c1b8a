package moe4j.bench;

import java.util.LinkedHashMap;
import java.util.Map;
import moe4j.autograd.Autograd;
import moe4j.autograd.GradCheck;
import moe4j.kernels.cuda.CudaGpu;
import moe4j.kernels.cuda.CudaMoELayer;
import moe4j.kernels.cuda.CudaStream;
import moe4j.kernels.cuda.DevicePool;
import moe4j.nn.Activation;
import moe4j.nn.MoEConfig;
import moe4j.nn.RouterKind;
import moe4j.nn.MoEMLP;
import moe4j.nn.RouterOutput;
import moe4j.nn.SigmoidTopKRouter;
import moe4j.ops.Ops;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * The MoE layer on a GPU against the same layer on the CPU: same weights, same input, same upstream
 * gradient and loss weights; norm-wise relative errors of the output, the losses, the input gradient
 * and every parameter gradient. The CPU layer is {@link MoEMLP} (packed experts, local dispatcher),
 * the oracle every other check of the project trusts.
 */
public final class CudaLayerComparison {
    private CudaLayerComparison() {}

    /** Errors by name ("output", "aux loss", "z loss", "input grad", "router grad", "gate grad", "up grad", "down grad"). */
    public record Result(Map<String, Double> errors, boolean sameRouting) {
        public double max() {
            return errors.values().stream().mapToDouble(Double::doubleValue).max().orElse(0);
        }
    }

    /** The cuda layer's config for a CPU config (shared experts and capacity dropping are not on the GPU path). */
    public static CudaMoELayer.Config cudaConfig(MoEConfig c) {
        if (c.sharedExperts() > 0) throw new IllegalArgumentException("the cuda layer has no shared expert (shared_experts = " + c.sharedExperts() + ")");
        if (c.capacityFactor() > 0) throw new IllegalArgumentException("the cuda layer drops no tokens (capacity factor " + c.capacityFactor() + ")");
        boolean sigmoid = c.router() == RouterKind.SIGMOID_TOPK;
        CudaMoELayer.ExpertActivation act = switch (c.activation()) {
            case SILU -> CudaMoELayer.ExpertActivation.SWIGLU;
            case GELU -> CudaMoELayer.ExpertActivation.GELU;
            case RELU -> CudaMoELayer.ExpertActivation.RELU;
        };
        return new CudaMoELayer.Config(c.dim(), c.hidden(), c.numExperts(), c.topK(), sigmoid, act, c.gradientScale(),
                sigmoid ? c.sequenceAuxLossWeight() : 1.0);
    }

    /** Copies the CPU layer's parameters into the cuda layer. */
    public static void copyWeights(MoEMLP cpu, CudaMoELayer gpu) {
        MoEMLP packed = cpu.packed() ? cpu : cpu.toPacked();
        float[] bias = packed.router() instanceof SigmoidTopKRouter s ? s.bias().toFloatArray() : null;
        gpu.setWeights(packed.router().gate().weight().toFloatArray(),
                packed.config().activation().gated() ? packed.gateW().toFloatArray() : null,
                packed.upW().toFloatArray(), packed.downW().toFloatArray(), bias);
    }

    /**
     * Runs both layers on {@code tokens} random tokens (seed {@code seed}) with upstream gradient G and
     * loss {@code Σ out⊙G + auxWeight·aux + zWeight·z}.
     */
    public static Result compare(MoEConfig config, int tokens, long seed, CudaMoELayer.Precision precision, double auxWeight,
                                 double zWeight, int gpuOrdinal) {
        return compare(config, tokens, seed, precision, auxWeight, zWeight, gpuOrdinal, CudaMoELayer.RowLayout.AUTO);
    }

    /** As {@link #compare(MoEConfig, int, long, CudaMoELayer.Precision, double, double, int)} with a given row layout. */
    public static Result compare(MoEConfig config, int tokens, long seed, CudaMoELayer.Precision precision, double auxWeight,
                                 double zWeight, int gpuOrdinal, CudaMoELayer.RowLayout layout) {
        MoEConfig packedConfig = config.toBuilder().packed(true).build();
        try (MemoryScope scope = MemoryScope.open()) {
            MoEMLP cpu = MoEMLP.build(packedConfig);
            cpu.train(true);
            if (cpu.router() instanceof SigmoidTopKRouter s) {
                // a non-zero selection bias, so that the check covers it
                Rng r = new Rng(seed + 2);
                for (int e = 0; e < config.numExperts(); e++) s.bias().set(e, (float) (0.05 * r.nextGaussian()));
            }
            Tensor x = Tensor.randn(new Rng(seed), 1.0, tokens, config.dim());
            if (precision == CudaMoELayer.Precision.BF16) {
                // the f32 reference computes on the values the bf16 layer holds, so that the difference is the
                // bf16 arithmetic (and not a routing decision flipped by rounded inputs)
                roundToBf16(x);
                cpu.parameters().forEach(CudaLayerComparison::roundToBf16);
            }
            x.requiresGrad(true);
            Tensor g = Tensor.randn(new Rng(seed + 1), 1.0, tokens, config.dim());
            Tensor out = cpu.forward(x);
            RouterOutput routed = cpu.router().lastOutput();
            Tensor total = Ops.add(Ops.sum(Ops.mul(out, g)),
                    Ops.add(Ops.scale(routed.auxLoss(), auxWeight), Ops.scale(routed.zLoss(), zWeight)));
            Autograd.backward(total);

            CudaStream stream = CudaStream.of(CudaGpu.of(gpuOrdinal));
            Map<String, Double> errors = new LinkedHashMap<>();
            boolean same;
            try (CudaMoELayer gpu = new CudaMoELayer(stream, cudaConfig(config), precision);
                 DevicePool.Scope step = stream.pool().openScope()) {
                copyWeights(cpu, gpu);
                gpu.lossWeights(auxWeight, zWeight);
                gpu.rowLayout(layout);
                long xd = gpu.toDevice(x.toFloatArray());
                CudaMoELayer.Step f = gpu.forward(xd, tokens);
                long gd = gpu.toDevice(g.toFloatArray());
                long dx = gpu.backward(f, gd);
                same = java.util.Arrays.equals(f.indices(), routed.indices().toIntArray());
                errors.put("output", err(gpu.download(f.out, (long) tokens * config.dim()), out.toFloatArray()));
                float[] losses = f.losses();
                errors.put("aux loss", err(new float[] {losses[0]}, new float[] {routed.auxLoss().get(0)}));
                errors.put("z loss", err(new float[] {losses[1]}, new float[] {routed.zLoss().get(0)}));
                errors.put("input grad", err(gpu.download(dx, (long) tokens * config.dim()), x.grad().toFloatArray()));
                float[][] grads = gpu.gradients();
                errors.put("router grad", err(grads[0], cpu.router().gate().weight().grad().toFloatArray()));
                if (config.activation() == Activation.SILU) errors.put("gate grad", err(grads[1], cpu.gateW().grad().toFloatArray()));
                errors.put("up grad", err(grads[2], cpu.upW().grad().toFloatArray()));
                errors.put("down grad", err(grads[3], cpu.downW().grad().toFloatArray()));
            }
            return new Result(errors, same);
        }
    }

    /** Rounds every element to the nearest bfloat16 (ties to even), in place. */
    static void roundToBf16(Tensor t) {
        for (long i = 0; i < t.numel(); i++) t.set(i, bf16(t.get(i)));
    }

    static float bf16(float v) {
        int u = Float.floatToRawIntBits(v);
        if ((u & 0x7fffffff) > 0x7f800000) return v;
        u += 0x7fff + ((u >>> 16) & 1);
        return Float.intBitsToFloat(u & 0xffff0000);
    }

    static double err(float[] actual, float[] expected) {
        double[] a = new double[actual.length];
        double[] b = new double[expected.length];
        for (int i = 0; i < a.length; i++) a[i] = actual[i];
        for (int i = 0; i < b.length; i++) b[i] = expected[i];
        if (a.length != b.length) throw new IllegalStateException("length " + a.length + " vs " + b.length);
        double e = GradCheck.relativeError(a, b);
        return Double.isNaN(e) ? Double.POSITIVE_INFINITY : e;
    }
}
