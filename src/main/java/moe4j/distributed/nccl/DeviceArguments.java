package moe4j.distributed.nccl;

import java.util.Arrays;
import moe4j.distributed.CollectiveArguments;
import moe4j.kernels.DeviceStreams;
import moe4j.tensor.Tensor;

/**
 * The local argument checks of {@link CollectiveArguments} for tensors in GPU memory, whose bytes the host
 * cannot see: the same wording, with overlap judged from device addresses. Each returns null when the
 * arguments are fine, else what is wrong.
 */
final class DeviceArguments {
    private DeviceArguments() {}

    static String allToAll(Tensor out, Tensor in, int[] outSplits, int[] inSplits, int size, DeviceStreams streams) {
        String problem = sameLayout(out, in);
        if (problem == null) problem = CollectiveArguments.splits("inSplits", inSplits, in, size);
        if (problem == null) problem = CollectiveArguments.splits("outSplits", outSplits, out, size);
        if (problem == null) problem = disjoint(out, in, streams);
        return problem;
    }

    /** Same dtype and row width. */
    static String sameLayout(Tensor out, Tensor in) {
        String problem = CollectiveArguments.sameType(out, in);
        if (problem == null && out.rowWidth() != in.rowWidth()) {
            problem = "row widths differ: out " + out.shapeString() + " has rows of " + out.rowWidth() + " elements, in "
                    + in.shapeString() + " of " + in.rowWidth();
        }
        return problem;
    }

    static String disjoint(Tensor out, Tensor in, DeviceStreams streams) {
        if (out.numel() == 0 || in.numel() == 0) return null;
        long a = streams.address(out.memory());
        long b = streams.address(in.memory());
        return overlap(a, out.memory().byteSize(), b, in.memory().byteSize())
                ? "out " + out.shapeString() + " and in " + in.shapeString() + " share memory; it cannot run in place" : null;
    }

    static boolean overlap(long a, long aBytes, long b, long bBytes) {
        return aBytes > 0 && bBytes > 0 && a < b + bBytes && b < a + aBytes;
    }

    /** The all-gather's output must hold every rank's rows; a negative count is a rank whose own checks failed. */
    static String gatheredRows(int[] rowsPerRank, Tensor out) {
        long sum = 0;
        for (int r = 0; r < rowsPerRank.length; r++) {
            if (rowsPerRank[r] < 0) return "rank " + r + " rejected its own arguments";
            sum += rowsPerRank[r];
        }
        return sum == out.rowCount() ? null
                : "out " + out.shapeString() + " has " + out.rowCount() + " rows but the ranks hold " + Arrays.toString(rowsPerRank)
                        + " = " + sum;
    }
}
