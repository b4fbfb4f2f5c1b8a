package moe4j.parallel;

import java.time.Duration;
import java.util.concurrent.atomic.AtomicLong;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.distributed.Work;
import moe4j.tensor.Tensor;

/**
 * A process group that forwards every collective and counts, per kind, the bytes this rank hands to
 * other ranks: an all-gather sends its input to each other rank; a reduce-scatter sends each other rank
 * that rank's block. Groups split off it count into the same totals, so a whole mesh built on it is counted.
 */
final class CountingGroup implements ProcessGroup {
    final ProcessGroup inner;
    final AtomicLong gatherBytes;
    final AtomicLong reduceScatterBytes;

    CountingGroup(ProcessGroup inner) {
        this(inner, new AtomicLong(), new AtomicLong());
    }

    private CountingGroup(ProcessGroup inner, AtomicLong gatherBytes, AtomicLong reduceScatterBytes) {
        this.inner = inner;
        this.gatherBytes = gatherBytes;
        this.reduceScatterBytes = reduceScatterBytes;
    }

    @Override public int rank() { return inner.rank(); }
    @Override public int size() { return inner.size(); }
    @Override public int[] globalRanks() { return inner.globalRanks(); }
    @Override public String name() { return inner.name(); }
    @Override public Duration timeout() { return inner.timeout(); }

    @Override
    public Work allToAllSingleAsync(Tensor out, Tensor in, int[] outSplits, int[] inSplits) {
        return inner.allToAllSingleAsync(out, in, outSplits, inSplits);
    }

    @Override public int[] allToAll(int[] send, int chunk) { return inner.allToAll(send, chunk); }
    @Override public Work allReduceAsync(Tensor t, ReduceOp op) { return inner.allReduceAsync(t, op); }

    @Override
    public void allGather(Tensor out, Tensor in) {
        gatherBytes.addAndGet((long) (size() - 1) * in.numel() * in.dtype().byteSize);
        inner.allGather(out, in);
    }

    @Override
    public Work allGatherAsync(Tensor out, Tensor in) {
        gatherBytes.addAndGet((long) (size() - 1) * in.numel() * in.dtype().byteSize);
        return inner.allGatherAsync(out, in);
    }

    @Override
    public void reduceScatter(Tensor out, Tensor in, ReduceOp op) {
        reduceScatterBytes.addAndGet((long) (size() - 1) * out.numel() * out.dtype().byteSize);
        inner.reduceScatter(out, in, op);
    }

    @Override public void broadcast(Tensor t, int root) { inner.broadcast(t, root); }
    @Override public void barrier() { inner.barrier(); }

    @Override
    public ProcessGroup split(int color, int key, String name) {
        ProcessGroup g = inner.split(color, key, name);
        return g == null ? null : new CountingGroup(g, gatherBytes, reduceScatterBytes);
    }

    @Override public void abort(String reason) { inner.abort(reason); }
}
