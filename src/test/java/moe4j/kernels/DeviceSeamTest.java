package moe4j.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;
import moe4j.autograd.Autograd;
import moe4j.nn.Routing;
import moe4j.ops.AttentionOps;
import moe4j.ops.GroupedMatmul;
import moe4j.ops.Ops;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import moe4j.train.AdamW;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The device seam, proved with {@link FakeDevice}: tensors on it refuse host access, so a computation
 * that runs there end to end touched its data only through kernels and explicit copies; and its kernels
 * are the CPU's, so its results must be the CPU's bits exactly.
 */
class DeviceSeamTest {
    static final Device FAKE = new Device(FakeDevice.KIND, 0);

    @BeforeAll
    static void install() {
        FakeDevice.install();
    }

    @Test
    void devicesParseAndPrint() {
        assertEquals(Device.CPU, Device.parse("cpu"));
        assertEquals(Device.cuda(1), Device.parse("cuda:1"));
        assertEquals(Device.cuda(0), Device.parse("cuda"));
        assertEquals("cpu", Device.CPU.toString());
        assertEquals("cuda:0", Device.cuda(0).toString());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Device.parse("gpu-1"));
        assertTrue(e.getMessage().contains("gpu-1"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Device.parse("cpu:1"));
        assertThrows(IllegalArgumentException.class, () -> Device.cuda(-1));
    }

    @Test
    void hostAccessToADeviceTensorIsRefusedWithTheWayOut() {
        Tensor t = Tensor.of(new float[] {1, 2, 3, 4}, 2, 2).to(FAKE);
        assertEquals(FAKE, t.device());
        for (Runnable access : List.<Runnable>of(() -> t.get(0), () -> t.set(0, 1f), () -> t.data(),
                () -> t.toFloatArray(), () -> t.rows(0, 1).get(0), () -> t.view(4).getInt(0))) {
            IllegalStateException e = assertThrows(IllegalStateException.class, access::run);
            assertTrue(e.getMessage().contains("fake:0") && e.getMessage().contains(".to(Device.CPU)"), e.getMessage());
        }
        assertArrayEquals(new float[] {1, 2, 3, 4}, t.to(Device.CPU).toFloatArray());
        assertArrayEquals(new float[] {3, 4}, t.rows(1, 2).to(Device.CPU).toFloatArray());
        assertEquals(3f, t.view(4).rows(2, 3).item());
        assertSame(t, t.to(FAKE));
    }

    @Test
    void opsRefuseTensorsOnDifferentDevices() {
        Tensor a = Tensor.of(new float[] {1, 2}, 1, 2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Ops.add(a, a.to(FAKE)));
        assertTrue(e.getMessage().contains("add") && e.getMessage().contains("fake:0") && e.getMessage().contains("cpu"),
                e.getMessage());
    }

    @Test
    void scopeClosesFreeDeviceMemoryAndPersistentMemoryStaysLive() {
        long before = FakeDevice.LIVE_BYTES.get();
        Tensor kept;
        try (MemoryScope scope = MemoryScope.open()) {
            Tensor.zeros(FAKE, 1000);
            kept = MemoryScope.persistent(() -> Tensor.zeros(FAKE, 10));
            assertEquals(before + 4040, FakeDevice.LIVE_BYTES.get());
        }
        assertEquals(before + 40, FakeDevice.LIVE_BYTES.get());
        kept.fill(2f);
        assertEquals(2f, kept.rows(9, 10).item());
    }

    /**
     * A small MoE-shaped step through every kernel group: RMSNorm, attention with rotary embedding, a
     * softmax router with top-k, the dispatch's grouping by expert ({@link Routing}) and token
     * permutation (index select / index add), the grouped expert
     * products with SwiGLU, the loss, the backward and an AdamW update. Inputs are made on the host and
     * copied over; every output and gradient is compared bit for bit with the same step on the CPU.
     */
    @Test
    void aTrainingStepOnTheDeviceGivesTheCpuBits() {
        Map<String, float[]> cpu = step(Device.CPU);
        long calls = FakeDevice.KERNEL_CALLS.get();
        Map<String, float[]> fake = step(FAKE);
        assertTrue(FakeDevice.KERNEL_CALLS.get() - calls > 40, "the step ran on the fake device's kernels");
        assertEquals(cpu.keySet(), fake.keySet());
        for (String name : cpu.keySet()) assertArrayEquals(cpu.get(name), fake.get(name), name);
    }

