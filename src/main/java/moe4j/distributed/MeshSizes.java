package moe4j.distributed;

/**
 * The sizes of the parallelism dimensions, by name: start from {@link #defaults()} (every size 1,
 * dp_shard taking whatever ranks remain) and set the ones that differ, e.g.
 * {@code MeshSizes.defaults().dpReplicate(2).ep(4)}. {@link MeshShape#of(int, MeshSizes)} checks them
 * against the world size.
 *
 * @param dpShard a size, or {@link #REST} for the ranks that remain
 */
public record MeshSizes(int pp, int dpReplicate, int dpShard, int cp, int tp, int ep) {
    /** The dp_shard value meaning "the world size divided by all the other sizes". */
    public static final int REST = -1;

    public static MeshSizes defaults() {
        return new MeshSizes(1, 1, REST, 1, 1, 1);
    }

    public MeshSizes pp(int size) {
        return new MeshSizes(size, dpReplicate, dpShard, cp, tp, ep);
    }

    public MeshSizes dpReplicate(int size) {
        return new MeshSizes(pp, size, dpShard, cp, tp, ep);
    }

    /** A dp_shard size, or {@link #REST}. */
    public MeshSizes dpShard(int size) {
        return new MeshSizes(pp, dpReplicate, size, cp, tp, ep);
    }

    public MeshSizes cp(int size) {
        return new MeshSizes(pp, dpReplicate, dpShard, size, tp, ep);
    }

    public MeshSizes tp(int size) {
        return new MeshSizes(pp, dpReplicate, dpShard, cp, size, ep);
    }

    public MeshSizes ep(int size) {
        return new MeshSizes(pp, dpReplicate, dpShard, cp, tp, size);
    }
}
