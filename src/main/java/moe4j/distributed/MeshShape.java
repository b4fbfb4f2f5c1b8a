package moe4j.distributed;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The named dimensions a world of ranks is laid out over, validated against the world size.
 *
 * <p>Dimensions come in the fixed order {@code pp, dp_replicate, dp_shard, cp, ep, tp}, and only
 * those of size > 1 are kept, except that a {@code dp_shard} of size 1 is kept when {@code tp > 1}
 * or {@code ep > 1}, so expert- and tensor-parallel meshes always have a data-parallel dimension in
 * front of them. Ranks are laid out row-major: the last dimension varies fastest, so with dims
 * {@code (dp_shard S, ep P, tp TP)} rank = {@code (s·P + e)·TP + t}. ({@code cp}, context
 * parallelism, sits between {@code dp_shard} and {@code ep}; with {@code cp = 1} it does not appear.)
 */
public final class MeshShape {
    public static final List<String> ORDER = List.of("pp", "dp_replicate", "dp_shard", "cp", "ep", "tp");

    private final int worldSize;
    private final List<String> names;
    private final int[] sizes;

    private MeshShape(int worldSize, List<String> names, int[] sizes) {
        this.worldSize = worldSize;
        this.names = List.copyOf(names);
        this.sizes = sizes;
    }

    /**
     * The mesh of {@code worldSize} ranks for the given parallelism sizes ({@link MeshSizes#REST} for
     * dp_shard: the ranks that remain). Errors use the texts users of the reference framework know.
     */
    public static MeshShape of(int worldSize, MeshSizes sizes) {
        int pp = sizes.pp();
        int dpReplicate = sizes.dpReplicate();
        int dpShard = sizes.dpShard();
        int cp = sizes.cp();
        int tp = sizes.tp();
        int ep = sizes.ep();
        if (worldSize < 1) throw new IllegalArgumentException("world_size must be >= 1, got " + worldSize);
        if (dpShard == 0 || dpShard < MeshSizes.REST) throw new IllegalArgumentException("dp_shard must be -1 (auto) or positive");
        String[] names = {"dp_replicate", "tp", "pp", "cp", "ep"};
        int[] values = {dpReplicate, tp, pp, cp, ep};
        for (int i = 0; i < names.length; i++) {
            if (values[i] < 1) throw new IllegalArgumentException(names[i] + " must be >= 1");
        }
        int shard = dpShard;
        if (shard == MeshSizes.REST) {
            long other = (long) dpReplicate * tp * pp * cp * ep;
            if (worldSize % other != 0) {
                throw new IllegalArgumentException("world_size (" + worldSize + ") not divisible by dp_replicate*tp*pp*cp*ep ("
                        + other + ")");
            }
            shard = (int) (worldSize / other);
        }
        long product = (long) dpReplicate * shard * tp * pp * cp * ep;
        if (product != worldSize) {
            throw new IllegalArgumentException("Parallelism dimensions (" + dpReplicate + " × " + shard + " × " + tp + " × "
                    + pp + " × " + cp + " × " + ep + " = " + product + ") do not match world_size (" + worldSize + ")");
        }
        int[] all = {pp, dpReplicate, shard, cp, ep, tp};
        List<String> kept = new ArrayList<>();
        List<Integer> keptSizes = new ArrayList<>();
        for (int i = 0; i < ORDER.size(); i++) {
            String name = ORDER.get(i);
            boolean keep = all[i] > 1 || (name.equals("dp_shard") && (tp > 1 || ep > 1));
            if (keep) {
                kept.add(name);
                keptSizes.add(all[i]);
            }
        }
        return new MeshShape(worldSize, kept, keptSizes.stream().mapToInt(Integer::intValue).toArray());
    }

    public int worldSize() {
        return worldSize;
    }

    /** The kept dimensions, outermost first. */
    public List<String> dimNames() {
        return names;
    }

    public boolean hasDim(String name) {
        return names.contains(name);
    }

    /** The size of dimension {@code name}; throws if the mesh does not have it (see {@link #hasDim}). */
    public int size(String name) {
        return sizes[index(name)];
    }

    /** How far apart in rank two ranks are whose coordinate in dimension {@code i} differs by one. */
    int stride(int i) {
        int s = 1;
        for (int j = i + 1; j < sizes.length; j++) s *= sizes[j];
        return s;
    }

    int index(String name) {
        int i = names.indexOf(name);
        if (i < 0) {
            throw new IllegalArgumentException("the mesh has no dimension '" + name + "'; its dimensions are " + names);
        }
        return i;
    }

    /** The coordinates of {@code rank}, one per dimension. */
    public int[] coordinates(int rank) {
        if (rank < 0 || rank >= worldSize) {
            throw new IllegalArgumentException("rank " + rank + " outside a mesh of " + worldSize + " ranks");
        }
        int[] c = new int[sizes.length];
        for (int i = 0; i < sizes.length; i++) c[i] = rank / stride(i) % sizes[i];
        return c;
    }

    /** The rank at {@code coordinates} (row-major). */
    public int rank(int... coordinates) {
        if (coordinates.length != sizes.length) {
            throw new IllegalArgumentException("expected " + sizes.length + " coordinates " + names + ", got "
                    + Arrays.toString(coordinates));
        }
        int r = 0;
        for (int i = 0; i < sizes.length; i++) {
            if (coordinates[i] < 0 || coordinates[i] >= sizes[i]) {
                throw new IllegalArgumentException("coordinate " + coordinates[i] + " of '" + names.get(i)
                        + "' outside [0, " + sizes[i] + ")");
            }
            r = r * sizes[i] + coordinates[i];
        }
        return r;
    }

    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder("MeshShape(");
        for (int i = 0; i < sizes.length; i++) sb.append(i == 0 ? "" : ", ").append(names.get(i)).append('=').append(sizes[i]);
        return sb.append(')').toString();
    }
}
