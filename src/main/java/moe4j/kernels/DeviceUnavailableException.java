package moe4j.kernels;

/**
 * A device that cannot be used on this machine at all (no GPU, no driver, no library), as opposed to a
 * failed call on a working device. Its message is one sentence saying which; the command line reports
 * it as a usage error (exit code 2).
 */
public class DeviceUnavailableException extends RuntimeException {
    public DeviceUnavailableException(String sentence, Throwable cause) {
        super(sentence, cause);
    }
}
