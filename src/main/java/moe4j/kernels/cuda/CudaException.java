package moe4j.kernels.cuda;

/**
 * A failed CUDA, cuBLAS or NVRTC call, named with the library's own error string, or a CUDA device
 * that cannot be used at all ({@link #unavailable}).
 */
public class CudaException extends RuntimeException {
    private final boolean unavailable;

    CudaException(String message) {
        this(message, false, null);
    }

    CudaException(String message, Throwable cause) {
        this(message, false, cause);
    }

    private CudaException(String message, boolean unavailable, Throwable cause) {
        super(message, cause);
        this.unavailable = unavailable;
    }

    /** No GPU, no driver or no CUDA library: one sentence saying which, for the command line. */
    static CudaException unavailable(String sentence, Throwable cause) {
        return new CudaException(sentence, true, cause);
    }

    /** Whether this says that CUDA cannot be used here at all (no GPU, driver or library), rather than a failed call. */
    public boolean unavailable() {
        return unavailable;
    }

    /** {@code library: call failed: NAME (description)}, the format of every failed call. */
    static String callFailed(String library, String call, String name, String description) {
        return library + ": " + call + " failed: " + name + (description == null || description.isBlank() ? "" : " (" + description + ")");
    }
}
