package moe4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.google.gson.JsonParser;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import moe4j.autograd.GradCheck;
import moe4j.kernels.cuda.CudaDriver;
import moe4j.tensor.DType;
import moe4j.tensor.SafeTensors;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code moe4j train --device cuda} end to end, against the CPU run of the same config and seed: in f32
 * every step's loss and every parameter and AdamW moment of the final checkpoint within 1e-4 (norm-wise);
 * checkpoints resumed across devices; the bf16 loss curve within 2% of the f32 one (20-step means); two GPUs with expert
 * parallelism, replicated or sharded data parallelism or tensor parallelism equal to one GPU on the global batch.
 * Skipped without a GPU.
 */
@Tag("gpu")
class CudaTrainingTest {
    static final double F32_TOLERANCE = 1e-4;

    @BeforeAll
    static void needsGpu() {
        assumeTrue(CudaDriver.available(), "no CUDA GPU here");
    }

    /** A small MoE model: dense and MoE blocks, the sigmoid router's bias moving, packed experts, a capacity limit. */
    static String config(String router, boolean packed) {
        return """
                [model]
                dim = 64
                n_layers = 3
                n_heads = 4
                n_kv_heads = 2
                vocab_size = 256
                max_seq_len = 64
                ffn_hidden = 128
                moe_expert_ffn_multiplier = 0.5
                num_experts = 8
                moe_top_k = 2
                moe_frequency = 1
                moe_router = "%s"
                moe_packed_experts = %s
                moe_aux_loss_weight = 0.01
                moe_router_z_loss_weight = 0.001
                seed = 5

                [train]
                steps = 20
                batch_size = 8
                seq_len = 32
                lr = 3e-3
                min_lr = 3e-4
                warmup_steps = 3
                seed = 5
                log_every = 100

                [parallel]
                ep = 1
                """.formatted(router, packed);
    }

    /** Runs {@code train} with {@code config} and the extra options; returns the run's output folder. */
    static Path train(Path dir, String name, String config, String... options) throws Exception {
        Path file = dir.resolve(name + ".toml");
        Files.writeString(file, config);
        Path out = dir.resolve(name);
        String[] args = Stream.concat(Stream.of("train", "--config", file.toString(), "--output-dir", out.toString(),
                "--checkpoint-dir", out.resolve("ck").toString(), "--keep-last", "0"), Stream.of(options)).toArray(String[]::new);
        Object[] r = TrainCommandTest.run(args);
        assertEquals(0, r[0], name + ": " + r[1]);
        return out;
    }

    static List<Double> losses(Path out) throws Exception {
        List<Double> losses = new ArrayList<>();
        for (String line : Files.readAllLines(out.resolve("metrics.jsonl"))) {
            losses.add(JsonParser.parseString(line).getAsJsonObject().get("loss").getAsDouble());
        }
        return losses;
    }

    /** Every tensor of both files of the two runs' checkpoints of {@code step} within {@code tol}, norm-wise. */
    static void assertSameState(Path a, Path b, int step, double tol) throws Exception {
        for (String file : List.of("model.safetensors", "optimizer.safetensors")) {
            Path ca = a.resolve("ck").resolve(String.format("step-%08d", step)).resolve(file);
            Path cb = b.resolve("ck").resolve(String.format("step-%08d", step)).resolve(file);
            try (var x = SafeTensors.read(ca); var y = SafeTensors.read(cb)) {
                assertEquals(x.names(), y.names(), file);
                assertTrue(x.names().size() > 10, file + " holds " + x.names().size() + " tensors");
                for (String n : x.names()) {
                    double err = GradCheck.relativeError(x.tensorAs(n, DType.F32).toDoubleArray(), y.tensorAs(n, DType.F32).toDoubleArray());
                    assertTrue(err <= tol, a.getFileName() + " vs " + b.getFileName() + ", " + file + " " + n + ": relative difference " + err);
                }
            }
        }
    }

    static void assertSameLosses(List<Double> expected, List<Double> actual, double tol) {
        assertEquals(expected.size(), actual.size(), "steps logged");
        for (int i = 0; i < expected.size(); i++) {
            double rel = Math.abs(actual.get(i) - expected.get(i)) / Math.abs(expected.get(i));
            assertTrue(rel <= tol, "step " + (i + 1) + ": loss " + actual.get(i) + " vs " + expected.get(i) + " (relative " + rel + ")");
        }
    }

    @Test
    void f32TwentyStepsOnOneGpuEqualTheCpuRun(@TempDir Path dir) throws Exception {
        for (String[] variant : new String[][] {{"softmax_topk", "false"}, {"sigmoid_topk", "true"}}) {
            String cfg = config(variant[0], Boolean.parseBoolean(variant[1]));
            Path cpu = train(dir, "cpu-" + variant[0], cfg, "--device", "cpu");
            Path gpu = train(dir, "gpu-" + variant[0], cfg, "--device", "cuda", "--dtype", "f32");
            assertSameLosses(losses(cpu), losses(gpu), F32_TOLERANCE);
            assertSameState(cpu, gpu, 20, F32_TOLERANCE);
        }
    }