    private static Map<String, float[]> step(Device device) {
        int tokens = 12, dim = 8, heads = 2, experts = 3, topK = 2, hidden = 6, vocab = 5;
        Rng rng = new Rng(42);
        Function<Tensor, Tensor> param = t -> MemoryScope.persistent(() -> t.to(device)).requiresGrad(true);
        Map<String, Tensor> params = new LinkedHashMap<>();
        params.put("norm", param.apply(Tensor.rand(rng, 0.5, 1.5, dim)));
        params.put("wq", param.apply(Tensor.randn(rng, 0.3, dim, dim)));
        params.put("wk", param.apply(Tensor.randn(rng, 0.3, dim, heads * 2)));
        params.put("wv", param.apply(Tensor.randn(rng, 0.3, dim, heads * 2)));
        params.put("router", param.apply(Tensor.randn(rng, 0.5, dim, experts)));
        params.put("gate", param.apply(Tensor.randn(rng, 0.3, experts, dim, hidden)));
        params.put("up", param.apply(Tensor.randn(rng, 0.3, experts, dim, hidden)));
        params.put("down", param.apply(Tensor.randn(rng, 0.3, experts, hidden, dim)));
        params.put("head", param.apply(Tensor.randn(rng, 0.3, dim, vocab)));
        Tensor x0 = Tensor.randn(rng, 1, tokens, dim).to(device);
        Tensor targets = Tensor.ofInts(new int[] {0, 1, 2, 3, 4, -1, 0, 1, 2, 3, 4, 0}, tokens).to(device);
        Map<String, float[]> out = new LinkedHashMap<>();
        AdamW adam = new AdamW(params, Set.of(params.get("norm")), 0.9, 0.95, 1e-8, 0.1);
        try (MemoryScope scope = MemoryScope.open()) {
            Tensor x = Ops.rmsNorm(x0, params.get("norm"), 1e-6);
            Tensor q = AttentionOps.rope(Ops.reshape(Ops.matmul(x, params.get("wq")), 2, tokens / 2, 4, 2), 10000);
            Tensor k = AttentionOps.rope(Ops.reshape(Ops.matmul(x, params.get("wk")), 2, tokens / 2, 2, 2), 10000);
            Tensor v = Ops.reshape(Ops.matmul(x, params.get("wv")), 2, tokens / 2, 2, 2);
            Tensor h = Ops.add(x, Ops.reshape(AttentionOps.causalAttention(q, k, v), tokens, dim));
            Tensor probs = Ops.softmax(Ops.matmul(h, params.get("router")));
            Ops.TopK top = Ops.topK(probs, topK);
            Tensor weights = Ops.divRows(top.values(), Ops.sum(top.values(), 1));
            // the dispatch: entries grouped by expert on the device, only the counts come to the host
            Routing routing = Routing.sortByExpert(top.indices(), experts);
            int[] groupSizes = routing.rowsPerExpert();
            Tensor rows = Ops.indexSelect(h, routing.tokenOfRow());
            Tensor act = Ops.swiglu(GroupedMatmul.packed(rows, groupSizes, params.get("gate")),
                    GroupedMatmul.packed(rows, groupSizes, params.get("up")));
            Tensor expertOut = GroupedMatmul.packed(act, groupSizes, params.get("down"));
            Tensor moe = routing.weightAndCombine(expertOut, weights);
            Tensor logits = Ops.matmul(Ops.add(h, moe), params.get("head"));
            Tensor loss = Ops.add(Ops.crossEntropy(logits, targets),
                    Ops.scale(Ops.mean(Ops.logSumExp(logits)), 1e-3));
            out.put("loss", new float[] {loss.item()});
            out.put("indices", toFloats(top.indices().to(Device.CPU)));
            out.put("rows per expert", toFloats(Tensor.ofInts(groupSizes, experts)));
            out.put("logits", logits.to(Device.CPU).toFloatArray());
            Autograd.backward(loss);
            for (var e : params.entrySet()) {
                if (e.getValue().grad() == null) throw new AssertionError("no gradient for " + e.getKey() + " on " + device);
                out.put("grad " + e.getKey(), e.getValue().grad().to(Device.CPU).toFloatArray());
            }
        }
        adam.step(1e-2);
        for (var e : params.entrySet()) out.put("param " + e.getKey(), e.getValue().to(Device.CPU).toFloatArray());
        return out;
    }

