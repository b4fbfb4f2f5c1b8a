package moe4j.kernels.cuda;

import static moe4j.kernels.cuda.CudaKernels.at;

import java.util.List;
import moe4j.kernels.AttentionKernels;
import moe4j.kernels.ExecutionContext;
import moe4j.tensor.DType;
import moe4j.tensor.Tensor;

/**
 * Rotary embedding and fused causal grouped-query attention (optionally with a sliding window) on one GPU
 * ({@code attention.cu}). The forward keeps only each query row's log-sum-exp (B, Hq, S) for the
 * backward, never the (B, Hq, S, S) probabilities: the backward recomputes them. Two kernel families,
 * chosen per call by the calling thread's {@link ExecutionContext#productInputs()}:
 * <ul>
 *   <li>F32: exact float32, one warp per row, {@link #WARPS} rows per block, any head dimension up to
 *   {@link #MAX_HEAD_DIM}; equal to the CPU op to float rounding.</li>
 *   <li>BF16 with a head dimension in {@link #TENSOR_CORE_HEAD_DIMS}: q, k, v (and dO) rounded to bf16 once
 *   per call, tiles of {@link #FLASH_ROWS} rows copied asynchronously into shared memory, every product on
 *   tensor cores with fp32 accumulation, the softmax in fp32. The backward takes the row sums dO·O from the forward's output, then one kernel per query block
 *   writes dQ and one per key block writes dK and dV, so no two blocks add into the same element. Other
 *   head dimensions run the F32 kernels.</li>
 * </ul>
 * Both are deterministic (no atomics). The {@code rowBlock} of the interface (the CPU's GEMM blocking) has
 * no meaning here. The backward's scratch is taken outside the pool's scopes and freed before it returns.
 */
final class CudaAttention implements AttentionKernels {
    /** Largest head dimension the kernels hold in registers (8 elements per lane). */
    static final int MAX_HEAD_DIM = 256;
    /** Warps (rows) per block of the F32 kernels. */
    static final int WARPS = 4;
    /** Rows per block of the tensor-core kernels (and rows per shared-memory tile): 16 per warp of 4. */
    static final int FLASH_ROWS = 64;
    /** Threads per block of the tensor-core kernels. */
    static final int FLASH_THREADS = 128;
    /** Head dimensions the tensor-core kernels are compiled for ({@code flash_*_hd64}, {@code flash_*_hd128}). */
    static final List<Integer> TENSOR_CORE_HEAD_DIMS = List.of(64, 128);

    private final CudaGpu gpu;

    CudaAttention(CudaGpu gpu) {
        this.gpu = gpu;
    }

    private CudaStream stream() {
        return CudaStream.of(gpu);
    }

    @Override
    public int[] savedShape(int b, int hq, int s) {
        return new int[] {b, hq, s};
    }

    /** Grid of a one-warp-per-row launch over {@code seq} rows of each of {@code slices} (batch, head) slices. */
    static int[] grid(int seq, int slices) {
        if (slices > 65535) {
            throw new IllegalArgumentException("cuda attention: batch × heads = " + slices + " exceeds the 65535 slices one launch covers");
        }
        return new int[] {Math.max(1, (seq + WARPS - 1) / WARPS), slices};
    }

    /**
     * Grid of a tensor-core launch: x over the {@code slices} (batch, head) slices, y over the
     * {@value #FLASH_ROWS}-row blocks of {@code seq} (the kernels map y so that the blocks with the most
     * work start first).
     */
    static int[] flashGrid(int seq, int slices) {
        int blocks = Math.max(1, (seq + FLASH_ROWS - 1) / FLASH_ROWS);
        if (blocks > 65535) {
            throw new IllegalArgumentException("cuda attention: sequence " + seq + " exceeds the 65535 blocks of " + FLASH_ROWS
                    + " rows one launch covers");
        }
        return new int[] {Math.max(1, slices), blocks};
    }

    /**
     * Whether products in {@code products} at head dimension {@code hd} run on the tensor-core kernels, with
     * every tensor's device address 16-byte aligned (the kernels read rows as 16-byte vectors).
     */
    static boolean tensorCores(DType products, int hd, long... addresses) {
        if (products != DType.BF16 || !TENSOR_CORE_HEAD_DIMS.contains(hd)) return false;
        for (long a : addresses) {
            if ((a & 15) != 0) return false;
        }
        return true;
    }

    /** The passes of the tensor-core kernels, each compiled once per head dimension of {@link #TENSOR_CORE_HEAD_DIMS}. */
    static final List<String> FLASH_PASSES = List.of("forward", "backward_dq", "backward_dkdv");

    /** The entry point of a tensor-core pass at head dimension {@code hd}: {@code flash_<pass>_hd<hd>}. */
    static String flashKernel(String pass, int hd) {
        return "flash_" + pass + "_hd" + hd;
    }

