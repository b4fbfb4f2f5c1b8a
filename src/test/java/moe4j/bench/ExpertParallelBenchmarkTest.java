package moe4j.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import moe4j.distributed.launch.Backend;
import moe4j.nn.MoEConfig;
import moe4j.nn.MoEMLP;
import moe4j.nn.WireType;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import org.junit.jupiter.api.Test;

/**
 * The steps, timing and accounting of {@code bench ep --device cuda}, run here with in-JVM ranks on the CPU:
 * every rank routes, exchanges and computes; the row bytes per step are the four exchanges' (dispatch and
 * combine, forward and backward), which on average over ranks is four times the rows one dispatch sends to
 * peers, times D and the wire's element size; a bf16 wire halves them; the profiled step names the phases.
 */
class ExpertParallelBenchmarkTest {
    @Test
    void figuresOfTheGpuRunOnCpuRanks() {
        int d = 16;
        MoEConfig config = MoEConfig.builder(d, 24, 4, 2).packed(true).wire(WireType.F32).build();
        var f32 = ExpertParallelBenchmark.runOn(Backend.LOCAL, r -> Device.CPU, config, 2, 64, DType.F32, 0, 2, 1);
        var bf16 = ExpertParallelBenchmark.runOn(Backend.LOCAL, r -> Device.CPU, config.toBuilder().wire(WireType.BF16).build(), 2, 64,
                DType.F32, 0, 2, 1);
        assertEquals(DType.F32, f32.wire());
        assertEquals(DType.BF16, bf16.wire());
        long plainRows = f32.dispatch().rowsPerEntry();
        assertTrue(plainRows > 0 && f32.dispatch().rowsDeduplicated() > 0 && f32.dispatch().rowsDeduplicated() <= plainRows);
        // measured on the wire: the rows one per entry, no expert ids
        assertEquals(plainRows * d * 4, f32.dispatch().rowBytes(), 4.0 * d * 4, "one dispatch's rows, f32");
        assertEquals(0, f32.dispatch().idBytes());
        // the mean over two ranks of whole rows: within one row of the exact figure either way
        assertEquals(4.0 * plainRows * d * 4, f32.rowBytesSentPerRank(), 4.0 * d * 4, "four exchanges of the dispatched rows, f32");
        assertEquals(f32.rowBytesSentPerRank() / 2, bf16.rowBytesSentPerRank(), "a bf16 wire, the same routing");
        assertEquals(f32.dispatch().rowsPerEntry(), bf16.dispatch().rowsPerEntry());
        for (var r : new ExpertParallelBenchmark.GpuResult[] {f32, bf16}) {
            assertTrue(r.medianSecondsPerStep() > 0 && r.tflopsPerGpu() > 0 && r.buildSeconds() > 0, r.toString());
            assertTrue(r.allToAllSecondsPerStep() > 0 && r.allToAllGiBPerSecond() > 0, r.toString());
            for (String phase : new String[] {"router", "dispatch all-to-all", "combine all-to-all", MoEMLP.GROUPED_GEMM_PHASE}) {
                assertTrue(r.phaseSeconds().containsKey(phase), phase + " in " + r.phaseSeconds());
            }
        }
        assertEquals(64.0 * 2 * d * 2 / (1 << 20), bf16.mibPerExchange(), 1e-12);

        // with deduplication the measured dispatch is one row per (token, rank) pair, plus K ids with each
        var dedup = ExpertParallelBenchmark.runOn(Backend.LOCAL, r -> Device.CPU, config.toBuilder().dedup(true).build(), 2, 64,
                DType.F32, 0, 1, 0);
        assertEquals(f32.dispatch().rowsDeduplicated(), dedup.dispatch().rowsDeduplicated(), "the same routing");
        assertEquals(dedup.dispatch().rowsDeduplicated() * d * 4, dedup.dispatch().rowBytes(), 4.0 * d * 4, "one dispatch's rows, deduplicated");
        assertEquals(dedup.dispatch().rowsDeduplicated() * 2 * 4, dedup.dispatch().idBytes(), 2.0 * 4, "K = 2 ids per row");
        assertTrue(ExpertParallelBenchmark.gpuLine(dedup).contains(" dedup=on dispatch_bytes_to_peers=" + dedup.dispatch().rowBytes() + " "));
        String line = ExpertParallelBenchmark.gpuLine(bf16);
        assertTrue(line.matches("MOE4J_EP_GPU ranks=2 D=16 H=24 E=4 K=2 tokens_per_rank=64 dtype=f32 wire=bf16 median_step_ms=\\S+ "
                + "total_tokens_per_s=\\S+ TFLOPs_per_gpu=\\S+ a2a_MiB_per_exchange=\\S+ sent_MiB_per_rank_step=\\S+ "
                + "a2a_ms_per_step=\\S+ a2a_GiBps_per_rank=\\S+ dispatch_rows_to_peers=" + plainRows + " deduplicated=\\d+ dedup=off dispatch_bytes_to_peers=\\d+ "
                + "dispatch_id_bytes_to_peers=0 build_s=\\S+"),
                line);
    }
}
