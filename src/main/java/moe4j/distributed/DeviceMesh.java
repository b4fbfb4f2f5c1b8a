package moe4j.distributed;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.stream.IntStream;

/**
 * The world's ranks laid out over named parallelism dimensions ({@link MeshShape}), with one
 * process group per dimension: {@code mesh.get("ep")} is the one-dimensional sub-mesh of the ranks
 * that differ from this one only in the {@code ep} coordinate, with their group and this rank's
 * coordinate.
 *
 * <p>Creating a mesh is a collective over the world group (it splits one group off per dimension, in
 * the mesh's dimension order), so every rank creates its meshes in the same order. The groups are
 * created once, here, and reused by every {@link #get}.
 */
public final class DeviceMesh {
    private final MeshShape shape;
    private final ProcessGroup world;
    /** This rank's coordinate in each dimension. */
    private final int[] coordinates;
    private final Map<String, DeviceMesh> byDim;
    private final Map<String, DeviceMesh> flattened = new LinkedHashMap<>();
    /** For each flattened mesh, its name and the set of dimensions it was made of. */
    private final Map<String, String> flattenedDims = new LinkedHashMap<>();

    /** A one-dimensional mesh: {@code dimName} of {@code group.size()} ranks. */
    private final String dimName;
    private final ProcessGroup group;

    private DeviceMesh(MeshShape shape, ProcessGroup world) {
        this.shape = shape;
        this.world = world;
        this.coordinates = shape.coordinates(world.rank());
        this.dimName = null;
        this.group = world;
        Map<String, DeviceMesh> dims = new LinkedHashMap<>();
        List<String> names = shape.dimNames();
        for (int i = 0; i < names.size(); i++) {
            String name = names.get(i);
            int stride = shape.stride(i);
            int size = shape.size(name);
            int first = world.rank() - coordinates[i] * stride; // the member with coordinate 0 identifies the group
            int[] members = IntStream.range(0, size).map(k -> world.globalRanks()[first + k * stride]).toArray();
            ProcessGroup g = world.split(first, coordinates[i], groupName(name, members));
            dims.put(name, new DeviceMesh(name, g));
        }
        this.byDim = Map.copyOf(dims);
    }

    private DeviceMesh(String dimName, ProcessGroup group) {
        this.shape = null;
        this.world = group;
        this.coordinates = new int[] {group.rank()};
        this.dimName = dimName;
        this.group = group;
        this.byDim = Map.of(dimName, this);
    }

    private static String groupName(String name, int[] worldRanks) {
        return name + Arrays.stream(worldRanks).mapToObj(Integer::toString).collect(Collectors.joining(",", "[", "]"));
    }

    /**
     * The mesh for these parallelism sizes over {@code world} (a collective over {@code world}).
     * Throws the {@link MeshShape} validation errors.
     */
    public static DeviceMesh create(ProcessGroup world, MeshSizes sizes) {
        return create(world, MeshShape.of(world.size(), sizes));
    }

    /** The mesh of {@code shape} over {@code world} (a collective over {@code world}). */
    public static DeviceMesh create(ProcessGroup world, MeshShape shape) {
        if (shape.worldSize() != world.size()) {
            throw new IllegalArgumentException("mesh " + shape + " is for " + shape.worldSize() + " ranks but group '"
                    + world.name() + "' has " + world.size());
        }
        return new DeviceMesh(shape, world);
    }

    /** The one-dimensional sub-mesh of dimension {@code name}. */
    public DeviceMesh get(String name) {
        DeviceMesh d = byDim.get(name);
        if (d == null) {
            throw new IllegalArgumentException("the mesh has no dimension '" + name + "'; its dimensions are " + dimNames());
        }
        return d;
    }

    public boolean hasDim(String name) {
        return byDim.containsKey(name);
    }

    /** The dimensions, outermost first. */
    public List<String> dimNames() {
        return dimName != null ? List.of(dimName) : shape.dimNames();
    }

