package moe4j.parallel;

import java.time.Duration;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.distributed.Work;
import moe4j.tensor.Tensor;

/**
 * A process group that forwards every collective to another and counts the bytes this rank sends to
 * <em>other</em> ranks through all-to-alls (what goes to itself never leaves the rank): rows of floats
 * ({@link #rowBytes()}: token rows, expert outputs, and the routing weights a deduplicating dispatch
 * sends), rows of ints ({@link #indexBytes()}: the expert ids a deduplicating dispatch sends with its
 * rows) and the small per-expert count exchanges ({@link #countBytes()}) separately.
 * Used by {@link EpVerifier} and the EP benchmark to report each rank's traffic without touching the
 * EP code path.
 */
public final class TrafficCountingGroup implements ProcessGroup {
    private final ProcessGroup inner;
    private long rowBytes;
    private long indexBytes;
    private long countBytes;

    public TrafficCountingGroup(ProcessGroup inner) {
        this.inner = inner;
    }

    public long rowBytes() {
        return rowBytes;
    }

    public long indexBytes() {
        return indexBytes;
    }

    public long countBytes() {
        return countBytes;
    }

    private void countRows(Tensor in, int[] inSplits) {
        long rows = 0;
        for (int peer = 0; peer < inSplits.length; peer++) {
            if (peer != inner.rank()) rows += inSplits[peer];
        }
        long bytes = rows * in.rowWidth() * in.dtype().byteSize;
        if (in.dtype().isFloating()) {
            rowBytes += bytes;
        } else {
            indexBytes += bytes;
        }
    }

    @Override
    public void allToAllSingle(Tensor out, Tensor in, int[] outSplits, int[] inSplits) {
        countRows(in, inSplits);
        inner.allToAllSingle(out, in, outSplits, inSplits);
    }

    @Override
    public Work allToAllSingleAsync(Tensor out, Tensor in, int[] outSplits, int[] inSplits) {
        countRows(in, inSplits);
        return inner.allToAllSingleAsync(out, in, outSplits, inSplits);
    }

    @Override
    public int[] allToAll(int[] send, int chunk) {
        countBytes += (long) (inner.size() - 1) * chunk * Integer.BYTES;
        return inner.allToAll(send, chunk);
    }

    // everything else is passed through uncounted: the MoE layer's exchanges are the two above

    @Override
    public int rank() {
        return inner.rank();
    }

    @Override
    public int size() {
        return inner.size();
    }

    @Override
    public int[] globalRanks() {
        return inner.globalRanks();
    }

    @Override
    public String name() {
        return inner.name();
    }

    @Override
    public Duration timeout() {
        return inner.timeout();
    }

    @Override
    public void allReduce(Tensor t, ReduceOp op) {
        inner.allReduce(t, op);
    }

    @Override
    public Work allReduceAsync(Tensor t, ReduceOp op) {
        return inner.allReduceAsync(t, op);
    }

    @Override
    public void allGather(Tensor out, Tensor in) {
        inner.allGather(out, in);
    }

    @Override
    public Work allGatherAsync(Tensor out, Tensor in) {
        return inner.allGatherAsync(out, in);
    }

    @Override
    public void reduceScatter(Tensor out, Tensor in, ReduceOp op) {
        inner.reduceScatter(out, in, op);
    }

    @Override
    public void broadcast(Tensor t, int root) {
        inner.broadcast(t, root);
    }

    @Override
    public void barrier() {
        inner.barrier();
    }

    @Override
    public ProcessGroup split(int color, int key, String name) {
        return inner.split(color, key, name);
    }

    @Override
    public void abort(String reason) {
        inner.abort(reason);
    }
}