    @Test
    void checkpointsResumeOnTheOtherDevice(@TempDir Path dir) throws Exception {
        String cfg = config("sigmoid_topk", true).replace("steps = 20", "steps = 8");
        String longer = cfg.replace("steps = 8", "steps = 16");
        // the reference: eight steps on the CPU, resumed on the CPU to sixteen
        Path cpuCpu = train(dir, "cpu-cpu", cfg, "--device", "cpu");
        train(dir, "cpu-cpu", longer, "--device", "cpu", "--resume");
        Path cpuGpu = train(dir, "cpu-gpu", cfg, "--device", "cpu");
        train(dir, "cpu-gpu", longer, "--device", "cuda", "--resume");
        Path gpuCpu = train(dir, "gpu-cpu", cfg, "--device", "cuda");
        train(dir, "gpu-cpu", longer, "--device", "cpu", "--resume");
        assertSameLosses(losses(cpuCpu), losses(cpuGpu), F32_TOLERANCE);
        assertSameLosses(losses(cpuCpu), losses(gpuCpu), F32_TOLERANCE);
        assertSameState(cpuCpu, cpuGpu, 16, F32_TOLERANCE);
        assertSameState(cpuCpu, gpuCpu, 16, F32_TOLERANCE);
    }

    @Test
    void bf16LossCurveStaysWithinTwoPercentOfF32(@TempDir Path dir) throws Exception {
        // a steadier run than the other tests' (larger batch, lower rate), so that the curves compare training, not chaos
        String cfg = config("softmax_topk", true).replace("steps = 20", "steps = 200").replace("dim = 64", "dim = 128")
                .replace("batch_size = 8", "batch_size = 16").replace("lr = 3e-3", "lr = 1e-3").replace("min_lr = 3e-4", "min_lr = 1e-4");
        List<Double> f32 = losses(train(dir, "f32", cfg, "--device", "cuda", "--dtype", "f32"));
        List<Double> bf16 = losses(train(dir, "bf16", cfg, "--device", "cuda", "--dtype", "bf16"));
        assertEquals(200, bf16.size());
        // single steps of a small batch are noisy: the curves are compared over windows of twenty steps
        double worstStep = 0;
        for (int i = 0; i < 200; i++) worstStep = Math.max(worstStep, Math.abs(bf16.get(i) - f32.get(i)) / f32.get(i));
        for (int w = 0; w < 200; w += 20) {
            double a = 0, b = 0;
            for (int i = w; i < w + 20; i++) {
                a += f32.get(i);
                b += bf16.get(i);
            }
            double rel = Math.abs(b - a) / a;
            assertTrue(rel <= 0.02, "steps " + (w + 1) + "-" + (w + 20) + ": bf16 mean loss " + b / 20 + ", f32 " + a / 20
                    + " (relative " + rel + "; worst single step " + worstStep + ")");
        }
        // and bf16 is not f32 under another name: the products did round
        assertTrue(worstStep > 0, "bf16 and f32 runs gave identical losses: the bf16 products did not run");
        System.out.printf("bf16 vs f32 over 200 steps: worst single-step relative difference %.4f%n", worstStep);
    }

    @Test
    void twoGpusTrainLikeOneOnTheGlobalBatch(@TempDir Path dir) throws Exception {
        assumeTrue(CudaDriver.get().deviceCount() >= 2, "needs two GPUs");
        // every mesh is tried, and every mismatch reported together with the mesh it came from
        List<String> mismatches = new ArrayList<>();
        for (boolean packed : new boolean[] {false, true}) {
            String cfg = config("softmax_topk", packed);
            Path one = train(dir, "one-" + packed, cfg, "--device", "cuda");
            for (String[] mesh : new String[][] {{"--ep", "2"}, {"--dp-replicate", "2"}, {"--dp-shard", "2"}, {"--tp", "2"}}) {
                Path two = train(dir, "two" + mesh[0] + "-" + packed, cfg, "--device", "cuda", mesh[0], mesh[1]);
                try {
                    assertSameLosses(losses(one), losses(two), F32_TOLERANCE);
                    assertSameState(one, two, 20, F32_TOLERANCE);
                } catch (AssertionError e) {
                    mismatches.add(mesh[0] + " 2" + (packed ? ", packed experts" : "") + ": " + e.getMessage());
                }
            }
        }
        assertTrue(mismatches.isEmpty(), String.join("\n", mismatches));
    }
}
