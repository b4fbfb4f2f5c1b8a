package moe4j.kernels;

import moe4j.tensor.Device;
import moe4j.tensor.DeviceMemory;

/**
 * The native handles that a library working beside a backend's kernels needs: a collective library
 * (NCCL) reads and writes tensors' device memory on the calling thread's stream, ordered with the kernels
 * queued there. Offered by backends whose devices have streams ({@link DeviceBackend#streams()}); the
 * handles are the backend's own (for CUDA: a device pointer, a {@code CUstream}).
 */
public interface DeviceStreams {
    /** The device address of the first byte of {@code memory}. */
    long address(DeviceMemory memory);

    /**
     * The calling thread's stream on {@code device}, made on first use; the device's context is made
     * current on this thread, as a library called next expects.
     */
    long stream(Device device);

    /** Whether everything queued so far on the calling thread's stream of {@code device} has run; never blocks. */
    boolean idle(Device device);
}
