package moe4j.kernels.cuda;

import static java.lang.foreign.ValueLayout.JAVA_FLOAT;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * One MoE feed-forward layer (router, permutation, experts, combine), forward and backward, on one GPU
 * stream, with every step on the device. The one host synchronisation per forward is the read of the
 * per-expert row counts that size the expert products; the backward reuses them.
 *
 * <p>The function is {@code MoEMLP}'s with packed experts and the local dispatcher: softmax or sigmoid
 * top-K routing (selection bias for sigmoid), weights renormalised over the K chosen, experts
 * {@code silu(x·Wg)⊙(x·Wu)·Wd} (SwiGLU) or {@code act(x·Wu)·Wd} (GELU, ReLU), optional gradient
 * scaling of expert rows by {@code (N/E)/n_e}, the weighted combine; the aux loss
 * ({@code auxScale·E·Σ f_e p_e}) and z loss ({@code mean lse²}) with their weights in the backward.
 *
 * <p>Device layouts (row-major): router gate {@code (E, D)}; expert input weights {@code (E, D, 2H)}
 * holding [gate | up] side by side for SwiGLU (one product per expert instead of two), {@code (E, D, H)}
 * otherwise; down {@code (E, H, D)}. Element type f32 or bf16 for activations and weights; routing
 * math in f32.
 */
public final class CudaMoELayer implements AutoCloseable {
    public enum Precision {
        F32(4, Cublas.CUDA_R_32F, "f32"), BF16(2, Cublas.CUDA_R_16BF, "bf16");

        final int bytes;
        final int cublasType;
        final String suffix;

        Precision(int bytes, int cublasType, String suffix) {
            this.bytes = bytes;
            this.cublasType = cublasType;
            this.suffix = suffix;
        }

        public int bytes() {
            return bytes;
        }
    }

    public enum ExpertActivation { SWIGLU, GELU, RELU }

    /**
     * How the grouped rows are laid out for the expert products (see {@link RowPlan}). COMPACT: expert
     * after expert, ragged products ({@link RaggedGemm}). PADDED: every expert padded with zero rows to
     * the largest count, one strided batched product for all. BUCKETED: experts of similar size share a
     * padded bucket, one batched product per bucket. AUTO: compact when every expert's product fills the
     * GPU by itself, else padded when that adds at most a quarter to the rows, else bucketed. Padding costs its share of arithmetic; small experts run together instead of
     * one at a time.
     */
    public enum RowLayout { AUTO, COMPACT, PADDED, BUCKETED }

    /** Shape and options of the layer; {@code auxScale} is 1 for softmax routing and the sequence aux weight for sigmoid. */
    public record Config(int dim, int hidden, int experts, int topK, boolean sigmoid, ExpertActivation activation,
                         boolean gradientScale, double auxScale) {
        public Config {
            if (dim < 1 || hidden < 1 || experts < 1) {
                throw new IllegalArgumentException("layer sizes must be >= 1, got D=" + dim + " H=" + hidden + " E=" + experts);
            }
            if (experts > 1024) throw new IllegalArgumentException("the cuda router handles up to 1024 experts, got " + experts);
            if (topK < 1 || topK > Math.min(32, experts)) {
                throw new IllegalArgumentException("top-k must be in [1, min(32, E=" + experts + ")], got " + topK);
            }
        }

        int inWidth() {
            return activation == ExpertActivation.SWIGLU ? 2 * hidden : hidden;
        }
    }

    public static final String PHASE_ROUTER = "router";
    public static final String PHASE_PERMUTE = "permute";
    public static final String PHASE_GEMM = "grouped gemm";
    public static final String PHASE_ACTIVATION = "activation";
    public static final String PHASE_COMBINE = "combine";

    private final Config c;
    private final Precision p;
    private final CudaStream s;
    private final RaggedGemm ragged;
    private PhaseTimer timer;
    private RowLayout layout = RowLayout.AUTO;

    // parameters and their gradients (device, persistent)
    final long wg, w1, w2, bias;
    final long dwg, dw1, dw2;
    private float auxWeight;
    private float zWeight;

