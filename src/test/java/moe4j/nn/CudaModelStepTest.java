package moe4j.nn;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import moe4j.autograd.Autograd;
import moe4j.kernels.DeviceBackend;
import moe4j.kernels.cuda.CudaDriver;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import moe4j.train.AdamW;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * One training step of a tiny MoE transformer (a dense block and an MoE block; experts as a module list
 * with the softmax router, and packed with the sigmoid router, gradient scaling and a capacity drop) on
 * the cuda device, moved there with {@link Module#to}, against the same step on the CPU: the loss, every
 * parameter's gradient and every parameter after one AdamW update within 1e-4 norm-wise. Skipped
 * without a GPU.
 */
@Tag("gpu")
class CudaModelStepTest {
    static final Device GPU = Device.cuda(0);
    static final int B = 2, S = 12, V = 29;

    @BeforeAll
    static void needsGpu() {
        assumeTrue(CudaDriver.available(), "no CUDA GPU here");
        DeviceBackend.find("cuda");
    }

    static ModelConfig config(boolean packed) {
        ModelConfig.Builder b = ModelConfig.builder().dim(16).nLayers(2).nHeads(4).nKvHeads(2).vocabSize(V).maxSeqLen(16).ffnHidden(24)
                .numExperts(4).moeTopK(2).moeFrequency(2).initStd(0.3).moeAuxLossWeight(0.1).moeRouterZLossWeight(0.05).seed(11)
                .moePackedExperts(packed);
        if (packed) b.moeRouter("sigmoid_topk").moeGradientScale(true).moeCapacityFactor(1.5);
        return b.build();
    }

    /** Loss, gradients ("grad." + name) and updated parameters of one step on {@code device}, copied to the host. */
    static Map<String, Tensor> step(Device device, ModelConfig config, Tensor tokens, Tensor targets) {
        MoETransformer model = new MoETransformer(config);
        model.to(device);
        MoETransformer.Loss loss = model.loss(tokens.to(device), targets.to(device));
        Autograd.backward(loss.total());
        Map<String, Tensor> out = new LinkedHashMap<>();
        out.put("loss", loss.total().to(Device.CPU));
        Map<String, Tensor> params = model.namedParameters();
        params.forEach((name, p) -> {
            assertEquals(device, p.device(), name + " was moved");
            if (p.grad() != null) out.put("grad." + name, p.grad().to(Device.CPU));
        });
        Set<Tensor> noDecay = Collections.newSetFromMap(new IdentityHashMap<>());
        params.forEach((name, p) -> { if (name.endsWith("norm.weight")) noDecay.add(p); });
        new AdamW(params, noDecay, 0.9, 0.95, 1e-8, 0.1).step(1e-3);
        params.forEach((name, p) -> out.put(name, p.to(Device.CPU)));
        return out;
    }

    static Map<String, Tensor> run(Device device, boolean packed) {
        Rng rng = new Rng(99);
        int[] ids = new int[B * S], next = new int[B * S];
        for (int i = 0; i < ids.length; i++) ids[i] = rng.nextInt(V);
        for (int i = 0; i < ids.length; i++) next[i] = i % 5 == 4 ? -1 : rng.nextInt(V);
        return step(device, config(packed), Tensor.ofInts(ids, B, S), Tensor.ofInts(next, B, S));
    }

    @ParameterizedTest(name = "packed={0}")
    @ValueSource(booleans = {false, true})
    void oneStepMatchesTheCpuStep(boolean packed) {
        Map<String, Tensor> cpu = run(Device.CPU, packed);
        Map<String, Tensor> gpu = run(GPU, packed);
        assertEquals(cpu.keySet(), gpu.keySet(), "the same parameters have gradients");
        assertTrue(cpu.size() > 20, "parameters compared: " + cpu.size());
        for (String name : cpu.keySet()) {
            double[] a = gpu.get(name).toDoubleArray(), b = cpu.get(name).toDoubleArray();
            double diff = 0, norm = 0;
            for (int i = 0; i < b.length; i++) {
                diff += (a[i] - b[i]) * (a[i] - b[i]);
                norm += b[i] * b[i];
            }
            double err = Math.sqrt(diff) / Math.max(Math.sqrt(norm), 1e-6);
            assertTrue(err <= 1e-4, name + ": relative error " + err + " (norm " + Math.sqrt(norm) + ")");
        }
    }
}
