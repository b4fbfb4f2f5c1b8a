package moe4j.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import moe4j.distributed.Distributed;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.SafeTensors;
import moe4j.train.StepMetrics;
import moe4j.train.TrainConfig;
import moe4j.train.Trainer;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The trainer on a device other than the CPU: the fake device computes with the CPU's kernels on memory
 * the host may not touch, so a run there must give the CPU run's bits, loss for loss and tensor for tensor
 * in its checkpoints, and a checkpoint written on either must resume on the other. This is what a GPU run
 * relies on (parameters moved to the device, batches copied there, checkpoints written through the host
 * one tensor at a time and loaded back onto the device), checked without a GPU.
 */
class DeviceTrainingTest {
    static final Device FAKE = new Device(FakeDevice.KIND, 0);

    @BeforeAll
    static void install() {
        FakeDevice.install();
    }

    static TrainConfig config(Path dir, long steps) {
        TrainConfig.Builder b = TrainConfig.defaults().steps(steps).batchSize(4).seqLen(16).lr(3e-3).warmupSteps(2).ep(1)
                .logEvery(1000).outputDir(dir.resolve("out")).checkpointDir(dir.resolve("ck")).keepLast(0);
        b.model().dim(32).nLayers(2).nHeads(4).nKvHeads(2).maxSeqLen(32).numExperts(4).moeTopK(2).ffnHidden(64)
                .moeExpertFfnMultiplier(0.5).moeRouter("sigmoid_topk").moePackedExperts(true).seed(3);
        return b.build();
    }

    static Trainer.Summary train(Device device, TrainConfig cfg, boolean resume) {
        return Distributed.run(1, Duration.ofSeconds(60), world -> {
            try (ExecutionContext ignored = ExecutionContext.enter(device, 1)) {
                return Trainer.run(cfg, world, resume, new Trainer.Listener() {});
            }
        }).get(0);
    }

    static void assertSameCheckpoints(Path a, Path b) throws Exception {
        for (String file : List.of("model.safetensors", "optimizer.safetensors")) {
            try (var x = SafeTensors.read(a.resolve(file)); var y = SafeTensors.read(b.resolve(file))) {
                assertEquals(x.names(), y.names(), file);
                for (String n : x.names()) {
                    assertArrayEquals(x.tensorAs(n, DType.F32).toFloatArray(), y.tensorAs(n, DType.F32).toFloatArray(), file + " " + n);
                }
            }
        }
    }

    static double[] losses(Trainer.Summary s) {
        return s.history().stream().mapToDouble(StepMetrics::loss).toArray();
    }

    @Test
    void aRunOnTheDeviceGivesTheCpuRunsBits(@TempDir Path dir) throws Exception {
        Trainer.Summary cpu = train(Device.CPU, config(dir.resolve("cpu"), 6), false);
        long kernelsBefore = FakeDevice.KERNEL_CALLS.get();
        long waitsBefore = FakeDevice.SYNCHRONIZE_CALLS.get();
        Trainer.Summary device = train(FAKE, config(dir.resolve("fake"), 6), false);
        assertTrue(FakeDevice.KERNEL_CALLS.get() - kernelsBefore > 1000, "the run computed on the device");
        assertArrayEquals(losses(cpu), losses(device));
        assertSameCheckpoints(cpu.lastCheckpoint(), device.lastCheckpoint());

        // the third step was profiled, waiting for the device at every phase boundary
        Trainer.StepBreakdown b = device.breakdown();
        assertEquals(3, b.step());
        assertTrue(FakeDevice.SYNCHRONIZE_CALLS.get() - waitsBefore > 20, "waits for the device: " + (FakeDevice.SYNCHRONIZE_CALLS.get() - waitsBefore));
        for (String phase : List.of("attention", "router", "optimizer", "gradient clip", "other")) {
            assertTrue(b.phaseSeconds().containsKey(phase), phase + " in " + b.phaseSeconds());
        }
        double sum = b.phaseSeconds().values().stream().mapToDouble(Double::doubleValue).sum();
        assertEquals(b.seconds(), sum, 1e-6 + 1e-3 * b.seconds(), "the phases and 'other' add up to the step");
    }

    @Test
    void checkpointsResumeAcrossDevices(@TempDir Path dir) throws Exception {
        Path straight = dir.resolve("straight");
        train(Device.CPU, config(straight, 3), false);
        Trainer.Summary reference = train(Device.CPU, config(straight, 6), true);
        for (Device[] pair : new Device[][] {{Device.CPU, FAKE}, {FAKE, Device.CPU}}) {
            Path run = dir.resolve(pair[0].kind() + "-" + pair[1].kind());
            train(pair[0], config(run, 3), false);
            Trainer.Summary resumed = train(pair[1], config(run, 6), true);
            assertEquals(4, resumed.firstStep());
            assertArrayEquals(losses(reference), losses(resumed), pair[0] + " then " + pair[1]);
            assertSameCheckpoints(reference.lastCheckpoint(), resumed.lastCheckpoint());
        }
        assertTrue(Files.exists(straight.resolve("ck/step-00000006")));
    }
}