    /** What the forward keeps for the backward (device buffers of the step scope, host counts). */
    public final class Step {
        final int tokens;
        final long x, logits, probs, lse, idx, w, counts, offsets, entryRow, rowEntry, rowToken, rowScale, auxGrad, losses;
        final long xs, h1, act, y;
        public final long out;
        final int[] rowsPerExpert;
        final int rows;
        final RowPlan plan;

        private Step(int tokens, long x, long logits, long probs, long lse, long idx, long w, long counts, long offsets, long entryRow,
                     long rowEntry, long rowToken, long rowScale, long auxGrad, long losses, long xs, long h1, long act, long y, long out,
                     int[] rowsPerExpert, RowPlan plan) {
            this.tokens = tokens;
            this.x = x;
            this.logits = logits;
            this.probs = probs;
            this.lse = lse;
            this.idx = idx;
            this.w = w;
            this.counts = counts;
            this.offsets = offsets;
            this.entryRow = entryRow;
            this.rowEntry = rowEntry;
            this.rowToken = rowToken;
            this.rowScale = rowScale;
            this.auxGrad = auxGrad;
            this.losses = losses;
            this.xs = xs;
            this.h1 = h1;
            this.act = act;
            this.y = y;
            this.out = out;
            this.rowsPerExpert = rowsPerExpert;
            this.rows = plan.rows();
            this.plan = plan;
        }

        /** How the rows were laid out, in words. */
        public String layout() {
            return plan.describe(c.experts());
        }

        /** Rows routed to each expert (the counts read back by the forward). */
        public int[] rowsPerExpert() {
            return rowsPerExpert.clone();
        }

        /** {aux loss, z loss} of this forward (reads the device: synchronises). */
        public float[] losses() {
            return s.readFloats(losses, 2);
        }

        /** The chosen experts (T, K) (reads the device). */
        public int[] indices() {
            return s.readInts(idx, tokens * c.topK());
        }

        /** The routing weights (T, K) (reads the device). */
        public float[] weights() {
            return s.readFloats(w, tokens * c.topK());
        }
    }

    public CudaMoELayer(CudaStream stream, Config config, Precision precision) {
        this.c = config;
        this.p = precision;
        this.s = stream;
        this.ragged = new RaggedGemm(stream);
        long e = c.experts(), d = c.dim(), h = c.hidden();
        int es = p.bytes;
        DevicePool pool = s.pool;
        wg = pool.allocatePersistent(e * d * es, "router gate weights");
        w1 = pool.allocatePersistent(e * d * c.inWidth() * es, "expert input weights");
        w2 = pool.allocatePersistent(e * h * d * es, "expert output weights");
        bias = pool.allocatePersistent(4 * e, "router selection bias");
        dwg = pool.allocatePersistent(e * d * es, "router gate gradient");
        dw1 = pool.allocatePersistent(e * d * c.inWidth() * es, "expert input weight gradient");
        dw2 = pool.allocatePersistent(e * h * d * es, "expert output weight gradient");
        s.zero(bias, 4 * e);
    }

    public Config config() {
        return c;
    }

    public Precision precision() {
        return p;
    }

    /** Times phases into {@code t} from now on (null: no timing). */
    public void timePhases(PhaseTimer t) {
        this.timer = t;
    }

    /** Weights of the aux and z losses in the total loss, applied by {@link #backward}. */
    public void lossWeights(double aux, double z) {
        this.auxWeight = (float) aux;
        this.zWeight = (float) z;
    }

    /** The row layout of the expert products from now on (AUTO by default). */
    public void rowLayout(RowLayout l) {
        this.layout = l;
    }

    /** Strategy per ragged shape: null lets each shape be timed once and the fastest kept. */
    void forceGemmStrategy(RaggedGemm.Strategy strategy) {
        ragged.force(strategy);
    }

    RaggedGemm raggedGemm() {
        return ragged;
    }

    // ---------------------------------------------------------------- parameters

