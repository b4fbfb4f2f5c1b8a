package moe4j.kernels.cuda;

import static moe4j.kernels.cuda.CudaKernels.at;

import moe4j.kernels.ReductionKernels;
import moe4j.tensor.DType;
import moe4j.tensor.Tensor;

/**
 * The reductions group on one GPU ({@code reduce.cu}): float32, double accumulators like the CPU's, every
 * sum in a fixed order (block trees, never float atomics), so a result is the same bits on every run.
 * Row kernels run one block of {@link #THREADS} threads per row. {@link #sumOfSquares} and
 * {@link #firstNonFinite} return host values through one small copy into the stream's pinned buffer;
 * {@link #crossEntropy} reads back the first invalid target's row (one such copy per call) to throw.
 * Scratch memory is taken outside the pool's scopes and freed (stream-ordered) before a method returns,
 * so no enclosing scope ever owns an address that a later allocation may reuse.
 */
final class CudaReductions implements ReductionKernels {
    /** Threads per block of the row and sum kernels (a multiple of 32: the block trees go warp by warp). */
    static final int THREADS = 256;
    /** Most blocks of the first pass of a whole-tensor sum; the second pass sums their partials in one block. */
    static final int MAX_PARTIALS = 1024;
    /** The "none" value of a smallest-position search: all bits set. */
    static final long NONE = -1L;

    private final CudaGpu gpu;

    CudaReductions(CudaGpu gpu) {
        this.gpu = gpu;
    }

    private CudaStream stream() {
        return CudaStream.of(gpu);
    }

    /** Most row chunks of a column reduction's first pass (its partials take chunks × D doubles). */
    static final int MAX_COLUMN_CHUNKS = 64;
    /** Fewest rows a chunk of a column reduction takes, so that short inputs are not split finely. */
    static final int MIN_CHUNK_ROWS = 64;

    /**
     * {@code out[j] = Σ_i a[i, j]·b[i, j]·scale[i]} over a (rows × d) row-major {@code a} (b and scale
     * optional: address 0), in double, in a fixed order: chunks of rows summed column by column, then the
     * chunks in order ({@code column_partial}, {@code column_final}).
     */
    private void columns(long a, long b, long scale, int rows, int d, long out) {
        if (d == 0) return;
        CudaStream s = stream();
        if (rows == 0) {
            s.zero(out, 4L * d);
            return;
        }
        int chunks = Math.max(1, Math.min(MAX_COLUMN_CHUNKS, rows / MIN_CHUNK_ROWS));
        int chunkRows = (rows + chunks - 1) / chunks;
        chunks = (rows + chunkRows - 1) / chunkRows;
        long partial = s.pool.allocatePersistent(8L * chunks * d, "column sum partials");
        try {
            s.launch(KernelSource.REDUCE, "column_partial").grid((d + 31) / 32, chunks).block(THREADS).ptr(a).ptr(b).ptr(scale)
                    .i32(rows).i32(d).i32(chunkRows).ptr(partial).run();
            s.launch(KernelSource.REDUCE, "column_final").over(d).ptr(partial).i32(chunks).i32(d).ptr(out).run();
        } finally {
            s.pool.free(partial);
        }
    }

    /** Blocks of the first pass of a sum over {@code n} elements: one per THREADS elements, 1 to MAX_PARTIALS. */
    static int partialBlocks(long n) {
        return Launch.blocksFor(n, THREADS, MAX_PARTIALS);
    }

    /** Every tensor is float32, else an error naming the operation and the argument. */
    static void requireF32(String op, Tensor... tensors) {
        for (Tensor t : tensors) {
            if (t.dtype() != DType.F32) throw new IllegalArgumentException("cuda " + op + ": needs float32 tensors, got " + t.dtype());
        }
    }

    /** Rows of a tensor whose rows run along its last dimension of width {@code d} (0 for an empty one). */
    static int rows(Tensor a, int d) {
        return d == 0 ? 0 : Math.toIntExact(a.numel() / d);
    }

    /** Σ a (or Σ a²) in double into {@code result} on the device, and as float into {@code out} when not 0. */
    private void total(Tensor a, boolean squares, long result, long out) {
        CudaStream s = stream();
        long n = a.numel();
        int blocks = partialBlocks(n);
        long partial = s.pool.allocatePersistent(8L * blocks, "sum partials");
        try {
            s.launch(KernelSource.REDUCE, "sum_partial").grid(blocks).block(THREADS).ptr(at(a)).i64(n).i32(squares ? 1 : 0)
                    .ptr(partial).run();
            s.launch(KernelSource.REDUCE, "sum_final").grid(1).block(THREADS).ptr(partial).i32(blocks).ptr(result).ptr(out).run();
        } finally {
            s.pool.free(partial);
        }
    }

