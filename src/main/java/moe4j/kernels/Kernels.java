package moe4j.kernels;

import java.util.Map;
import java.util.ServiceLoader;
import java.util.concurrent.ConcurrentHashMap;
import moe4j.tensor.Device;
import moe4j.tensor.Tensor;

/**
 * The numeric kernels of one device, in groups. Operations reach kernels only through this interface,
 * chosen by their tensors' device: {@code Kernels.on("matmul", a, b).matmul().gemm(...)}. Every device's
 * set, the CPU's included, comes from its {@link DeviceBackend}, so this package never names an
 * implementation ({@code kernels.cpu}, {@code kernels.cuda}).
 *
 * <p>Kernels take tensors (a GPU implementation reads their device memory) and write their results into
 * output tensors the caller allocated on the same device; they are issued in order on the calling
 * thread's stream and never read device data on the host, except where a method says it returns a
 * host value.
 */
public interface Kernels {
    Device device();

    MatmulKernels matmul();

    ElementwiseKernels elementwise();

    ReductionKernels reductions();

    IndexKernels indexing();

    RoutingKernels routing();

    AttentionKernels attention();

    OptimizerKernels optimizer();

    /**
     * Returns once the work the calling thread queued on this device is done (its stream drained): for
     * timing on an asynchronous device. The CPU computes as it is called, so there is nothing to wait for.
     */
    default void synchronize() {}

    /**
     * Starts timing each kernel the calling thread queues on this device, until {@link #stopKernelTiming}.
     * A device that computes as it is called (the CPU) times nothing.
     */
    default void startKernelTiming() {}

    /** Waits for the device and returns the kernels timed since {@link #startKernelTiming}; null where nothing is timed. */
    default KernelTiming stopKernelTiming() {
        return null;
    }

    /** The kernels of {@code device}; its backend is found and installed on first use. */
    static Kernels of(Device device) {
        Kernels cached = Backends.BY_DEVICE.get(device); // the hot path: one map read per op
        if (cached != null) return cached;
        return Backends.BY_DEVICE.computeIfAbsent(device, d -> DeviceBackend.find(d.kind()).kernels(d));
    }

    /**
     * The kernels of the device all of {@code tensors} are on (null entries are skipped).
     *
     * @throws IllegalArgumentException naming {@code op} when they are on different devices
     */
    static Kernels on(String op, Tensor... tensors) {
        Device device = null;
        for (Tensor t : tensors) {
            if (t == null) continue;
            if (device == null) {
                device = t.device();
            } else if (!device.equals(t.device())) {
                StringBuilder where = new StringBuilder();
                for (Tensor u : tensors) {
                    if (u == null) continue;
                    if (!where.isEmpty()) where.append(", ");
                    where.append(u.dtype()).append(u.shapeString()).append(" on ").append(u.device());
                }
                throw new IllegalArgumentException(op + ": tensors are on different devices (" + where
                        + "); copy them to one device with .to(device)");
            }
        }
        return of(device == null ? Device.CPU : device);
    }

    /** The kernel sets made so far, by device. */
    final class Backends {
        private Backends() {}

        static final Map<Device, Kernels> BY_DEVICE = new ConcurrentHashMap<>();
        static final Map<String, DeviceBackend> BY_KIND = new ConcurrentHashMap<>();

        static DeviceBackend load(String kind) {
            for (DeviceBackend b : ServiceLoader.load(DeviceBackend.class)) {
                if (b.kind().equals(kind)) return b;
            }
            return null;
        }
    }
}
