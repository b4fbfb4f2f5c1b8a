package moe4j.distributed;

/**
 * A collective that could not complete: a peer failed, left, never arrived before the deadline, or
 * called a different collective or with arguments that do not agree with this rank's. Every rank of
 * the group gets one; after it the group is broken and every later collective on it fails at once.
 */
public class CollectiveException extends RuntimeException {
    private final String collective;
    private final String group;
    private final int rank;

    public CollectiveException(String collective, String group, int rank, int groupSize, long call, String detail) {
        this(collective, group, rank, groupSize, call, detail, null);
    }

    public CollectiveException(String collective, String group, int rank, int groupSize, long call, String detail,
            Throwable cause) {
        super(collective + " on group '" + group + "' (rank " + rank + " of " + groupSize + ", call #" + call + "): "
                + detail, cause);
        this.collective = collective;
        this.group = group;
        this.rank = rank;
    }

    /** The collective's name, e.g. {@code allToAllSingle}. */
    public String collective() {
        return collective;
    }

    /** The name of the process group it ran on. */
    public String group() {
        return group;
    }

    /** The rank (within the group) that raised it. */
    public int rank() {
        return rank;
    }
}
