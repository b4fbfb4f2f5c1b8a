package moe4j.distributed;

import java.time.Duration;
import moe4j.tensor.Tensor;

/**
 * A group of ranks that exchange tensor data by collectives.
 *
 * <p>The contract every backend keeps (in-JVM threads, MPI, NCCL):
 * <ul>
 *   <li>Every rank of the group calls the same collectives in the same order, with arguments that
 *       agree (same dtype, agreeing shapes and splits). A rank only passes its own buffers; whether a
 *       peer's memory is directly readable is the backend's business.</li>
 *   <li>Tensors travel as rows along dimension 0: a row is {@link Tensor#rowWidth()} elements, and all
 *       ranks' row widths must agree. float32 and int32 tensors travel; both sides of one call must
 *       have the same dtype.</li>
 *   <li>No hang, ever: every collective has a deadline ({@link #timeout()}). A peer that fails, leaves
 *       or does not arrive in time, or a mismatched call, ends in a {@link CollectiveException} on
 *       every rank, naming the collective, the group and the ranks concerned. After that the group is
 *       broken and every later collective on it fails at once.</li>
 *   <li>Reductions combine values in rank order, so results do not depend on timing and every rank
 *       gets the same bits.</li>
 *   <li>A handle is used by one thread at a time (its rank's thread). Asynchronous collectives run in
 *       the order they were started, and a blocking collective starts after all earlier ones ended.</li>
 * </ul>
 */
public interface ProcessGroup {

    /** This rank's index in the group, {@code 0 <= rank() < size()}. */
    int rank();

    /** The number of ranks in the group. */
    int size();

    /** The world ranks of this group's members, indexed by group rank. */
    int[] globalRanks();

    /** A name for messages, e.g. {@code world} or {@code ep[0,2]}. */
    String name();

    /** The deadline of each collective on this group. */
    Duration timeout();

    // ---------------------------------------------------------------- all-to-all

    /**
     * Variable-split all-to-all of rows: rows {@code [sum(inSplits[0..j)), sum(inSplits[0..j]))} of
     * {@code in} go to rank j; {@code out} receives {@code outSplits[j]} rows from rank j, in rank
     * order. Splits may be zero and uneven; they must sum to the row counts of {@code in} and
     * {@code out}, and {@code outSplits[j]} here must equal {@code inSplits[rank()]} on rank j.
     */
    default void allToAllSingle(Tensor out, Tensor in, int[] outSplits, int[] inSplits) {
        allToAllSingleAsync(out, in, outSplits, inSplits).await();
    }

    /** {@link #allToAllSingle} started in the background. */
    Work allToAllSingleAsync(Tensor out, Tensor in, int[] outSplits, int[] inSplits);

    /**
     * All-to-all of small int arrays (the per-expert counts each MoE layer exchanges): {@code send}
     * holds {@code size() * chunk} ints, chunk j going to rank j; the result holds chunk j received from
     * rank j.
     */
    int[] allToAll(int[] send, int chunk);

    // ---------------------------------------------------------------- reductions and gathers

    /** Reduces {@code t} over the group in place: afterwards every rank holds the same result. */
    default void allReduce(Tensor t, ReduceOp op) {
        allReduceAsync(t, op).await();
    }

    /** {@link #allReduce} started in the background. */
    Work allReduceAsync(Tensor t, ReduceOp op);

    /** Concatenates every rank's {@code in} rows, in rank order, into {@code out} on every rank (row counts may differ). */
    void allGather(Tensor out, Tensor in);

    /**
     * {@link #allGather} started in the background (a sharded model's next layer gathered while this one
     * computes): {@code in} must not be written nor {@code out} read until the work is awaited.
     */
    Work allGatherAsync(Tensor out, Tensor in);

    /**
     * Reduces {@code in} ({@code size() * n} rows on every rank) over the group; rank r receives the
     * reduced rows {@code [r*n, (r+1)*n)} in {@code out} ({@code n} rows).
     */
    void reduceScatter(Tensor out, Tensor in, ReduceOp op);

    /** Copies rank {@code root}'s {@code t} into {@code t} on every rank. */
    void broadcast(Tensor t, int root);

    /** Returns once every rank has entered it. */
    void barrier();

    // ---------------------------------------------------------------- sub-groups

    /**
     * Splits this group like {@code MPI_Comm_split}: a collective over this group (all ranks call it, in
     * the same order as their other collectives). Ranks passing the same {@code color >= 0} form one new
     * group, ordered by {@code (key, rank())}; a rank passing a negative color gets {@code null}.
     * {@code name} names the new group in messages.
     */
    ProcessGroup split(int color, int key, String name);

    /**
     * The group of the given ranks of this group, in that order ({@code ranks[i]} becomes rank i); a
     * collective over this group, which every rank calls with the same {@code ranks}. Ranks not listed
     * get {@code null}.
     */
    default ProcessGroup subgroup(int[] ranks, String name) {
        int key = -1;
        for (int i = 0; i < ranks.length; i++) {
            if (ranks[i] < 0 || ranks[i] >= size()) {
                throw new IllegalArgumentException("subgroup: rank " + ranks[i] + " is not in group '" + name()
                        + "' of " + size() + " ranks");
            }
            if (ranks[i] == rank()) key = i;
        }
        return split(key >= 0 ? 0 : -1, key, name);
    }

    /**
     * Marks the group broken: every rank's current and later collectives on it fail with a
     * {@link CollectiveException} carrying {@code reason}. Used when a rank fails outside a collective,
     * so its peers fail fast instead of waiting for the deadline.
     */
    void abort(String reason);
}
