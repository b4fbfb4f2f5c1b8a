package moe4j.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import moe4j.autograd.Autograd;
import moe4j.distributed.Distributed;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.distributed.Work;
import moe4j.nn.Dispatched;
import moe4j.nn.MoEConfig;
import moe4j.nn.MoEMLP;
import moe4j.nn.WireType;
import moe4j.parallel.ExpertParallel;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The deduplicating expert-parallel dispatch on {@link FakeDevice} (tensors that refuse host access,
 * the CPU's kernels): dispatch, the experts, combine and backward touch rows, ids and weights only through
 * kernels and explicit copies, give the CPU run's bits, and copy to the host exactly once per dispatch
 * (the counts that size the exchanges), nothing in combine or backward. The in-JVM group moves host
 * memory, so the ranks exchange through a group that stages device tensors on the host, as a device's
 * own collectives would not need to; its copies are counted apart.
 */
class DedupDispatchOnDeviceTest {
    static final Device FAKE = new Device(FakeDevice.KIND, 0);
    static final int D = 8, H = 6, E = 4;

    @BeforeAll
    static void install() {
        FakeDevice.install();
    }

    record RankRun(Map<String, float[]> results, long[] hostCopies) {}

    @ParameterizedTest(name = "P={0} K={1}")
    @CsvSource({"2, 1", "2, 2", "2, 4", "4, 2", "4, 4"})
    void dedupOnTheDeviceGivesTheCpuBitsWithOneHostCopyPerDispatch(int p, int k) {
        List<RankRun> cpu = run(Device.CPU, p, k);
        List<RankRun> fake = run(FAKE, p, k);
        for (int r = 0; r < p; r++) {
            Map<String, float[]> expected = cpu.get(r).results();
            Map<String, float[]> actual = fake.get(r).results();
            assertEquals(expected.keySet(), actual.keySet());
            for (String name : expected.keySet()) assertArrayEquals(expected.get(name), actual.get(name), "rank " + r + " " + name);
            assertArrayEquals(new long[] {1, 0, 0, 0}, fake.get(r).hostCopies(),
                    "rank " + r + ": copies to the host in dispatch, the experts, combine and backward");
        }
    }

    static List<RankRun> run(Device device, int p, int k) {
        MoEConfig config = MoEConfig.builder(D, H, E, k).packed(true).initStd(0.5).seed(3).dedup(true).build();
        int perRank = E / p;
        return Distributed.run(p, Duration.ofSeconds(30), world -> {
            int r = world.rank();
            MoEMLP moe = MoEMLP.buildExperts(config, r * perRank, perRank);
            moe.to(device);
            StagingGroup group = new StagingGroup(world);
            var dispatcher = new ExpertParallel.AllToAllDispatcher(group, E, r * perRank, perRank, p, 0, WireType.F32, true);

            int tokens = r == 1 ? 0 : 4 + 3 * r; // rank 1 sends nothing but still receives
            int[] ids = new int[tokens * k];
            for (int t = 0; t < tokens; t++) {
                for (int s = 0; s < k; s++) ids[t * k + s] = (t + s * 3) % 7 == 5 ? -1 : (3 * t + r + s) % E; // distinct per token, some dropped
            }
            Tensor x = Tensor.randn(Rng.forStream(9, r), 1.0, tokens, D).to(device).requiresGrad(true);
            Tensor weights = Tensor.randn(Rng.forStream(10, r), 1.0, tokens, k).to(device).requiresGrad(true);
            Tensor indices = Tensor.ofInts(ids, tokens, k).to(device);
            Tensor gradOut = Tensor.randn(Rng.forStream(11, r), 1.0, tokens, D).to(device);

            long[] copies = new long[4];
            long mark = group.unstagedCopies();
            Dispatched<ExpertParallel.AllToAllDispatcher.Exchange> dispatched = dispatcher.dispatch(x, indices);
            copies[0] = group.unstagedCopies() - mark;
            mark = group.unstagedCopies();
            Tensor expertOut = moe.computeExperts(dispatched, false);
            copies[1] = group.unstagedCopies() - mark;
            mark = group.unstagedCopies();
            Tensor out = dispatcher.combine(expertOut, dispatched, weights);
            copies[2] = group.unstagedCopies() - mark;
            mark = group.unstagedCopies();
            Autograd.backward(out, gradOut);
            copies[3] = group.unstagedCopies() - mark;
            assertTrue(device.equals(Device.CPU) || group.staged > 0, "the exchanges went through the staging group");

            Map<String, float[]> results = new LinkedHashMap<>();
            results.put("out", out.to(Device.CPU).toFloatArray());
            results.put("x.grad", x.grad().to(Device.CPU).toFloatArray());
            results.put("weights.grad", weights.grad().to(Device.CPU).toFloatArray());
            // the experts' weights (the router is not part of a dispatch with given routing)
            moe.namedParameters().forEach((n, t) -> {
                if (n.endsWith("_w")) results.put(n + ".grad", t.grad().to(Device.CPU).toFloatArray());
            });
            assertEquals(3, results.size() - 3, "up, down and gate weights");
            return new RankRun(results, copies);
        });
    }

    /**
     * The in-JVM group for tensors on a device: each all-to-all's input comes to the host, goes through the
     * group, and its output goes back; everything else passes through. Counts the copies it makes, so that the
     * test sees the copies the code under test makes ({@link #unstagedCopies}).
     */
    static final class StagingGroup implements ProcessGroup {
        private final ProcessGroup inner;
        long staged;

        StagingGroup(ProcessGroup inner) {
            this.inner = inner;
        }

        /** Copies to the host this thread made, less the staging's own. */
        long unstagedCopies() {
            return FakeDevice.COPIES_TO_HOST.get()[0] - staged;
        }

        @Override
        public void allToAllSingle(Tensor out, Tensor in, int[] outSplits, int[] inSplits) {
            if (in.device().equals(Device.CPU)) {
                inner.allToAllSingle(out, in, outSplits, inSplits);
                return;
            }
            Tensor hostIn = in.to(Device.CPU);
            staged++;
            Tensor hostOut = Tensor.zeros(Device.CPU, out.dtype(), out.shape());
            inner.allToAllSingle(hostOut, hostIn, outSplits, inSplits);
            out.copyFrom(hostOut);
        }

        @Override
        public Work allToAllSingleAsync(Tensor out, Tensor in, int[] outSplits, int[] inSplits) {
            allToAllSingle(out, in, outSplits, inSplits);
            return Work.completed();
        }

        @Override public int[] allToAll(int[] send, int chunk) { return inner.allToAll(send, chunk); }
        @Override public int rank() { return inner.rank(); }
        @Override public int size() { return inner.size(); }
        @Override public int[] globalRanks() { return inner.globalRanks(); }
        @Override public String name() { return inner.name(); }
        @Override public Duration timeout() { return inner.timeout(); }
        @Override public Work allReduceAsync(Tensor t, ReduceOp op) { return inner.allReduceAsync(t, op); }
        @Override public void allGather(Tensor out, Tensor in) { inner.allGather(out, in); }
        @Override public Work allGatherAsync(Tensor out, Tensor in) { return inner.allGatherAsync(out, in); }
        @Override public void reduceScatter(Tensor out, Tensor in, ReduceOp op) { inner.reduceScatter(out, in, op); }
        @Override public void broadcast(Tensor t, int root) { inner.broadcast(t, root); }
        @Override public void barrier() { inner.barrier(); }
        @Override public ProcessGroup split(int color, int key, String name) { return inner.split(color, key, name); }
        @Override public void abort(String reason) { inner.abort(reason); }
    }
}
