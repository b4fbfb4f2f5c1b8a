package moe4j.distributed.nccl;

/** A failed NCCL call: names the call, NCCL's result enumerator and its description, and NCCL's last error message. */
final class NcclException extends RuntimeException {
    private final int result;

    NcclException(String call, int result, String description, String lastError) {
        super(message(call, result, description, lastError));
        this.result = result;
    }

    NcclException(String message, Throwable cause) {
        super("nccl: " + message, cause);
        this.result = -1;
    }

    /** The {@code ncclResult_t} returned, or -1 when the call itself could not be made. */
    int result() {
        return result;
    }

    static String message(String call, int result, String description, String lastError) {
        StringBuilder m = new StringBuilder("nccl: ").append(call).append(" failed with ").append(NcclLibrary.resultName(result));
        if (description != null && !description.isBlank()) m.append(" (").append(description).append(')');
        if (lastError != null && !lastError.isBlank()) m.append(": ").append(lastError);
        return m.toString();
    }
}