    @Override
    public void sum(Tensor a, Tensor out) {
        requireF32("sum", a, out);
        CudaStream s = stream();
        long result = s.pool.allocatePersistent(8, "sum result");
        try {
            total(a, false, result, at(out));
        } finally {
            s.pool.free(result);
        }
    }

    @Override
    public double sumOfSquares(Tensor a) {
        requireF32("sumOfSquares", a);
        CudaStream s = stream();
        long result = s.pool.allocatePersistent(8, "sum of squares");
        try {
            total(a, true, result, 0L);
            return s.readDouble(result);
        } finally {
            s.pool.free(result);
        }
    }

    @Override
    public long firstNonFinite(Tensor a) {
        requireF32("firstNonFinite", a);
        long n = a.numel();
        if (n == 0) return -1;
        CudaStream s = stream();
        long first = s.pool.allocatePersistent(8, "first non-finite position");
        try {
            s.memset(first, (byte) 0xff, 8);
            s.launch(KernelSource.REDUCE, "first_non_finite").over(n).ptr(at(a)).i64(n).ptr(first).run();
            long pos = s.readLong(first);
            return pos == NONE ? -1 : pos;
        } finally {
            s.pool.free(first);
        }
    }

    @Override
    public void rowSums(Tensor a, Tensor out) {
        requireF32("rowSums", a, out);
        int n = a.dim(0), d = a.dim(1);
        if (n > 0) stream().launch(KernelSource.REDUCE, "row_sums").grid(n).block(THREADS).ptr(at(a)).i32(d).ptr(at(out)).run();
    }

    @Override
    public void columnSums(Tensor a, Tensor out) {
        requireF32("columnSums", a, out);
        int n = a.dim(0), d = a.dim(1);
        columns(at(a), 0, 0, n, d, at(out));
    }

    @Override
    public void columnDots(Tensor a, Tensor b, Tensor out) {
        requireF32("columnDots", a, b, out);
        int n = a.dim(0), d = a.dim(1);
        columns(at(a), at(b), 0, n, d, at(out));
    }

    @Override
    public void rowDots(Tensor a, Tensor b, Tensor out) {
        requireF32("rowDots", a, b, out);
        int n = a.dim(0), d = a.dim(1);
        if (n > 0) stream().launch(KernelSource.REDUCE, "row_dots").grid(n).block(THREADS).ptr(at(a)).ptr(at(b)).i32(d).ptr(at(out)).run();
    }

    @Override
    public void softmax(Tensor a, Tensor out) {
        requireF32("softmax", a, out);
        int d = a.dim(-1), n = rows(a, d);
        if (n > 0) stream().launch(KernelSource.REDUCE, "softmax_rows").grid(n).block(THREADS).ptr(at(a)).i32(d).ptr(at(out)).run();
    }

    @Override
    public void softmaxBackward(Tensor out, Tensor g, Tensor gradIn) {
        requireF32("softmaxBackward", out, g, gradIn);
        int d = out.dim(-1), n = rows(out, d);
        if (n > 0) stream().launch(KernelSource.REDUCE, "softmax_rows_backward").grid(n).block(THREADS).ptr(at(out)).ptr(at(g)).i32(d)
                .ptr(at(gradIn)).run();
    }

    @Override
    public void logSoftmax(Tensor a, Tensor out) {
        requireF32("logSoftmax", a, out);
        int d = a.dim(-1), n = rows(a, d);
        if (n > 0) stream().launch(KernelSource.REDUCE, "log_softmax_rows").grid(n).block(THREADS).ptr(at(a)).i32(d).ptr(at(out)).run();
    }

    @Override
    public void logSoftmaxBackward(Tensor out, Tensor g, Tensor gradIn) {
        requireF32("logSoftmaxBackward", out, g, gradIn);
        int d = out.dim(-1), n = rows(out, d);
        if (n > 0) stream().launch(KernelSource.REDUCE, "log_softmax_rows_backward").grid(n).block(THREADS).ptr(at(out)).ptr(at(g))
                .i32(d).ptr(at(gradIn)).run();
    }

    @Override
    public void logSumExp(Tensor a, Tensor out) {
        requireF32("logSumExp", a, out);
        int d = a.dim(-1), n = rows(a, d);
        if (n > 0) stream().launch(KernelSource.REDUCE, "log_sum_exp_rows").grid(n).block(THREADS).ptr(at(a)).i32(d).ptr(at(out)).run();
    }

    @Override
    public void logSumExpBackward(Tensor a, Tensor out, Tensor g, Tensor gradIn) {
        requireF32("logSumExpBackward", a, out, g, gradIn);
        int d = a.dim(-1), n = rows(a, d);
        if (n > 0) stream().launch(KernelSource.REDUCE, "log_sum_exp_rows_backward").grid(n).block(THREADS).ptr(at(a)).ptr(at(out))
                .ptr(at(g)).i32(d).ptr(at(gradIn)).run();
    }

