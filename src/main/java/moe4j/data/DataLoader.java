package moe4j.data;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import moe4j.tensor.DType;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;

/**
 * Batches of a {@link TokenSource} for one data-parallel rank, with a resumable position.
 *
 * <p>The global batch of step {@code n} is windows {@code n·B .. n·B + B - 1} of the source ({@code B} the
 * global batch size), so it depends on (source seed, n, B, seqLen) only. Rank {@code r} of {@code R}
 * takes rows {@code [r·B/R, (r+1)·B/R)}: training on any number of ranks sees exactly the same global
 * batch, which is what makes a run on {@code R} ranks equal to one rank on the global batch.
 *
 * <p>The position is the step of the next batch; checkpoint it with {@link #position()} and restore it
 * with {@link #seek(long)} to continue with the same batches bit for bit. One loader per rank (it is
 * not thread-safe); the source may be shared.
 */
public final class DataLoader {
    private final TokenSource source;
    private final int globalBatch;
    private final int seqLen;
    private final int rank;
    private final int ranks;
    private final int localBatch;
    private final int[] window;
    private long position;

    /** The whole global batch on one rank. */
    public DataLoader(TokenSource source, int globalBatch, int seqLen) {
        this(source, globalBatch, seqLen, 0, 1);
    }

    /**
     * Rank {@code rank}'s share of the global batch of {@code globalBatch} windows over {@code ranks}
     * data-parallel ranks. {@code globalBatch} must be divisible by {@code ranks}.
     */
    public DataLoader(TokenSource source, int globalBatch, int seqLen, int rank, int ranks) {
        if (source == null) throw new IllegalArgumentException("DataLoader: source is null");
        if (globalBatch < 1 || seqLen < 1) {
            throw new IllegalArgumentException("DataLoader: global batch and seqLen must be >= 1, got globalBatch="
                    + globalBatch + ", seqLen=" + seqLen);
        }
        if (ranks < 1 || rank < 0 || rank >= ranks) {
            throw new IllegalArgumentException("DataLoader: rank " + rank + " is outside [0, " + ranks
                    + ") data-parallel ranks");
        }
        if (globalBatch % ranks != 0) {
            throw new IllegalArgumentException("DataLoader: global batch " + globalBatch
                    + " is not divisible by the " + ranks + " data-parallel ranks; choose a multiple of " + ranks);
        }
        if (seqLen == Integer.MAX_VALUE) throw new IllegalArgumentException("DataLoader: seqLen too large");
        source.checkWindowLength(seqLen + 1);
        this.source = source;
        this.globalBatch = globalBatch;
        this.seqLen = seqLen;
        this.rank = rank;
        this.ranks = ranks;
        this.localBatch = globalBatch / ranks;
        this.window = new int[seqLen + 1];
    }

    /**
     * This rank's batch of the current step, allocated in the current {@link MemoryScope}; advances the
     * position by one step.
     */
    public Batch next() {
        Batch b = batch(position);
        position++;
        return b;
    }

    /** This rank's batch of {@code step}, without moving the position. */
    public Batch batch(long step) {
        if (step < 0) throw new IllegalArgumentException("DataLoader.batch: step must be >= 0, got " + step);
        Tensor inputs = Tensor.zeros(DType.I32, localBatch, seqLen);
        Tensor targets = Tensor.zeros(DType.I32, localBatch, seqLen);
        MemorySegment in = inputs.data();
        MemorySegment out = targets.data();
        long firstWindow = Math.multiplyExact(step, (long) globalBatch) + (long) rank * localBatch;
        for (int row = 0; row < localBatch; row++) {
            source.window(firstWindow + row, window);
            long rowStart = (long) row * seqLen;
            MemorySegment.copy(window, 0, in, ValueLayout.JAVA_INT, rowStart * Integer.BYTES, seqLen);
            MemorySegment.copy(window, 1, out, ValueLayout.JAVA_INT, rowStart * Integer.BYTES, seqLen);
        }
        return new Batch(step, inputs, targets);
    }

    /** The step of the next batch {@link #next()} returns (the number of steps consumed). */
    public long position() {
        return position;
    }

    /** Continues at {@code step}: the next batch is the one of that step. */
    public void seek(long step) {
        if (step < 0) throw new IllegalArgumentException("DataLoader.seek: step must be >= 0, got " + step);
        position = step;
    }

    public TokenSource source() {
        return source;
    }

    public int globalBatch() {
        return globalBatch;
    }

    /** Rows per rank: globalBatch / ranks. */
    public int localBatch() {
        return localBatch;
    }

    public int seqLen() {
        return seqLen;
    }

    public int rank() {
        return rank;
    }

    public int ranks() {
        return ranks;
    }
}
