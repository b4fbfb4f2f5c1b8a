package moe4j.distributed.nccl;

import java.util.ArrayList;
import java.util.List;
import moe4j.distributed.ReduceOp;
import moe4j.tensor.DType;

/**
 * The host-side arithmetic of the NCCL collectives, apart from any library so that it can be tested
 * anywhere: which point-to-point transfers a variable-split all-to-all or all-gather makes (in elements,
 * zero counts left out because NCCL uses a zero-byte message to synchronise, which the peer would not
 * match), and the NCCL enumerators for moe4j's types and reductions.
 */
final class ExchangePlan {
    private ExchangePlan() {}

    /** One grouped {@code ncclSend} or {@code ncclRecv}: {@code count} elements at element {@code offset}, to or from {@code peer}. */
    record Transfer(int peer, long offset, long count) {}

    /** The sends and receives of one rank, each list in peer order. */
    record Plan(List<Transfer> sends, List<Transfer> receives) {}

    /**
     * The all-to-all of rows {@code rowWidth} elements wide: rows {@code inSplits[j]} go to rank j from
     * consecutive runs of the input, {@code outSplits[j]} arrive from rank j into consecutive runs of the output.
     */
    static Plan allToAll(int[] outSplits, int[] inSplits, long rowWidth) {
        return new Plan(runs(inSplits, rowWidth), runs(outSplits, rowWidth));
    }

    /**
     * The uneven all-gather as transfers: this rank's {@code rowsPerRank[rank]} rows go to every rank
     * (itself included: NCCL pairs a send and a receive to oneself within a group), and rank j's rows land
     * at their rank-order place in the output.
     */
    static Plan allGather(int[] rowsPerRank, int rank, long rowWidth) {
        List<Transfer> sends = new ArrayList<>();
        List<Transfer> receives = new ArrayList<>();
        long mine = (long) rowsPerRank[rank] * rowWidth;
        long offset = 0;
        for (int peer = 0; peer < rowsPerRank.length; peer++) {
            long count = (long) rowsPerRank[peer] * rowWidth;
            if (mine > 0) sends.add(new Transfer(peer, 0, mine));
            if (count > 0) receives.add(new Transfer(peer, offset, count));
            offset += count;
        }
        return new Plan(sends, receives);
    }

    private static List<Transfer> runs(int[] splits, long rowWidth) {
        List<Transfer> out = new ArrayList<>();
        long offset = 0;
        for (int peer = 0; peer < splits.length; peer++) {
            long count = (long) splits[peer] * rowWidth;
            if (count > 0) out.add(new Transfer(peer, offset, count));
            offset += count;
        }
        return out;
    }

    /** {@code ncclDataType_t} of a dtype. */
    static int dataType(DType t) {
        return switch (t) {
            case F32 -> NcclLibrary.FLOAT32;
            case BF16 -> NcclLibrary.BFLOAT16;
            case F16 -> NcclLibrary.FLOAT16;
            case I32 -> NcclLibrary.INT32;
            case I64 -> NcclLibrary.INT64;
        };
    }

    /** {@code ncclRedOp_t} of a reduction; an average of integers is refused as on the other backends. */
    static int reduction(ReduceOp op, DType t) {
        return switch (op) {
            case SUM -> NcclLibrary.SUM;
            case MAX -> NcclLibrary.MAX;
            case AVG -> {
                if (!t.isFloating()) throw new IllegalArgumentException("ReduceOp.AVG needs a floating tensor, got " + t);
                yield NcclLibrary.AVG;
            }
        };
    }
}