    @Override
    public void rmsNorm(Tensor x, Tensor weight, double eps, Tensor out, Tensor inv) {
        requireF32("rmsNorm", x, weight, out, inv);
        int d = x.dim(-1), n = rows(x, d);
        if (n > 0) stream().launch(KernelSource.REDUCE, "rms_norm").grid(n).block(THREADS).ptr(at(x)).ptr(at(weight)).f64(eps).i32(d)
                .ptr(at(out)).ptr(at(inv)).run();
    }

    @Override
    public void rmsNormBackward(Tensor x, Tensor weight, Tensor inv, Tensor g, Tensor gradX, Tensor gradWeight) {
        requireF32("rmsNormBackward", x, weight, inv, g, gradX, gradWeight);
        int d = x.dim(-1), n = rows(x, d);
        CudaStream s = stream();
        if (n > 0) s.launch(KernelSource.REDUCE, "rms_norm_backward_x").grid(n).block(THREADS).ptr(at(x)).ptr(at(weight)).ptr(at(inv))
                .ptr(at(g)).i32(d).ptr(at(gradX)).run();
        columns(at(g), at(x), at(inv), n, d, at(gradWeight));
    }

    /** Logits (N, V) float32 and int32 targets of N elements, else an error naming what was given. */
    static void checkCrossEntropy(String op, Tensor logits, Tensor targets) {
        requireF32(op, logits);
        if (logits.rank() != 2) throw new IllegalArgumentException("cuda " + op + ": logits must be (N, V), got " + logits.shapeString());
        if (targets.dtype() != DType.I32 || targets.numel() != logits.dim(0)) {
            throw new IllegalArgumentException("cuda " + op + ": targets must be " + logits.dim(0) + " int32 values, got "
                    + targets.dtype() + " " + targets.shapeString());
        }
    }

    @Override
    public void crossEntropy(Tensor logits, Tensor targets, Tensor loss) {
        checkCrossEntropy("crossEntropy", logits, targets);
        requireF32("crossEntropy", loss);
        int n = logits.dim(0), v = logits.dim(1);
        CudaStream s = stream();
        if (n == 0) {
            s.zero(at(loss), 4);
            return;
        }
        long rowLoss = s.pool.allocatePersistent(8L * n, "cross-entropy row losses");
        long badRow = s.pool.allocatePersistent(8, "first invalid target row");
        long counted = s.pool.allocatePersistent(4, "counted rows");
        try {
            s.memset(badRow, (byte) 0xff, 8);
            s.launch(KernelSource.REDUCE, "cross_entropy_rows").grid(n).block(THREADS).ptr(at(logits)).ptr(at(targets)).i32(v)
                    .ptr(rowLoss).ptr(badRow).run();
            s.launch(KernelSource.REDUCE, "cross_entropy_mean").grid(1).block(THREADS).ptr(rowLoss).ptr(at(targets)).i32(n)
                    .ptr(at(loss)).ptr(counted).run();
            long bad = s.readLong(badRow);
            if (bad != NONE) {
                int t = s.readInts(at(targets, bad), 1)[0];
                throw new IllegalArgumentException("crossEntropy: target " + t + " at row " + bad + " outside [0, " + v + ")");
            }
        } finally {
            s.pool.free(rowLoss);
            s.pool.free(badRow);
            s.pool.free(counted);
        }
    }

    @Override
    public void crossEntropyBackward(Tensor logits, Tensor targets, Tensor g, Tensor gradLogits) {
        checkCrossEntropy("crossEntropyBackward", logits, targets);
        requireF32("crossEntropyBackward", g, gradLogits);
        int n = logits.dim(0), v = logits.dim(1);
        if (n == 0) return;
        CudaStream s = stream();
        long rowLoss = s.pool.allocatePersistent(8L * n, "unused row losses");
        long counted = s.pool.allocatePersistent(4, "counted rows");
        try {
            s.zero(rowLoss, 8L * n);
            s.launch(KernelSource.REDUCE, "cross_entropy_mean").grid(1).block(THREADS).ptr(rowLoss).ptr(at(targets)).i32(n)
                    .ptr(0L).ptr(counted).run();
            s.launch(KernelSource.REDUCE, "cross_entropy_backward").grid(n).block(THREADS).ptr(at(logits)).ptr(at(targets)).ptr(at(g))
                    .ptr(counted).i32(v).ptr(at(gradLogits)).run();
        } finally {
            s.pool.free(rowLoss);
            s.pool.free(counted);
        }
    }
}
