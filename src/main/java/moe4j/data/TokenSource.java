package moe4j.data;

/**
 * A deterministic source of token windows for next-token prediction.
 *
 * <p>Window {@code index} is a fixed function of the source's seed and {@code index} alone: no hidden
 * cursor, so any rank can compute any window and a resumed run sees the same data. {@link DataLoader}
 * numbers the windows of step {@code n} as {@code n * globalBatch + row}, turns them into batches and
 * shards those over data-parallel ranks.
 *
 * <p>Implementations are immutable after construction and safe to share between threads (one source
 * serves all in-JVM ranks).
 */
public interface TokenSource {

    /** A short human-readable description, e.g. {@code synthetic(seed=1)} or {@code text:/data/tiny.txt}. */
    String name();

    /** Token ids produced are in {@code [0, vocabSize())}. */
    int vocabSize();

    /**
     * Fills {@code window} (length {@code seqLen + 1}) with window {@code index}: the inputs are
     * {@code window[0, seqLen)} and the targets {@code window[1, seqLen + 1)}.
     */
    void window(long index, int[] window);

    /**
     * Refuses window lengths this source cannot serve (e.g. a file shorter than the window), with a
     * message naming the source and the sizes. {@link DataLoader} calls it once, up front.
     */
    default void checkWindowLength(int length) {
        if (length < 2) {
            throw new IllegalArgumentException(name() + ": a window needs at least 2 tokens (seqLen >= 1), got "
                    + length);
        }
    }
}
