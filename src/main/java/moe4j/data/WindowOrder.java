package moe4j.data;

/** How a file-backed source picks its windows. */
public enum WindowOrder {
    /** Window {@code i} starts at a seeded uniformly random offset (windows may overlap). */
    RANDOM,
    /**
     * Window {@code i} is the {@code i}-th of back-to-back windows of stride {@code seqLen}, so that
     * the last target of one window is the first input of the next; wraps around after the last one.
     */
    SEQUENTIAL
}
