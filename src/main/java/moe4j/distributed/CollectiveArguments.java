package moe4j.distributed;

import java.util.Arrays;
import moe4j.tensor.Tensor;

/**
 * The local argument checks every backend makes before a collective. Each returns null when the
 * arguments are fine, else what is wrong; the backend then breaks its group (the peers cannot go on
 * without this rank) and throws.
 */
public final class CollectiveArguments {
    private CollectiveArguments() {}

    public static String sameType(Tensor out, Tensor in) {
        return out.dtype() == in.dtype() ? null
                : "out is " + out.dtype() + out.shapeString() + " but in is " + in.dtype() + in.shapeString();
    }

    /** Peers read {@code in} while this rank writes {@code out} (and MPI forbids aliasing): no shared memory. */
    public static String disjoint(Tensor out, Tensor in) {
        boolean overlap = out.data().byteSize() > 0 && in.data().byteSize() > 0
                && out.data().asOverlappingSlice(in.data()).isPresent();
        return overlap ? "out " + out.shapeString() + " and in " + in.shapeString() + " share memory; it cannot run in place" : null;
    }

    /** One row count per rank, none negative, adding up to the tensor's rows. */
    public static String splits(String what, int[] splits, Tensor t, int size) {
        if (splits.length != size) return what + " has " + splits.length + " entries, expected one per rank (" + size + ")";
        long sum = 0;
        for (int s : splits) {
            if (s < 0) return what + " " + Arrays.toString(splits) + " has a negative entry";
            sum += s;
        }
        if (sum != t.rowCount()) {
            return what + " " + Arrays.toString(splits) + " sums to " + sum + " rows but the tensor " + t.shapeString()
                    + " has " + t.rowCount();
        }
        return null;
    }

    /** Everything {@code allToAllSingle(out, in, outSplits, inSplits)} needs locally, in a group of {@code size}. */
    public static String allToAll(Tensor out, Tensor in, int[] outSplits, int[] inSplits, int size) {
        String problem = sameType(out, in);
        if (problem == null && out.rowWidth() != in.rowWidth()) {
            problem = "row widths differ: out " + out.shapeString() + " has rows of " + out.rowWidth() + " elements, in "
                    + in.shapeString() + " of " + in.rowWidth();
        }
        if (problem == null) problem = splits("inSplits", inSplits, in, size);
        if (problem == null) problem = splits("outSplits", outSplits, out, size);
        if (problem == null) problem = disjoint(out, in);
        return problem;
    }
}