    /** The head dimension fits the kernels' registers, else an error naming it and the limit. */
    static void checkHeadDim(int hd) {
        if (hd < 1 || hd > MAX_HEAD_DIM) {
            throw new UnsupportedOperationException("cuda attention: head dimension " + hd + " is outside [1, " + MAX_HEAD_DIM + "]");
        }
    }

    /** {@code saved} holds one log-sum-exp per (batch, query head, position), else an error naming its shape. */
    static void checkSaved(Tensor saved, int b, int hq, int s) {
        if (saved.numel() != (long) b * hq * s) {
            throw new IllegalArgumentException("cuda attention: saved " + saved.shapeString() + " must hold (" + b + ", " + hq + ", " + s
                    + ") row log-sum-exps (see savedShape)");
        }
    }

    @Override
    public void rope(Tensor x, double theta, double scale, int start, float sign, Tensor out) {
        CudaReductions.requireF32("rope", x, out);
        int s = x.dim(1), h = x.dim(2), hd = x.dim(3);
        long pairs = x.numel() / 2;
        if (pairs == 0) return;
        if (start == 0) {
            // whole sequences (training, a prompt): the rotations come from a table made once per shape (before
            // this launch's arguments: making it launches a kernel, and a stream packs one launch at a time)
            long table = ropeTable(theta, scale, hd, s);
            stream().launch(KernelSource.ATTENTION, "rope_from_table").over(pairs).ptr(at(x)).ptr(table).f32(sign)
                    .i32(s).i32(h).i32(hd).i64(pairs).ptr(at(out)).run();
            return;
        }
        stream().launch(KernelSource.ATTENTION, "rope").over(pairs).ptr(at(x)).f64(theta).f64(scale).i32(start).f32(sign).i32(s).i32(h).i32(hd)
                .i64(pairs).ptr(at(out)).run();
    }

    /** Rotation tables by (θ, scale, head dimension): the device address and the positions it covers. */
    private record RopeKey(double theta, double scale, int hd) {}

    private record RopeTable(long address, int positions) {}

    private final java.util.Map<RopeKey, RopeTable> ropeTables = new java.util.HashMap<>();

    /**
     * The device address of a {@code rope_table} of at least {@code positions} positions. Made on first use
     * and remade with the next power of two when a longer sequence comes; the stream is drained once after
     * making it, so every stream of this GPU may read it. Outgrown tables are kept (a few, at most one per
     * power of two), because another stream may still be reading one.
     */
    private synchronized long ropeTable(double theta, double scale, int hd, int positions) {
        RopeKey key = new RopeKey(theta, scale, hd);
        RopeTable table = ropeTables.get(key);
        if (table != null && table.positions() >= positions) return table.address();
        int rows = Integer.highestOneBit(Math.max(1, positions - 1)) << 1;
        CudaStream st = stream();
        long address = st.pool.allocatePersistent(4L * rows * hd, "rope rotation table");
        st.launch(KernelSource.ATTENTION, "rope_table").over((long) rows * (hd / 2)).f64(theta).f64(scale).i32(rows).i32(hd).ptr(address).run();
        st.synchronize();
        ropeTables.put(key, new RopeTable(address, rows));
        return address;
    }

    @Override
    public void causalAttention(Tensor q, Tensor k, Tensor v, int rowBlock, int window, Tensor saved, Tensor out) {
        CudaReductions.requireF32("causalAttention", q, k, v, saved, out);
        int b = q.dim(0), s = q.dim(1), hq = q.dim(2), hd = q.dim(3), hkv = k.dim(2);
        checkHeadDim(hd);
        checkSaved(saved, b, hq, s);
        if (q.numel() == 0) return;
        CudaStream st = stream();
        if (tensorCores(ExecutionContext.current().productInputs(), hd, at(q), at(k), at(v), at(out))) {
            try (Bf16Copies copies = new Bf16Copies(st)) {
                flashForward(st, copies.of(q), copies.of(k), copies.of(v), b, s, hq, hkv, hd, window, at(out), at(saved));
            }
            return;
        }
        int[] grid = grid(s, b * hq);
        st.launch(KernelSource.ATTENTION, "attention_forward").grid(grid[0], grid[1]).block(32 * WARPS).ptr(at(q)).ptr(at(k))
                .ptr(at(v)).i32(s).i32(hq).i32(hkv).i32(hd).i32(window).f32(scale(hd)).ptr(at(out)).ptr(at(saved)).run();
    }

    /** The tensor-core forward on bf16 copies of q, k and v, writing each query row's log-sum-exp to {@code lse}. */
    private static void flashForward(CudaStream st, long q, long k, long v, int b, int s, int hq, int hkv, int hd, int window, long out,
                                     long lse) {
        int[] grid = flashGrid(s, b * hq);
        st.launch(KernelSource.ATTENTION, flashKernel("forward", hd)).grid(grid[0], grid[1]).block(FLASH_THREADS).ptr(q).ptr(k).ptr(v)
                .i32(s).i32(hq).i32(hkv).i32(window).f32(scale(hd)).ptr(out).ptr(lse).run();
    }

