package moe4j.kernels.cuda;

import moe4j.kernels.DeviceUnavailableException;

/**
 * A failed CUDA, cuBLAS or NVRTC call, named with the library's own error string. That CUDA cannot be
 * used here at all is a {@link DeviceUnavailableException} instead ({@link #unavailable}).
 */
public class CudaException extends RuntimeException {
    CudaException(String message) {
        super(message);
    }

    CudaException(String message, Throwable cause) {
        super(message, cause);
    }

    /** No GPU, no driver or no CUDA library: one sentence saying which, for the command line. */
    static DeviceUnavailableException unavailable(String sentence, Throwable cause) {
        return new DeviceUnavailableException(sentence, cause);
    }

    /** {@code library: call failed: NAME (description)}, the format of every failed call. */
    static String callFailed(String library, String call, String name, String description) {
        return library + ": " + call + " failed: " + name + (description == null || description.isBlank() ? "" : " (" + description + ")");
    }
}
