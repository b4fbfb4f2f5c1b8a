package moe4j.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import moe4j.autograd.Autograd;
import moe4j.autograd.GradCheck;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.MeshSizes;
import moe4j.distributed.launch.Backend;
import moe4j.kernels.ExecutionContext;
import moe4j.kernels.cuda.CudaDriver;
import moe4j.nn.MoEConfig;
import moe4j.nn.MoEMLP;
import moe4j.nn.WireType;
import moe4j.parallel.ExpertParallel;
import moe4j.parallel.TrafficCountingGroup;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Expert parallelism on two GPUs in mixed precision, as {@code bench ep --device cuda} runs it: each rank
 * builds only its experts, routes with the layer's own router on its GPU and computes with bf16 products.
 * Against the CPU's float32 non-EP layer on the same bf16-rounded input and weights (so both routers see
 * the same logits up to summation order), per rank: output and input gradient within the spec's bf16
 * tolerance, 2e-2 norm-wise, on either wire; a bf16 wire sends exactly half the bytes of an f32 one. Then
 * the benchmark itself on a small shape: every figure of its line is there and positive.
 */
@Tag("gpu")
class EpBf16GpuTest {
    static final double BF16_TOLERANCE = 2e-2;

    @BeforeAll
    static void needsTwoGpus() {
        assumeTrue(CudaDriver.available(), "no CUDA GPU here");
        assumeTrue(CudaDriver.get().deviceCount() >= 2, "fewer than two GPUs here");
    }

    record RankRun(double[] out, double[] gradX, long rowBytes) {}

    @ParameterizedTest(name = "packed={0}")
    @CsvSource({"true", "false"})
    void bf16EpOnTwoGpusMatchesTheCpuLayerAndTheBf16WireHalvesTheBytes(boolean packed) {
        MoEConfig base = MoEConfig.builder(64, 96, 8, 2).packed(packed).initStd(0.1).seed(7).build();
        int[] tokens = {200, 150};
        List<Tensor> xs = new ArrayList<>();
        List<Tensor> gs = new ArrayList<>();
        for (int r = 0; r < 2; r++) {
            xs.add(roundedToBf16(Tensor.randn(Rng.forStream(21, r), 1.0, tokens[r], 64)));
            gs.add(Tensor.randn(Rng.forStream(22, r), 1.0, tokens[r], 64));
        }
        MoEMLP reference = MoEMLP.build(base);
        roundParameters(reference);

        List<RankRun> f32Wire = runOnTwoGpus(base.toBuilder().wire(WireType.F32).build(), xs, gs);
        List<RankRun> bf16Wire = runOnTwoGpus(base.toBuilder().wire(WireType.AUTO).build(), xs, gs);
        for (int r = 0; r < 2; r++) {
            Tensor x = xs.get(r).copy().requiresGrad(true);
            Tensor out = reference.forward(x);
            Autograd.backward(out, gs.get(r));
            double[] refOut = out.toDoubleArray();
            double[] refGrad = x.grad().toDoubleArray();
            reference.zeroGrad();
            for (var run : List.of(f32Wire.get(r), bf16Wire.get(r))) {
                double outErr = GradCheck.relativeError(run.out(), refOut);
                double gradErr = GradCheck.relativeError(run.gradX(), refGrad);
                assertTrue(outErr <= BF16_TOLERANCE, "rank " + r + " output: relative error " + outErr);
                assertTrue(gradErr <= BF16_TOLERANCE, "rank " + r + " input gradient: relative error " + gradErr);
            }
            assertTrue(f32Wire.get(r).rowBytes() > 0, "rank " + r + " sent rows");
            assertEquals(f32Wire.get(r).rowBytes() / 2, bf16Wire.get(r).rowBytes(), "rank " + r + ": bytes on the bf16 wire");
        }
    }

    @ParameterizedTest(name = "wire={0}")
    @CsvSource({"auto", "f32"})
    void theBenchmarkReportsEveryFigure(String wire) {
        MoEConfig config = MoEConfig.builder(256, 512, 8, 2).packed(true).wire(wire).build();
        ExpertParallelBenchmark.GpuResult r = ExpertParallelBenchmark.runOnGpus(config, 2, 1024, DType.BF16, 1, 3, 1);
        assertEquals(wire.equals("auto") ? DType.BF16 : DType.F32, r.wire());
        assertTrue(r.medianSecondsPerStep() > 0 && r.tflopsPerGpu() > 0, r.toString());
        assertTrue(r.rowBytesSentPerRank() > 0 && r.allToAllSecondsPerStep() > 0 && r.allToAllGiBPerSecond() > 0, r.toString());
        assertTrue(r.phaseSeconds().containsKey("router") && r.phaseSeconds().containsKey("dispatch all-to-all"),
                r.phaseSeconds().toString());
        assertTrue(r.dispatch().rowsPerEntry() >= r.dispatch().rowsDeduplicated() && r.dispatch().rowsDeduplicated() > 0);
        String line = ExpertParallelBenchmark.gpuLine(r);
        assertTrue(line.startsWith("MOE4J_EP_GPU ranks=2 D=256 H=512 E=8 K=2 tokens_per_rank=1024 dtype=bf16 wire="), line);
        assertTrue(line.contains(" a2a_GiBps_per_rank=") && line.contains(" TFLOPs_per_gpu="), line);
    }

    static List<RankRun> runOnTwoGpus(MoEConfig config, List<Tensor> xs, List<Tensor> gs) {
        return Backend.NCCL.run(2, Duration.ofMinutes(2), world -> {
            Device gpu = Device.cuda(world.rank());
            try (ExecutionContext ignored = ExecutionContext.enter(gpu, 1, DType.BF16)) {
                MoEMLP moe = MoEMLP.buildExperts(config, world.rank() * 4, 4);
                roundParameters(moe);
                ExpertParallel.apply(moe, DeviceMesh.create(world, MeshSizes.defaults().ep(2)));
                moe.to(gpu);
                TrafficCountingGroup traffic = ExpertParallel.countTraffic(moe);
                Tensor x = xs.get(world.rank()).to(gpu).requiresGrad(true);
                Tensor out = moe.forward(x);
                Autograd.backward(out, gs.get(world.rank()).to(gpu));
                return new RankRun(out.to(Device.CPU).toDoubleArray(), x.grad().to(Device.CPU).toDoubleArray(), traffic.rowBytes());
            }
        });
    }

    static Tensor roundedToBf16(Tensor t) {
        return t.to(DType.BF16).to(DType.F32);
    }

    /** Every parameter of a host layer replaced by its bf16-rounded value, in place. */
    static void roundParameters(MoEMLP moe) {
        for (Tensor p : moe.parameters()) p.copyFrom(roundedToBf16(p));
    }
}