    @Test
    void decodingAttentionAndGroupLimitedRoutingOnTheDeviceGiveTheCpuBits() {
        Map<String, float[]> cpu = decodingPieces(Device.CPU);
        long calls = FakeDevice.KERNEL_CALLS.get();
        Map<String, float[]> fake = decodingPieces(FAKE);
        assertTrue(FakeDevice.KERNEL_CALLS.get() - calls >= 6, "the pieces ran on the fake device's kernels");
        assertEquals(cpu.keySet(), fake.keySet());
        for (String name : cpu.keySet()) assertArrayEquals(cpu.get(name), fake.get(name), name);
    }

    /** Scaled and offset RoPE, sliding-window attention with its gradients, cached attention, group-limited selection. */
    private static Map<String, float[]> decodingPieces(Device device) {
        Rng rng = new Rng(7);
        Map<String, float[]> out = new LinkedHashMap<>();
        try (MemoryScope scope = MemoryScope.open()) {
            Tensor q = Tensor.randn(rng, 1, 1, 6, 4, 4).to(device).requiresGrad(true);
            Tensor k = Tensor.randn(rng, 1, 1, 6, 2, 4).to(device).requiresGrad(true);
            Tensor v = Tensor.randn(rng, 1, 1, 6, 2, 4).to(device).requiresGrad(true);
            Tensor qr = AttentionOps.rope(q, 500, 2.0, 3);
            Tensor attended = AttentionOps.slidingWindowAttention(qr, k, v, 3);
            out.put("window", attended.to(Device.CPU).toFloatArray());
            Autograd.backward(Ops.sum(Ops.mul(attended, attended)));
            for (Tensor t : List.of(q, k, v)) out.put("grad " + out.size(), t.grad().to(Device.CPU).toFloatArray());
            Tensor cached = AttentionOps.cachedAttention(Tensor.randn(rng, 1, 2, 4, 4).to(device),
                    Tensor.randn(rng, 1, 8, 2, 4).to(device), Tensor.randn(rng, 1, 8, 2, 4).to(device), 4, 3);
            out.put("cached", cached.to(Device.CPU).toFloatArray());
            Tensor scores = Tensor.randn(rng, 1, 5, 8).to(device);
            Tensor limited = Tensor.zerosLike(scores);
            Kernels.of(device).routing().limitToTopGroups(scores, 4, 2, limited);
            out.put("limited", limited.to(Device.CPU).toFloatArray());
        }
        return out;
    }

    private static float[] toFloats(Tensor ints) {
        int[] v = ints.toIntArray();
        float[] f = new float[v.length];
        for (int i = 0; i < v.length; i++) f[i] = v[i];
        return f;
    }

    @Test
    void anUnknownDeviceKindSaysNoBackendIsInstalled() {
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> Tensor.zeros(new Device("nosuch", 0), 3));
        assertTrue(e.getMessage().contains("nosuch:0"), e.getMessage());
        e = assertThrows(IllegalStateException.class, () -> Kernels.of(new Device("nosuch", 0)));
        assertTrue(e.getMessage().contains("nosuch"), e.getMessage());
        assertEquals(DType.F32, Tensor.zeros(FAKE, 1).dtype());
    }

    @Test
    void aReleasableDeviceTensorTakesAndGivesBackAllocatorMemoryAtOnce() {
        long before = FakeDevice.LIVE_BYTES.get();
        Tensor t = Tensor.releasable(FAKE, 2, 3);
        assertEquals(before, FakeDevice.LIVE_BYTES.get(), "released from the start: no memory yet");
        t.allocateStorage();
        assertEquals(before + 24, FakeDevice.LIVE_BYTES.get());
        assertArrayEquals(new float[6], t.to(Device.CPU).toFloatArray());
        t.copyFrom(Tensor.of(new float[] {1, 2, 3, 4, 5, 6}, 2, 3));
        assertArrayEquals(new float[] {1, 2, 3, 4, 5, 6}, t.to(Device.CPU).toFloatArray());
        t.releaseStorage();
        assertEquals(before, FakeDevice.LIVE_BYTES.get(), "freed at release, not when the GC gets to it");
        assertThrows(IllegalStateException.class, t::memory);
        assertThrows(IllegalStateException.class, () -> t.to(Device.CPU));
        t.allocateStorage();
        assertArrayEquals(new float[6], t.to(Device.CPU).toFloatArray(), "fresh memory is zeroed");
        t.releaseStorage();
    }
}
