package moe4j.train;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import moe4j.autograd.Autograd;
import moe4j.kernels.DeviceBackend;
import moe4j.kernels.cuda.CudaDriver;
import moe4j.ops.AttentionOps;
import moe4j.ops.Ops;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * One training step of a small dense attention model written with the differentiable ops (RMSNorm,
 * projections, RoPE, causal grouped-query attention, output projection, cross-entropy with ignored
 * targets plus a log-softmax term; backward; AdamW) on the cuda device against the same step on the
 * CPU: the loss, every parameter's gradient and every updated parameter within 1e-4 norm-wise. It runs
 * the reduction, attention and optimizer kernels through autograd as training uses them. Skipped
 * without a GPU.
 */
@Tag("gpu")
class CudaDenseStepTest {
    static final Device GPU = Device.cuda(0);
    static final int B = 2, S = 23, D = 48, HQ = 4, HKV = 2, HD = 12, V = 37;

    @BeforeAll
    static void needsGpu() {
        assumeTrue(CudaDriver.available(), "no CUDA GPU here");
        DeviceBackend.find("cuda");
    }

    static Map<String, Tensor> initialParameters(Rng rng) {
        Map<String, Tensor> p = new LinkedHashMap<>();
        Tensor norm = Tensor.randn(rng, 0.2, D);
        for (int i = 0; i < D; i++) norm.set(i, 1f + norm.get(i));
        p.put("norm", norm);
        p.put("wq", Tensor.randn(rng, 0.3, D, HQ * HD));
        p.put("wk", Tensor.randn(rng, 0.3, D, HKV * HD));
        p.put("wv", Tensor.randn(rng, 0.3, D, HKV * HD));
        p.put("wo", Tensor.randn(rng, 0.3, HQ * HD, V));
        return p;
    }

    static Tensor loss(Map<String, Tensor> p, Tensor x, Tensor targets) {
        Tensor h = Ops.rmsNorm(x, p.get("norm"), 1e-6);
        Tensor q = AttentionOps.rope(Ops.reshape(Ops.matmul(h, p.get("wq")), B, S, HQ, HD), 10000.0);
        Tensor k = AttentionOps.rope(Ops.reshape(Ops.matmul(h, p.get("wk")), B, S, HKV, HD), 10000.0);
        Tensor v = Ops.reshape(Ops.matmul(h, p.get("wv")), B, S, HKV, HD);
        Tensor attended = Ops.reshape(AttentionOps.causalAttention(q, k, v), B * S, HQ * HD);
        Tensor logits = Ops.matmul(attended, p.get("wo"));
        return Ops.add(Ops.crossEntropy(logits, targets), Ops.scale(Ops.mean(Ops.logSoftmax(logits)), -0.01));
    }

    /** Loss, gradients ("grad." + name) and updated parameters of one step on {@code device}, copied to the host. */
    static Map<String, Tensor> step(Device device, Map<String, Tensor> init, Tensor x, Tensor targets) {
        Map<String, Tensor> p = new LinkedHashMap<>();
        init.forEach((name, t) -> {
            Tensor copy = Tensor.zeros(device, DType.F32, t.shape());
            copy.copyFrom(t);
            p.put(name, copy.requiresGrad(true));
        });
        Tensor loss = loss(p, x.to(device), targets.to(device));
        Autograd.backward(loss);
        Map<String, Tensor> result = new LinkedHashMap<>();
        result.put("loss", loss.to(Device.CPU));
        p.forEach((name, t) -> result.put("grad." + name, t.grad().to(Device.CPU)));
        new AdamW(p, Set.of(p.get("norm")), 0.9, 0.95, 1e-8, 0.1).step(1e-2);
        p.forEach((name, t) -> result.put(name, t.to(Device.CPU)));
        return result;
    }

    @Test
    void oneStepMatchesTheCpuStep() {
        Rng rng = new Rng(2026);
        Map<String, Tensor> init = initialParameters(rng);
        Tensor x = Tensor.randn(rng, 1.0, B * S, D);
        int[] ids = new int[B * S];
        for (int i = 0; i < ids.length; i++) ids[i] = i % 7 == 3 ? -1 : (int) (rng.nextDouble() * V);
        Tensor targets = Tensor.ofInts(ids, B * S);
        Map<String, Tensor> cpu = step(Device.CPU, init, x, targets);
        Map<String, Tensor> gpu = step(GPU, init, x, targets);
        for (String name : cpu.keySet()) {
            double[] a = gpu.get(name).toDoubleArray(), b = cpu.get(name).toDoubleArray();
            double diff = 0, norm = 0;
            for (int i = 0; i < b.length; i++) {
                diff += (a[i] - b[i]) * (a[i] - b[i]);
                norm += b[i] * b[i];
            }
            double err = Math.sqrt(diff) / Math.max(Math.sqrt(norm), 1e-30);
            assertTrue(norm > 0, name + " is zero on the CPU: the comparison would prove nothing");
            assertTrue(err <= 1e-4, name + ": relative error " + err);
        }
    }
}
