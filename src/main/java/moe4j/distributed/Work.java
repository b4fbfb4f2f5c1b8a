package moe4j.distributed;

/**
 * A collective started by one of the {@code ...Async} methods of {@link ProcessGroup}. Its buffers
 * belong to the collective until {@link #await()} returns: do not read the output or write the input
 * before that.
 */
public interface Work {
    /** Waits for the collective to finish; throws the {@link CollectiveException} it ended with, if any. */
    void await();

    /** Whether the collective has finished (successfully or not); never blocks. */
    boolean isDone();

    /** A handle for work that is already complete. */
    static Work completed() {
        return new Work() {
            @Override
            public void await() {}

            @Override
            public boolean isDone() {
                return true;
            }
        };
    }
}