    /** The size of dimension {@code name}; throws if the mesh has no such dimension. */
    public int size(String name) {
        return get(name).size();
    }

    /** The number of ranks in this mesh. */
    public int size() {
        return group.size();
    }

    /** This rank's index in the mesh: its coordinate for a one-dimensional mesh, its group rank otherwise. */
    public int localRank() {
        return group.rank();
    }

    /** This rank's coordinate in dimension {@code name}. */
    public int coordinate(String name) {
        return get(name).localRank();
    }

    /** This rank's coordinates, one per dimension. */
    public int[] coordinates() {
        return coordinates.clone();
    }

    /** The process group of this mesh: the dimension's group for a one-dimensional mesh, the world group otherwise. */
    public ProcessGroup group() {
        return group;
    }

    /**
     * A one-dimensional mesh over several dimensions taken together (e.g. the data-parallel ranks
     * {@code dp_replicate, dp_shard, ep}), ordered row-major in mesh order. Dimensions the mesh does not
     * have count as size 1. The first call with a given name is a collective over the world group
     * (every rank makes the same calls in the same order); later calls return the same mesh.
     */
    public DeviceMesh flatten(String name, String... dims) {
        if (dimName != null) throw new IllegalStateException("flatten: " + this + " is already one-dimensional");
        java.util.Set<String> distinct = new java.util.TreeSet<>(java.util.Arrays.asList(dims));
        if (distinct.size() != dims.length) {
            throw new IllegalArgumentException("flatten: dimension listed twice in " + java.util.Arrays.toString(dims));
        }
        String identity = name + distinct;
        DeviceMesh cached = flattened.get(name);
        if (cached != null) {
            // flatten(name) with no dimensions looks an existing one up
            if (dims.length > 0 && !flattenedDims.get(name).equals(identity)) {
                throw new IllegalArgumentException("flatten: '" + name + "' was made of dimensions " + flattenedDims.get(name)
                        .substring(name.length()) + ", not " + distinct);
            }
            return cached;
        }
        if (dims.length == 0) throw new IllegalArgumentException("flatten: no flattened mesh named '" + name + "' yet, and no dimensions given");
        List<String> names = shape.dimNames();
        List<Integer> chosen = new ArrayList<>();
        for (String d : dims) {
            if (!MeshShape.ORDER.contains(d)) {
                throw new IllegalArgumentException("flatten: unknown dimension '" + d + "', expected one of " + MeshShape.ORDER);
            }
            if (names.contains(d)) chosen.add(names.indexOf(d));
        }
        chosen.sort(null);
        int color = world.rank();
        int key = 0;
        for (int i : chosen) {
            color -= coordinates[i] * shape.stride(i);
            key = key * shape.size(names.get(i)) + coordinates[i];
        }
        int[] base = coordinates.clone();
        for (int i : chosen) base[i] = 0;
        List<Integer> members = new ArrayList<>();
        collectMembers(chosen, 0, base, members);
        ProcessGroup g = world.split(color, key,
                groupName(name, members.stream().mapToInt(r -> world.globalRanks()[r]).toArray()));
        DeviceMesh mesh = new DeviceMesh(name, g);
        flattened.put(name, mesh);
        flattenedDims.put(name, identity);
        return mesh;
    }

    private void collectMembers(List<Integer> chosen, int depth, int[] coords, List<Integer> out) {
        if (depth == chosen.size()) {
            out.add(shape.rank(coords));
            return;
        }
        int dim = chosen.get(depth);
        for (int c = 0; c < shape.size(shape.dimNames().get(dim)); c++) {
            coords[dim] = c;
            collectMembers(chosen, depth + 1, coords, out);
        }
        coords[dim] = 0;
    }

    @Override
    public String toString() {
        if (dimName != null) return "DeviceMesh(" + group.name() + ", coordinate " + group.rank() + " of " + group.size() + ")";
        return "DeviceMesh(" + shape + ", rank " + world.rank() + ")";
    }
}