    /**
     * Sets the parameters from host float32 arrays in the CPU layer's layouts: router gate (E, D), packed
     * gate (E, D, H) (SwiGLU only, else null), up (E, D, H), down (E, H, D); bias (E) or null.
     */
    public void setWeights(float[] routerGate, float[] gate, float[] up, float[] down, float[] selectionBias) {
        int e = c.experts(), d = c.dim(), h = c.hidden();
        requireLength("router gate", routerGate, (long) e * d);
        requireLength("up", up, (long) e * d * h);
        requireLength("down", down, (long) e * h * d);
        float[] in;
        if (c.activation() == ExpertActivation.SWIGLU) {
            requireLength("gate", gate, (long) e * d * h);
            in = new float[Math.toIntExact((long) e * d * 2 * h)];
            for (int x = 0; x < e; x++) {
                for (int r = 0; r < d; r++) {
                    long src = ((long) x * d + r) * h;
                    long dst = ((long) x * d + r) * 2L * h;
                    System.arraycopy(gate, (int) src, in, (int) dst, h);
                    System.arraycopy(up, (int) src, in, (int) (dst + h), h);
                }
            }
        } else {
            in = up;
        }
        upload(routerGate, wg);
        upload(in, w1);
        upload(down, w2);
        if (selectionBias != null) {
            requireLength("bias", selectionBias, e);
            uploadF32(selectionBias, bias);
        }
        s.synchronize();
    }

    private static void requireLength(String what, float[] a, long n) {
        if (a == null || a.length != n) {
            throw new IllegalArgumentException(what + " weights must hold " + n + " floats, got " + (a == null ? "none" : a.length));
        }
    }

    /** Copies host floats into a device tensor of this layer's precision (cast on the device for bf16). */
    void upload(float[] host, long dst) {
        if (p == Precision.F32) {
            uploadF32(host, dst);
            return;
        }
        long tmp = s.pool.allocate(4L * host.length, "upload staging");
        uploadF32(host, tmp);
        s.launch(KernelSource.ELEMENTWISE, "cast_f32_bf16").over(host.length).ptr(tmp).ptr(dst).i64(host.length).run();
        s.pool.free(tmp);
    }

