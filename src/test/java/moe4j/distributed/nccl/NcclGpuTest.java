package moe4j.distributed.nccl;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.time.Duration;
import java.util.List;
import moe4j.distributed.CollectiveException;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.MeshSizes;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.distributed.Work;
import moe4j.distributed.launch.Backend;
import moe4j.kernels.DeviceBackend;
import moe4j.kernels.cuda.CudaDriver;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The NCCL process group on two GPUs of this machine, one rank thread each: every collective against
 * the result built on the host from what each rank sent, and the failure paths (a bad argument, a
 * stalled rank) ending every rank by the deadline.
 */
@Tag("gpu")
class NcclGpuTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(30);

    @BeforeAll
    static void needsTwoGpusAndNccl() {
        assumeTrue(CudaDriver.available(), "no CUDA GPU here");
        assumeTrue(CudaDriver.get().deviceCount() >= 2, "fewer than two GPUs here");
        boolean nccl;
        try {
            NcclLibrary.get();
            nccl = true;
        } catch (RuntimeException e) {
            nccl = false;
        }
        assumeTrue(nccl, "no NCCL library here");
    }

    /** Row i of what rank {@code src} sends: element c is src*1000 + i*10 + c (exact in float32). */
    private static float[] rows(int src, int count, int width, int firstRow) {
        float[] v = new float[count * width];
        for (int i = 0; i < count; i++) for (int c = 0; c < width; c++) v[i * width + c] = src * 1000 + (firstRow + i) * 10 + c;
        return v;
    }

    private static Tensor onGpu(ProcessGroup g, float[] v, int... shape) {
        return Tensor.of(v, shape).to(((NcclProcessGroup) g).device());
    }

    /** sends[i][j]: rows rank i sends rank j; checks every rank's output against the host layout. */
    private static void allToAllCase(int[][] sends, int width) {
        List<Boolean> ok = Backend.NCCL.run(2, TIMEOUT, g -> {
            int r = g.rank();
            int[] in = sends[r];
            int[] out = {sends[0][r], sends[1][r]};
            int inRows = in[0] + in[1];
            int outRows = out[0] + out[1];
            Tensor x = onGpu(g, rows(r, inRows, width, 0), inRows, width);
            Tensor y = Tensor.zeros(((NcclProcessGroup) g).device(), DType.F32, outRows, width);
            g.allToAllSingle(y, x, out, in);
            float[] expected = new float[outRows * width];
            int at = 0;
            for (int src = 0; src < 2; src++) {
                // rank src's rows for r start after the rows it sent to lower ranks
                int first = r == 0 ? 0 : sends[src][0];
                float[] part = rows(src, sends[src][r], width, first);
                System.arraycopy(part, 0, expected, at, part.length);
                at += part.length;
            }
            assertArrayEquals(expected, y.to(Device.CPU).toFloatArray(), "rank " + r + " splits " + java.util.Arrays.deepToString(sends));
            return true;
        });
        assertEquals(List.of(true, true), ok);
    }

    @Test
    void allToAllWithUnevenZeroAndEmptySplits() {
        allToAllCase(new int[][] {{2, 3}, {4, 1}}, 5);      // uneven
        allToAllCase(new int[][] {{2, 0}, {0, 4}}, 3);      // nothing crosses
        allToAllCase(new int[][] {{0, 3}, {0, 0}}, 7);      // rank 1 holds no rows, rank 0 sends it all
        allToAllCase(new int[][] {{0, 0}, {0, 0}}, 2);      // an empty exchange still completes
    }

    @Test
    void intRowsTravelBitExact() {
        List<int[]> got = Backend.NCCL.run(2, TIMEOUT, g -> {
            Device d = ((NcclProcessGroup) g).device();
            int r = g.rank();
            Tensor x = Tensor.ofInts(new int[] {r * 10 + 1, r * 10 + 2, Integer.MIN_VALUE + r, Integer.MAX_VALUE - r}, 4, 1).to(d);
            Tensor y = Tensor.zeros(d, DType.I32, 4, 1);
            g.allToAllSingle(y, x, new int[] {2, 2}, new int[] {2, 2});
            return y.to(Device.CPU).toIntArray();
        });
        assertArrayEquals(new int[] {1, 2, 11, 12}, got.get(0));
        assertArrayEquals(new int[] {Integer.MIN_VALUE, Integer.MAX_VALUE, Integer.MIN_VALUE + 1, Integer.MAX_VALUE - 1}, got.get(1));
    }

    @Test
    void reductionsGathersAndBroadcastMatchTheHostResult() {
        List<Boolean> ok = Backend.NCCL.run(2, TIMEOUT, g -> {
            Device d = ((NcclProcessGroup) g).device();
            int r = g.rank();
            float[] mine = {1 + r, -2 * r, 0.5f * r, 7};
            Tensor t = onGpu(g, mine, 2, 2);
            g.allReduce(t, ReduceOp.SUM);
            assertArrayEquals(new float[] {3, -2, 0.5f, 14}, t.to(Device.CPU).toFloatArray());
            Tensor m = onGpu(g, new float[] {r, -r}, 2, 1);
            g.allReduce(m, ReduceOp.MAX);
            assertArrayEquals(new float[] {1, 0}, m.to(Device.CPU).toFloatArray());
            Tensor a = onGpu(g, new float[] {2 * r, 4}, 2, 1);
            g.allReduce(a, ReduceOp.AVG);
            assertArrayEquals(new float[] {1, 4}, a.to(Device.CPU).toFloatArray());

            // even and uneven all-gather
            Tensor even = Tensor.zeros(d, DType.F32, 4, 3);
            g.allGather(even, onGpu(g, rows(r, 2, 3, 0), 2, 3));
            float[] evenRef = new float[12];
            System.arraycopy(rows(0, 2, 3, 0), 0, evenRef, 0, 6);
            System.arraycopy(rows(1, 2, 3, 0), 0, evenRef, 6, 6);
            assertArrayEquals(evenRef, even.to(Device.CPU).toFloatArray());
            int[] counts = {1, 3};
            Tensor uneven = Tensor.zeros(d, DType.F32, 4, 3);
            g.allGather(uneven, onGpu(g, rows(r, counts[r], 3, 0), counts[r], 3));
            float[] unevenRef = new float[12];
            System.arraycopy(rows(0, 1, 3, 0), 0, unevenRef, 0, 3);
            System.arraycopy(rows(1, 3, 3, 0), 0, unevenRef, 3, 9);
            assertArrayEquals(unevenRef, uneven.to(Device.CPU).toFloatArray());

            // reduce-scatter: rank q gets rows [q, q+1) of the sum
            Tensor rs = Tensor.zeros(d, DType.F32, 1, 2);
            g.reduceScatter(rs, onGpu(g, new float[] {r, 1, 10 * r, 2}, 2, 2), ReduceOp.SUM);
            assertArrayEquals(r == 0 ? new float[] {1, 2} : new float[] {10, 4}, rs.to(Device.CPU).toFloatArray());

            Tensor b = onGpu(g, new float[] {r + 0.25f, r - 3}, 2);
            g.broadcast(b, 1);
            assertArrayEquals(new float[] {1.25f, -2}, b.to(Device.CPU).toFloatArray());
            g.barrier();
            // CPU tensors travel over the host group
            Tensor host = Tensor.of(new float[] {r}, 1);
            g.allReduce(host, ReduceOp.SUM);
            assertEquals(1f, host.get(0));
            return true;
        });
        assertEquals(List.of(true, true), ok);
    }

    /**
     * The streams' lookup skips the process-wide GPU table once a thread has its stream: a rank thread that
     * last worked on the other GPU (whose context is then current) still queues and waits on its own.
     */
    @Test
    void aRankThatTouchedTheOtherGpuStillExchangesOnItsOwnStream() {
        List<float[]> got = Backend.NCCL.run(2, TIMEOUT, g -> {
            int r = g.rank();
            Device mine = ((NcclProcessGroup) g).device();
            Device other = Device.cuda(1 - r);
            Tensor x = onGpu(g, new float[] {10 * r, 10 * r + 1}, 2, 1);
            Tensor y = Tensor.zeros(mine, DType.F32, 2, 1);
            Tensor elsewhere = Tensor.of(new float[] {7}, 1).to(other); // leaves the other GPU's context current here
            assertEquals(7f, elsewhere.to(Device.CPU).get(0));
            Work w = g.allToAllSingleAsync(y, x, new int[] {1, 1}, new int[] {1, 1});
            w.await();
            assertTrue(DeviceBackend.find("cuda").streams().idle(mine));
            return y.to(Device.CPU).toFloatArray();
        });
        assertArrayEquals(new float[] {0, 10}, got.get(0));
        assertArrayEquals(new float[] {1, 11}, got.get(1));
    }

    @Test
    void asynchronousCollectivesRunInOrderOnTheRanksStream() {
        List<float[]> got = Backend.NCCL.run(2, TIMEOUT, g -> {
            Device d = ((NcclProcessGroup) g).device();
            int r = g.rank();
            Tensor x = onGpu(g, new float[] {r, r + 1}, 2, 1);
            Tensor y = Tensor.zeros(d, DType.F32, 2, 1);
            Work exchange = g.allToAllSingleAsync(y, x, new int[] {1, 1}, new int[] {1, 1});
            // queued after the exchange on the same stream: reduces what it received
            Work sum = g.allReduceAsync(y, ReduceOp.SUM);
            sum.await();
            exchange.await();
            assertTrue(exchange.isDone() && sum.isDone());
            return y.to(Device.CPU).toFloatArray();
        });
        // rank 0 received {0, 1}, rank 1 {1, 2}; summed over ranks
        assertArrayEquals(new float[] {1, 3}, got.get(0));
        assertArrayEquals(new float[] {1, 3}, got.get(1));
    }

    @Test
    void subGroupsOfATwoByOneMesh() {
        List<Boolean> ok = Backend.NCCL.run(2, TIMEOUT, g -> {
            int r = g.rank();
            Device d = ((NcclProcessGroup) g).device();
            // singletons: each rank alone
            ProcessGroup alone = g.split(r, 0, "alone");
            assertInstanceOf(NcclProcessGroup.class, alone);
            assertEquals(1, alone.size());
            Tensor t = onGpu(g, new float[] {5 + r}, 1);
            alone.allReduce(t, ReduceOp.SUM);
            assertEquals(5f + r, t.to(Device.CPU).get(0));
            // both ranks, order reversed by key
            ProcessGroup reversed = g.split(0, -r, "reversed");
            assertEquals(1 - r, reversed.rank());
            Tensor x = onGpu(g, rows(r, 2, 2, 0), 2, 2);
            Tensor y = Tensor.zeros(d, DType.F32, 2, 2);
            reversed.allToAllSingle(y, x, new int[] {1, 1}, new int[] {1, 1});
            float[] ref = new float[4];
            System.arraycopy(rows(1, 1, 2, reversed.rank()), 0, ref, 0, 2); // from reversed rank 0 = world rank 1
            System.arraycopy(rows(0, 1, 2, reversed.rank()), 0, ref, 2, 2);
            assertArrayEquals(ref, y.to(Device.CPU).toFloatArray());
            // a rank left out gets null
            ProcessGroup onlyOne = g.subgroup(new int[] {1}, "one");
            if (r == 0) assertNull(onlyOne);
            else assertEquals(1, onlyOne.size());
            // the mesh dimensions of a (2, 1) mesh and a (1, 2) mesh are sub-groups of the NCCL world
            DeviceMesh replicate = DeviceMesh.create(g, MeshSizes.defaults().dpReplicate(2).dpShard(1));
            DeviceMesh ep = DeviceMesh.create(g, MeshSizes.defaults().dpShard(1).ep(2));
            for (ProcessGroup dim : List.of(replicate.get("dp_replicate").group(), ep.get("ep").group())) {
                assertInstanceOf(NcclProcessGroup.class, dim);
                Tensor s = onGpu(g, new float[] {1 << r}, 1);
                dim.allReduce(s, ReduceOp.SUM);
                assertEquals(3f, s.to(Device.CPU).get(0), dim.name());
            }
            return true;
        });
        assertEquals(List.of(true, true), ok);
    }

    @Test
    void aBadArgumentOnOneRankEndsEveryRank() {
        List<String> got = Backend.NCCL.run(2, TIMEOUT, g -> {
            int r = g.rank();
            Device d = ((NcclProcessGroup) g).device();
            Tensor x = Tensor.zeros(d, DType.F32, 2, 4);
            Tensor y = Tensor.zeros(d, DType.F32, 2, 4);
            int[] in = r == 0 ? new int[] {1, 2} : new int[] {1, 1}; // rank 0's splits sum to 3 of 2 rows
            try {
                g.allToAllSingle(y, x, new int[] {1, 1}, in);
                return "no failure";
            } catch (CollectiveException e) {
                return e.getMessage();
            }
        });
        assertTrue(got.get(0).contains("allToAllSingle") && got.get(0).contains("sums to 3"), got.get(0));
        assertTrue(got.get(1).contains("allToAllSingle") && got.get(1).contains("rank 0"), got.get(1));
    }

    @Test
    void aStalledRankEndsEveryRankAtTheDeadline() {
        Duration deadline = Duration.ofSeconds(3);
        long start = System.nanoTime();
        List<String> got = Backend.NCCL.run(2, deadline, g -> {
            int r = g.rank();
            Device d = ((NcclProcessGroup) g).device();
            Tensor x = Tensor.zeros(d, DType.F32, 2, 4);
            Tensor y = Tensor.zeros(d, DType.F32, 2, 4);
            try {
                if (r == 1) {
                    Thread.sleep(deadline.toMillis() + 3000); // stalls past rank 0's deadline
                }
                g.allToAllSingle(y, x, new int[] {1, 1}, new int[] {1, 1});
                return "no failure";
            } catch (CollectiveException e) {
                long waitFor = System.nanoTime() + 10_000_000_000L;
                while (!DeviceBackend.find("cuda").streams().idle(d) && System.nanoTime() < waitFor) Thread.sleep(10);
                return (DeviceBackend.find("cuda").streams().idle(d) ? "idle: " : "BUSY: ") + e.getMessage();
            }
        });
        double seconds = (System.nanoTime() - start) / 1e9;
        assertTrue(got.get(0).startsWith("idle: ") && got.get(0).contains("allToAllSingle") && got.get(0).contains("did not complete within 3.0 s")
                && got.get(0).contains("'world'"), got.get(0));
        assertTrue(got.get(1).startsWith("idle: ") && got.get(1).contains("allToAllSingle") && got.get(1).contains("broken"), got.get(1));
        assertTrue(seconds < 20, "the stalled run took " + seconds + " s");
    }
}