    @Override
    public void causalAttentionBackward(Tensor gOut, Tensor q, Tensor k, Tensor v, Tensor out, Tensor saved, int rowBlock, int window,
                                        Tensor gq, Tensor gk, Tensor gv) {
        CudaReductions.requireF32("causalAttentionBackward", gOut, q, k, v, out, saved, gq, gk, gv);
        int b = q.dim(0), s = q.dim(1), hq = q.dim(2), hd = q.dim(3), hkv = k.dim(2);
        checkHeadDim(hd);
        checkSaved(saved, b, hq, s);
        if (q.numel() == 0) return;
        CudaStream st = stream();
        boolean flash = tensorCores(ExecutionContext.current().productInputs(), hd, at(gOut), at(q), at(k), at(v), at(out), at(gq), at(gk),
                at(gv));
        long delta = st.pool.allocatePersistent(4L * b * hq * s, "attention backward row sums");
        try {
            if (flash) {
                flashBackward(st, gOut, q, k, v, out, saved, b, s, hq, hkv, hd, window, gq, gk, gv, delta);
                return;
            }
            int[] qGrid = grid(s, b * hq);
            st.launch(KernelSource.ATTENTION, "attention_backward_q").grid(qGrid[0], qGrid[1]).block(32 * WARPS).ptr(at(gOut)).ptr(at(q))
                    .ptr(at(k)).ptr(at(v)).ptr(at(saved)).i32(s).i32(hq).i32(hkv).i32(hd).i32(window).f32(scale(hd)).ptr(at(gq))
                    .ptr(delta).run();
            int[] kvGrid = grid(s, b * hkv);
            st.launch(KernelSource.ATTENTION, "attention_backward_kv").grid(kvGrid[0], kvGrid[1]).block(32 * WARPS).ptr(at(gOut))
                    .ptr(at(q)).ptr(at(k)).ptr(at(v)).ptr(at(saved)).ptr(delta).i32(s).i32(hq).i32(hkv).i32(hd).i32(window)
                    .f32(scale(hd)).ptr(at(gk)).ptr(at(gv)).run();
        } finally {
            st.pool.free(delta);
        }
    }

    /**
     * The tensor-core backward: the row sums delta = dO·O from the forward's output, then, on bf16 copies of
     * dO, q, k and v, dQ per query block and dK, dV per key block.
     */
    private void flashBackward(CudaStream st, Tensor gOut, Tensor q, Tensor k, Tensor v, Tensor out, Tensor saved, int b, int s, int hq,
                               int hkv, int hd, int window, Tensor gq, Tensor gk, Tensor gv, long delta) {
        long rows = (long) b * hq * s;
        int warpsPerBlock = Launch.THREADS / 32;
        st.launch(KernelSource.ATTENTION, "attention_row_dots").block(Launch.THREADS)
                .grid(Launch.blocksFor(rows, warpsPerBlock, Launch.maxBlocks(gpu.multiprocessors))).ptr(at(gOut)).ptr(at(out)).i32(s)
                .i32(hq).i32(hd).i64(rows).i32(hd % 4 == 0 && (at(gOut) | at(out)) % 16 == 0 ? 1 : 0).ptr(delta).run();
        try (Bf16Copies copies = new Bf16Copies(st)) {
            long gOut16 = copies.of(gOut), q16 = copies.of(q), k16 = copies.of(k), v16 = copies.of(v);
            int[] qGrid = flashGrid(s, b * hq);
            st.launch(KernelSource.ATTENTION, flashKernel("backward_dq", hd)).grid(qGrid[0], qGrid[1]).block(FLASH_THREADS).ptr(gOut16)
                    .ptr(q16).ptr(k16).ptr(v16).ptr(at(saved)).ptr(delta).i32(s).i32(hq).i32(hkv).i32(window).f32(scale(hd))
                    .ptr(at(gq)).run();
            int[] kvGrid = flashGrid(s, b * hkv);
            st.launch(KernelSource.ATTENTION, flashKernel("backward_dkdv", hd)).grid(kvGrid[0], kvGrid[1]).block(FLASH_THREADS)
                    .ptr(gOut16).ptr(q16).ptr(k16).ptr(v16).ptr(at(saved)).ptr(delta).i32(s).i32(hq).i32(hkv).i32(window)
                    .f32(scale(hd)).ptr(at(gk)).ptr(at(gv)).run();
        }
    }

    /** 1/√hd as the CPU rounds it. */
    static float scale(int hd) {
        return (float) (1 / Math.sqrt(hd));
    }

    @Override
    public void cachedAttention(Tensor q, Tensor kCache, Tensor vCache, int start, int window, Tensor out) {
        throw CudaKernels.missing("cached attention (decoding with a key/value cache)");
    }
}
