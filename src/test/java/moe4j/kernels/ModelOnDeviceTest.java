package moe4j.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import moe4j.autograd.Autograd;
import moe4j.nn.ModelConfig;
import moe4j.nn.MoETransformer;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import moe4j.train.AdamW;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A whole MoE transformer moved to a device with {@code Module.to}, proved on {@link FakeDevice} (whose
 * tensors refuse host access and whose kernels are the CPU's): a training step there (forward, loss with
 * the router losses, backward, AdamW) touches parameters and activations only through kernels and
 * explicit copies, and gives the CPU step's bits, for both expert layouts.
 */
class ModelOnDeviceTest {
    static final Device FAKE = new Device(FakeDevice.KIND, 0);
    static final int B = 2, S = 6, V = 13;

    @BeforeAll
    static void install() {
        FakeDevice.install();
    }

    static ModelConfig config(boolean packed) {
        ModelConfig.Builder b = ModelConfig.builder().dim(8).nLayers(2).nHeads(2).nKvHeads(1).vocabSize(V).maxSeqLen(8).ffnHidden(12)
                .numExperts(4).moeTopK(2).moeFrequency(2).initStd(0.3).moeAuxLossWeight(0.1).moeRouterZLossWeight(0.05).seed(3)
                .moePackedExperts(packed);
        if (packed) b.moeRouter("sigmoid_topk").moeGradientScale(true).moeCapacityFactor(1.5);
        return b.build();
    }

    static Map<String, float[]> step(Device device, boolean packed) {
        MoETransformer model = new MoETransformer(config(packed));
        assertSame(model, model.to(device));
        Rng rng = new Rng(8);
        int[] ids = new int[B * S], next = new int[B * S];
        for (int i = 0; i < ids.length; i++) ids[i] = rng.nextInt(V);
        for (int i = 0; i < ids.length; i++) next[i] = i % 5 == 4 ? -1 : rng.nextInt(V);
        MoETransformer.Loss loss = model.loss(Tensor.ofInts(ids, B, S).to(device), Tensor.ofInts(next, B, S).to(device));
        Autograd.backward(loss.total());
        Map<String, float[]> out = new LinkedHashMap<>();
        out.put("loss", loss.total().to(Device.CPU).toFloatArray());
        Map<String, Tensor> params = model.namedParameters();
        Set<Tensor> noDecay = Collections.newSetFromMap(new IdentityHashMap<>());
        params.forEach((name, p) -> {
            assertEquals(device, p.device(), name);
            assertTrue(p.requiresGrad(), name);
            if (p.grad() != null) out.put("grad " + name, p.grad().to(Device.CPU).toFloatArray());
            if (name.endsWith("norm.weight")) noDecay.add(p);
        });
        new AdamW(params, noDecay, 0.9, 0.95, 1e-8, 0.1).step(1e-2);
        params.forEach((name, p) -> out.put(name, p.to(Device.CPU).toFloatArray()));
        return out;
    }

    @ParameterizedTest(name = "packed={0}")
    @ValueSource(booleans = {false, true})
    void aModelStepOnTheDeviceGivesTheCpuBits(boolean packed) {
        Map<String, float[]> cpu = step(Device.CPU, packed);
        long calls = FakeDevice.KERNEL_CALLS.get();
        Map<String, float[]> fake = step(FAKE, packed);
        assertTrue(FakeDevice.KERNEL_CALLS.get() - calls > 100, "the step ran on the device's kernels");
        assertEquals(cpu.keySet(), fake.keySet());
        assertTrue(cpu.keySet().stream().filter(k -> k.startsWith("grad ")).count() >= 15, cpu.keySet().toString());
        for (String name : cpu.keySet()) assertArrayEquals(cpu.get(name), fake.get(name), name);
    }

    @Test
    void movingKeepsNamesOrderAndValuesAndLeavesTheHostModelAlone() {
        MoETransformer host = new MoETransformer(config(true));
        MoETransformer moved = new MoETransformer(config(true));
        moved.to(FAKE);
        List<String> names = List.copyOf(host.namedParameters().keySet());
        assertEquals(names, List.copyOf(moved.namedParameters().keySet()));
        for (String n : names) {
            assertArrayEquals(host.namedParameters().get(n).toFloatArray(), moved.namedParameters().get(n).to(Device.CPU).toFloatArray(), n);
        }
        Tensor before = host.namedParameters().get(names.get(0));
        assertSame(host, host.to(Device.CPU));
        assertSame(before, host.namedParameters().get(names.get(0)), "a parameter already on the device is kept");
    }
}