    void uploadF32(float[] host, long dst) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment seg = a.allocateFrom(JAVA_FLOAT, host);
            s.copyToDevice(dst, seg, 4L * host.length);
            s.synchronize();
        }
    }

    /** Fills {@code n} elements at {@code dst} with uniform values of standard deviation {@code std} (seeded, on the device). */
    public void fillRandom(long dst, long n, long seed, double std) {
        s.launch(KernelSource.ELEMENTWISE, k("fill_uniform")).over(n).ptr(dst).i64(n).i64(seed).f32((float) (std * Math.sqrt(3))).run();
    }

    /** Random parameters of standard deviation {@code std} (benchmarks; seeded, generated on the device). */
    public void randomizeWeights(long seed, double std) {
        long e = c.experts(), d = c.dim(), h = c.hidden();
        fillRandom(wg, e * d, seed, std);
        fillRandom(w1, e * d * c.inWidth(), seed + 1, std);
        fillRandom(w2, e * h * d, seed + 2, std);
    }

    /** A device tensor of {@code n} elements of this layer's precision, in the caller's pool scope. */
    public long allocate(long n, String what) {
        return s.pool.allocate(n * p.bytes, what);
    }

    /**
     * A step whose rows follow {@code rowsPerExpert} with random expert inputs and activations, for timing
     * the expert products alone on given groups ({@link #expertProductsOnly}); routing is not run.
     */
    public Step syntheticStep(int[] rowsPerExpert, long seed) {
        if (rowsPerExpert.length != c.experts()) {
            throw new IllegalArgumentException(rowsPerExpert.length + " group sizes for " + c.experts() + " experts");
        }
        RowPlan plan = RowPlan.of(layout, rowsPerExpert, c.inWidth(), s.gpu.multiprocessors);
        int rows = plan.rows();
        long es = p.bytes;
        DevicePool pool = s.pool;
        long xs = pool.allocate((long) rows * c.dim() * es, "expert input rows");
        long h1 = pool.allocate((long) rows * c.inWidth() * es, "expert hidden pre-activation");
        long act = pool.allocate((long) rows * c.hidden() * es, "expert hidden activation");
        long y = pool.allocate((long) rows * c.dim() * es, "expert output rows");
        if (!plan.compact()) {
            s.zero(xs, (long) rows * c.dim() * es); // padding rows are zero, as the gather leaves them
            s.zero(act, (long) rows * c.hidden() * es);
            fillRows(plan, rowsPerExpert, xs, c.dim(), seed);
            fillRows(plan, rowsPerExpert, act, c.hidden(), seed + 1);
        } else {
            fillRandom(xs, (long) rows * c.dim(), seed, 1.0);
            fillRandom(act, (long) rows * c.hidden(), seed + 1, 1.0);
        }
        return new Step(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, xs, h1, act, y, 0, rowsPerExpert.clone(), plan);
    }

    private void fillRows(RowPlan plan, int[] rowsPerExpert, long base, int width, long seed) {
        for (int e = 0; e < rowsPerExpert.length; e++) {
            if (rowsPerExpert[e] > 0) {
                fillRandom(base + (long) plan.expertBase()[e] * width * p.bytes, (long) rowsPerExpert[e] * width, seed + 7L * e, 1.0);
            }
        }
    }

    /** The forward expert products alone (both ragged GEMMs) over a step's rows: the grouped-GEMM ceiling check. */
    public void expertProductsOnly(Step f) {
        expertProducts("fwd-in", f.rowsPerExpert, f.plan, false, f.xs, c.dim(), w1, c.inWidth(), f.h1, c.inWidth(), c.dim());
        expertProducts("fwd-out", f.rowsPerExpert, f.plan, false, f.act, c.hidden(), w2, c.dim(), f.y, c.dim(), c.hidden());
    }

    /** A device copy of host floats in this layer's precision, in the caller's pool scope. */
    public long toDevice(float[] host) {
        long dst = s.pool.allocate((long) host.length * p.bytes, "input tensor");
        upload(host, dst);
        return dst;
    }

    /** Reads a device tensor of this layer's precision as floats. */
    public float[] download(long src, long count) {
        if (p == Precision.F32) return s.readFloats(src, Math.toIntExact(count));
        long tmp = s.pool.allocate(4L * count, "download staging");
        s.launch(KernelSource.ELEMENTWISE, "cast_bf16_f32").over(count).ptr(src).ptr(tmp).i64(count).run();
        float[] out = s.readFloats(tmp, Math.toIntExact(count));
        s.pool.free(tmp);
        return out;
    }

    /** Gradients as host floats in the CPU layouts: {router gate, gate (or null), up, down}. */
    public float[][] gradients() {
        int e = c.experts(), d = c.dim(), h = c.hidden();
        float[] g = download(dwg, (long) e * d);
        float[] in = download(dw1, (long) e * d * c.inWidth());
        float[] down = download(dw2, (long) e * h * d);
        if (c.activation() != ExpertActivation.SWIGLU) return new float[][] {g, null, in, down};
        float[] gate = new float[e * d * h];
        float[] up = new float[e * d * h];
        for (int x = 0; x < e; x++) {
            for (int r = 0; r < d; r++) {
                long src = ((long) x * d + r) * 2L * h;
                long dst = ((long) x * d + r) * h;
                System.arraycopy(in, (int) src, gate, (int) dst, h);
                System.arraycopy(in, (int) (src + h), up, (int) dst, h);
            }
        }
        return new float[][] {g, gate, up, down};
    }

    // ---------------------------------------------------------------- forward

    private void phase(String name) {
        if (timer != null) timer.phase(name);
    }

    private String k(String base) {
        return base + "_" + p.suffix;
    }

    /** Forward of {@code x} (T, D) of this layer's precision; the buffers live in the caller's pool scope. */
    public Step forward(long x, int tokens) {
        int T = tokens, D = c.dim(), E = c.experts(), K = c.topK(), H = c.hidden(), W = c.inWidth();
        int es = p.bytes;
        DevicePool pool = s.pool;
        phase(PHASE_ROUTER);
        long logits = pool.allocate(4L * T * E, "router logits");
        long probs = pool.allocate(4L * T * E, "router probabilities");
        long lse = pool.allocate(4L * T, "router logsumexp");
        long idx = pool.allocate(4L * T * K, "routing indices");
        long w = pool.allocate(4L * T * K, "routing weights");
        s.gemm(false, true, T, E, D, 1f, x, D, wg, D, 0f, logits, E, p.cublasType, Cublas.CUDA_R_32F);
        int routerBlocks = (T + 3) / 4;
        if (T > 0) {
            if (c.sigmoid()) {
                s.launch(KernelSource.ROUTER, "router_sigmoid_topk").grid(routerBlocks).block(128)
                        .ptr(logits).ptr(bias).i32(T).i32(E).i32(K).ptr(probs).ptr(idx).ptr(w).ptr(lse).run();
            } else {
                s.launch(KernelSource.ROUTER, "router_softmax_topk").grid(routerBlocks).block(128)
                        .ptr(logits).i32(T).i32(E).i32(K).ptr(probs).ptr(idx).ptr(w).ptr(lse).run();
            }
        }
        phase(PHASE_PERMUTE);
        int n = T * K;
        int blocks = Math.max(1, (n + 255) / 256);
        long blockCounts = pool.allocate(4L * blocks * E, "permutation block histograms");
        long blockBase = pool.allocate(4L * blocks * E, "permutation block offsets");
        long counts = pool.allocate(4L * E, "expert counts");
        long offsets = pool.allocate(4L * (E + 1), "expert offsets");
        long expertScale = pool.allocate(4L * E, "expert gradient scale");
        long entryRow = pool.allocate(4L * n, "entry to row map");
        s.launch(KernelSource.PERMUTE, "perm_block_histogram").grid(blocks).block(256).shared(4 * E)
                .ptr(idx).i32(n).i32(E).i32(-1).ptr(blockCounts).run();
        s.launch(KernelSource.PERMUTE, "perm_scan").grid(1).block(1024)
                .ptr(blockCounts).i32(blocks).i32(E).ptr(counts).ptr(offsets).ptr(blockBase).ptr(expertScale).run();
        // router losses need the counts: computed here, off the critical path of the experts
        int chunks = Math.max(1, (T + 255) / 256);
        long partial = pool.allocate(4L * chunks * (E + 1), "router loss partial sums");
        long losses = pool.allocate(8, "router losses");
        long auxGrad = pool.allocate(4L * E, "aux loss gradient");
        s.launch(KernelSource.ROUTER, "router_loss_partials").grid(chunks).block(256).ptr(probs).ptr(lse).i32(T).i32(E).ptr(partial).run();
        s.launch(KernelSource.ROUTER, "router_losses").grid(1).block(1024).ptr(partial).i32(chunks).ptr(counts).i32(T).i32(E).i32(K)
                .f32((float) c.auxScale()).f32(auxWeight).ptr(losses).ptr(auxGrad).run();
        int[] rowsPerExpert = s.readInts(counts, E);
        RowPlan plan = RowPlan.of(layout, rowsPerExpert, c.inWidth(), s.gpu.multiprocessors);
        int rows = plan.rows();
        long rowEntry = pool.allocate(4L * rows, "row to entry map");
        long rowToken = pool.allocate(4L * rows, "row to token map");
        long expertBase = 0;
        if (!plan.compact()) {
            s.memset(rowEntry, (byte) 0xff, 4L * rows); // -1: padding rows
            s.memset(rowToken, (byte) 0xff, 4L * rows);
            expertBase = pool.allocate(4L * E, "expert base rows");
            try (java.lang.foreign.Arena a = java.lang.foreign.Arena.ofConfined()) {
                // pageable source: staged by the driver before the call returns
                s.copyToDevice(expertBase, a.allocateFrom(java.lang.foreign.ValueLayout.JAVA_INT, plan.expertBase()), 4L * E);
            }
        }
        s.launch(KernelSource.PERMUTE, "perm_scatter").grid(blocks).block(256)
                .ptr(idx).i32(n).i32(K).i32(E).i32(-1).ptr(blockBase).ptr(offsets).ptr(expertBase).ptr(rowEntry).ptr(rowToken).ptr(entryRow).run();
        long rowScale = 0;
        if (c.gradientScale() && rows > 0) {
            rowScale = pool.allocate(4L * rows, "expert row scale");
            s.launch(KernelSource.PERMUTE, "expand_expert_scale").grid(E).block(256).ptr(offsets).ptr(expertBase).ptr(expertScale).ptr(rowScale).run();
        }
        long xs = pool.allocate((long) rows * D * es, "expert input rows");
        gatherRows(x, rowToken, xs, rows, (long) D * es);
        phase(PHASE_GEMM);
        long h1 = pool.allocate((long) rows * W * es, "expert hidden pre-activation");
        expertProducts("fwd-in", rowsPerExpert, plan, false, xs, D, w1, W, h1, W, D);
        phase(PHASE_ACTIVATION);
        long act = h1;
        if (c.activation() == ExpertActivation.SWIGLU) {
            act = pool.allocate((long) rows * H * es, "expert hidden activation");
            if (rows > 0) s.launch(KernelSource.ELEMENTWISE, k("swiglu_forward")).over((long) rows * H).ptr(h1).ptr(act).i64(rows).i32(H).run();
        } else if (rows > 0) {
            act = pool.allocate((long) rows * H * es, "expert hidden activation");
            String f = c.activation() == ExpertActivation.GELU ? "gelu_forward" : "relu_forward";
            s.launch(KernelSource.ELEMENTWISE, k(f)).over((long) rows * H).ptr(h1).ptr(act).i64((long) rows * H).run();
        }
        phase(PHASE_GEMM);
        long y = pool.allocate((long) rows * D * es, "expert output rows");
        expertProducts("fwd-out", rowsPerExpert, plan, false, act, H, w2, D, y, D, H);
        phase(PHASE_COMBINE);
        long out = pool.allocate((long) T * D * es, "layer output");
        if (T > 0) {
            s.launch(KernelSource.PERMUTE, k("combine_rows")).grid(Math.min(T, 65535 * 4)).block(256)
                    .ptr(y).ptr(entryRow).ptr(w).ptr(rowScale).ptr(out).i32(T).i32(K).i32(D).i32(0).run();
        }
        return new Step(T, x, logits, probs, lse, idx, w, counts, offsets, entryRow, rowEntry, rowToken, rowScale, auxGrad, losses,
                xs, h1, act, y, out, rowsPerExpert, plan);
    }

    private void gatherRows(long src, long index, long dst, int rows, long rowBytes) {
        if (rows == 0) return;
        int unit = rowBytes % 16 == 0 ? 16 : rowBytes % 8 == 0 ? 8 : rowBytes % 4 == 0 ? 4 : 2;
        s.launch(KernelSource.PERMUTE, "gather_rows").grid(Math.min(rows, 65535 * 8)).block(128)
                .ptr(src).ptr(index).ptr(dst).i32(rows).i64(rowBytes).i32(unit).run();
    }

    /** A key for the ragged-product strategy cache: the sizes that decide which way is fastest. */
    private String shapeKey(int[] rowsPerExpert) {
        int rows = 0;
        for (int r : rowsPerExpert) rows += r;
        // bucket the row total so that routing noise does not re-time every step
        int bucket = Integer.highestOneBit(Math.max(1, rows));
        return p + " E=" + c.experts() + " D=" + c.dim() + " H=" + c.hidden() + " rows~" + bucket;
    }

    /**
     * Per expert e: {@code C_e (n × cols) = A_e (n × inner) · op(B_e)}, B_e the expert's (inner × cols)
     * slice, or transposed ({@code transB}: B_e stored (cols × inner)); A_e and C_e are the expert's rows
     * in the layout of {@code plan} (ragged products when compact, one batched product per bucket else).
     */
    private void expertProducts(String what, int[] rowsPerExpert, RowPlan plan, boolean transB, long a, int lda, long b, int ldb,
                                long cOut, int cols, int inner) {
        long es = p.bytes;
        int experts = rowsPerExpert.length;
        if (plan.compact()) {
            List<RaggedGemm.Product> list = new ArrayList<>(experts);
            long o = 0;
            for (int e = 0; e < experts; e++) {
                int n = rowsPerExpert[e];
                long bSlice = b + (long) e * inner * cols * es;
                list.add(new RaggedGemm.Product(false, transB, n, cols, inner, a + o * lda * es, lda, bSlice, ldb, cOut + o * cols * es, cols));
                o += n;
            }
            ragged.run(what + " " + shapeKey(rowsPerExpert), list, p.cublasType, p.cublasType);
            return;
        }
        if (plan.strided(experts)) {
            int cap = plan.buckets().get(0).cap();
            s.gemmBatched(false, transB, cap, cols, inner, a, lda, (long) cap * lda, b, ldb, (long) inner * cols, cOut, cols,
                    (long) cap * cols, experts, p.cublasType, p.cublasType);
            return;
        }
        for (RowPlan.Bucket bucket : plan.buckets()) {
            int[] members = bucket.experts();
            int cap = bucket.cap();
            if (members.length == 1) {
                int e = members[0];
                s.gemm(false, transB, cap, cols, inner, 1f, a + (long) plan.expertBase()[e] * lda * es, lda, b + (long) e * inner * cols * es,
                        ldb, 0f, cOut + (long) plan.expertBase()[e] * cols * es, cols, p.cublasType, p.cublasType);
                continue;
            }
            long[] ptrs = new long[3 * members.length];
            for (int j = 0; j < members.length; j++) {
                int e = members[j];
                ptrs[j] = a + (long) plan.expertBase()[e] * lda * es;
                ptrs[members.length + j] = b + (long) e * inner * cols * es;
                ptrs[2 * members.length + j] = cOut + (long) plan.expertBase()[e] * cols * es;
            }
            s.gemmBatched(false, transB, cap, cols, inner, ptrs, lda, ldb, cols, p.cublasType, p.cublasType);
        }
    }

    // ---------------------------------------------------------------- backward

    /**
     * Backward from {@code dOut} (T, D): fills the parameter gradients (overwritten, not accumulated) and
     * returns dx (T, D), including the router's path and the aux and z losses at their weights.
     */
    public long backward(Step f, long dOut) {
        int T = f.tokens, D = c.dim(), E = c.experts(), K = c.topK(), H = c.hidden(), W = c.inWidth();
        int es = p.bytes;
        int rows = f.rows;
        DevicePool pool = s.pool;
        phase(PHASE_COMBINE);
        long dy = pool.allocate((long) rows * D * es, "expert output gradient");
        long dw = pool.allocate(4L * T * K, "routing weight gradient");
        s.zero(dw, 4L * T * K);
        if (rows > 0) {
            s.launch(KernelSource.PERMUTE, k("combine_backward")).grid(Math.min(rows, 65535 * 8)).block(256)
                    .ptr(dOut).ptr(f.y).ptr(f.rowEntry).ptr(f.w).ptr(f.rowScale).ptr(dy).ptr(dw).i32(rows).i32(K).i32(D).run();
        }
        phase(PHASE_GEMM);
        long dact = pool.allocate((long) rows * H * es, "expert hidden gradient");
        expertProducts("bwd-out-data", f.rowsPerExpert, f.plan, true, dy, D, w2, D, dact, H, D);
        weightProducts("bwd-out-weight", f, f.act, H, dy, D, dw2);
        phase(PHASE_ACTIVATION);
        long dh1 = pool.allocate((long) rows * W * es, "expert pre-activation gradient");
        if (rows > 0) {
            if (c.activation() == ExpertActivation.SWIGLU) {
                s.launch(KernelSource.ELEMENTWISE, k("swiglu_backward")).over((long) rows * H).ptr(f.h1).ptr(dact).ptr(dh1).i64(rows).i32(H).run();
            } else {
                String fn = c.activation() == ExpertActivation.GELU ? "gelu_backward" : "relu_backward";
                s.launch(KernelSource.ELEMENTWISE, k(fn)).over((long) rows * H).ptr(f.h1).ptr(dact).ptr(dh1).i64((long) rows * H).run();
            }
        }
        phase(PHASE_GEMM);
        long dxs = pool.allocate((long) rows * D * es, "expert input gradient");
        expertProducts("bwd-in-data", f.rowsPerExpert, f.plan, true, dh1, W, w1, W, dxs, D, W);
        weightProducts("bwd-in-weight", f, f.xs, D, dh1, W, dw1);
        phase(PHASE_PERMUTE);
        long dx = pool.allocate((long) T * D * es, "input gradient");
        if (T > 0) {
            s.launch(KernelSource.PERMUTE, k("combine_rows")).grid(Math.min(T, 65535 * 4)).block(256)
                    .ptr(dxs).ptr(f.entryRow).ptr(0L).ptr(0L).ptr(dx).i32(T).i32(K).i32(D).i32(0).run();
        }
        phase(PHASE_ROUTER);
        long dlogits = pool.allocate(4L * T * E, "router logit gradient");
        if (T > 0) {
            s.launch(KernelSource.ROUTER, "router_backward").grid((T + 3) / 4).block(128)
                    .i32(c.sigmoid() ? 1 : 0).ptr(f.logits).ptr(f.probs).ptr(f.lse).ptr(f.idx).ptr(f.w).ptr(dw)
                    .ptr(auxWeight != 0 ? f.auxGrad : 0L).f32(zWeight).i32(T).i32(E).i32(K).ptr(dlogits).run();
        }
        long dl = dlogits;
        if (p == Precision.BF16) {
            dl = pool.allocate(2L * T * E, "router logit gradient (bf16)");
            s.launch(KernelSource.ELEMENTWISE, "cast_f32_bf16").over((long) T * E).ptr(dlogits).ptr(dl).i64((long) T * E).run();
        }
        // dx += dlogits · Wg ; dWg = dlogitsᵀ · x
        s.gemm(false, false, T, D, E, 1f, dl, E, wg, D, 1f, dx, D, p.cublasType, p.cublasType);
        if (T > 0) s.gemm(true, false, E, D, T, 1f, dl, E, f.x, D, 0f, dwg, D, p.cublasType, p.cublasType);
        else s.zero(dwg, (long) E * D * es);
        return dx;
    }

    /**
     * Per expert: dW_e (inner × cols) = A_eᵀ (inner × n) · G_e (n × cols); experts with no rows get zeros.
     * In a padded or bucketed layout the padding rows of A and G are zero, so they add nothing.
     */
    private void weightProducts(String what, Step f, long a, int inner, long g, int cols, long dW) {
        long es = p.bytes;
        int experts = f.rowsPerExpert.length;
        RowPlan plan = f.plan;
        if (plan.compact()) {
            List<RaggedGemm.Product> list = new ArrayList<>(experts);
            long o = 0;
            for (int e = 0; e < experts; e++) {
                int n = f.rowsPerExpert[e];
                list.add(new RaggedGemm.Product(true, false, inner, cols, n, a + o * inner * es, inner, g + o * cols * es, cols,
                        dW + (long) e * inner * cols * es, cols));
                o += n;
            }
            ragged.run(what + " " + shapeKey(f.rowsPerExpert), list, p.cublasType, p.cublasType);
        } else if (plan.strided(experts)) {
            int cap = plan.buckets().get(0).cap();
            s.gemmBatched(true, false, inner, cols, cap, a, inner, (long) cap * inner, g, cols, (long) cap * cols, dW, cols,
                    (long) inner * cols, experts, p.cublasType, p.cublasType);
            return;
        } else {
            for (RowPlan.Bucket bucket : plan.buckets()) {
                int[] members = bucket.experts();
                int cap = bucket.cap();
                long[] ptrs = new long[3 * members.length];
                for (int j = 0; j < members.length; j++) {
                    int e = members[j];
                    ptrs[j] = a + (long) plan.expertBase()[e] * inner * es;
                    ptrs[members.length + j] = g + (long) plan.expertBase()[e] * cols * es;
                    ptrs[2 * members.length + j] = dW + (long) e * inner * cols * es;
                }
                if (members.length == 1) {
                    s.gemm(true, false, inner, cols, cap, 1f, ptrs[0], inner, ptrs[1], cols, 0f, ptrs[2], cols, p.cublasType, p.cublasType);
                } else {
                    s.gemmBatched(true, false, inner, cols, cap, ptrs, inner, cols, cols, p.cublasType, p.cublasType);
                }
            }
        }
        zeroEmptyExperts(f.rowsPerExpert, dW, (long) inner * cols);
    }

    /** Experts that got no rows have a zero weight gradient (their product is skipped). */
    private void zeroEmptyExperts(int[] rowsPerExpert, long dW, long elementsPerExpert) {
        for (int e = 0; e < rowsPerExpert.length; e++) {
            if (rowsPerExpert[e] == 0) s.zero(dW + (long) e * elementsPerExpert * p.bytes, elementsPerExpert * p.bytes);
        }
    }

    @Override
    public void close() {
        for (long a : new long[] {wg, w1, w2, bias, dwg, dw1, dw2}) s.pool.free(a);
    }
}
