package moe4j.kernels.cuda;

import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The ragged grouped GEMM of the experts: one row-major product per expert over that expert's rows,
 * run in one of three ways, and for each shape the fastest of them (timed with events the first time
 * the shape is seen; products write with beta = 0, so timing runs repeat the same result):
 * <ul>
 *   <li>{@link Strategy#LOOP}: one {@code cublasGemmEx} per expert on the rank's stream;
 *   <li>{@link Strategy#STREAMS}: the same products spread over a few side streams (each with its own
 *       cuBLAS handle and workspace) joined by events, so that small experts fill the GPU together;
 *   <li>{@link Strategy#GROUPED}: one {@code cublasGemmGroupedBatchedEx} call for all experts.
 * </ul>
 */
final class RaggedGemm {
    enum Strategy { LOOP, STREAMS, GROUPED }

    /** One row-major product {@code C (m×n) = op(A)·op(B)} with leading dimensions. */
    record Product(boolean transA, boolean transB, int m, int n, int k, long a, int lda, long b, int ldb, long c, int ldc) {
        double flops() {
            return 2.0 * m * n * k;
        }
    }

    static final int SIDE_STREAMS = 4;

    private final CudaStream main;
    private final List<MemorySegment> sideStreams = new ArrayList<>();
    private final List<MemorySegment> sideHandles = new ArrayList<>();
    private final List<MemorySegment> sideDone = new ArrayList<>();
    private MemorySegment forked;
    private final Map<String, Strategy> chosen = new HashMap<>();
    private final Map<String, Map<Strategy, Double>> trials = new LinkedHashMap<>();
    private Strategy forced;

    RaggedGemm(CudaStream main) {
        this.main = main;
    }

    /** Uses {@code s} for every shape instead of timing (null: choose per shape). */
    void force(Strategy s) {
        forced = s;
    }

    /** The strategy timings per shape key, milliseconds (for the benchmark report). */
    Map<String, Map<Strategy, Double>> trials() {
        return trials;
    }

    Map<String, Strategy> chosen() {
        return chosen;
    }

    /** Runs {@code products} (all of element type {@code abType}, outputs {@code cType}) under {@code shapeKey}'s strategy. */
    void run(String shapeKey, List<Product> products, int abType, int cType) {
        List<Product> work = new ArrayList<>();
        for (Product p : products) {
            if (p.m() > 0 && p.n() > 0 && p.k() > 0) work.add(p);
        }
        if (work.isEmpty()) return;
        Strategy s = forced != null ? forced : chosen.get(shapeKey);
        if (s == null) {
            s = choose(shapeKey, work, abType, cType);
            chosen.put(shapeKey, s);
        }
        main.begin("ragged " + s + ": " + shapeKey);
        try {
            run(s, work, abType, cType);
        } finally {
            main.end();
        }
    }

    private Strategy choose(String key, List<Product> work, int abType, int cType) {
        Map<Strategy, Double> times = new LinkedHashMap<>();
        MemorySegment start = main.newEvent();
        MemorySegment end = main.newEvent();
        Strategy best = Strategy.LOOP;
        double bestMs = Double.MAX_VALUE;
        for (Strategy s : Strategy.values()) {
            try {
                run(s, work, abType, cType); // warm-up (handles, cuBLAS heuristics)
                double ms = Double.MAX_VALUE;
                for (int rep = 0; rep < 3; rep++) {
                    main.record(start);
                    run(s, work, abType, cType);
                    main.record(end);
                    main.driver.synchronizeEvent(end);
                    ms = Math.min(ms, main.driver.elapsedMillis(start, end));
                }
                times.put(s, (double) ms);
                if (ms < bestMs) {
                    bestMs = ms;
                    best = s;
                }
            } catch (CudaException e) {
                // a strategy this cuBLAS does not support for the shape is simply not chosen
                main.synchronize();
            }
        }
        main.driver.destroyEvent(start);
        main.driver.destroyEvent(end);
        trials.put(key, times);
        return best;
    }

    void run(Strategy s, List<Product> work, int abType, int cType) {
        switch (s) {
            case LOOP -> {
                for (Product p : work) main.gemm(p.transA(), p.transB(), p.m(), p.n(), p.k(), 1f, p.a(), p.lda(), p.b(), p.ldb(), 0f,
                        p.c(), p.ldc(), abType, cType);
            }
            case STREAMS -> streams(work, abType, cType);
            case GROUPED -> grouped(work, abType, cType);
        }
    }

    private void ensureSideStreams() {
        if (!sideStreams.isEmpty()) return;
        Cublas blas = Cublas.get();
        for (int i = 0; i < SIDE_STREAMS; i++) {
            MemorySegment st = main.driver.createStream(CudaDriver.CU_STREAM_NON_BLOCKING);
            MemorySegment h = blas.createHandle();
            blas.setStream(h, st);
            long ws = main.pool.allocatePersistent(CudaStream.CUBLAS_WORKSPACE_BYTES, "a side stream's cuBLAS workspace");
            blas.setWorkspace(h, ws, CudaStream.CUBLAS_WORKSPACE_BYTES);
            sideStreams.add(st);
            sideHandles.add(h);
            sideDone.add(main.driver.createEvent(CudaDriver.CU_EVENT_DISABLE_TIMING));
        }
        forked = main.driver.createEvent(CudaDriver.CU_EVENT_DISABLE_TIMING);
    }

    /** Products spread over the side streams, largest first onto the least loaded stream. */
    private void streams(List<Product> work, int abType, int cType) {
        ensureSideStreams();
        main.driver.record(forked, main.stream);
        for (MemorySegment st : sideStreams) main.driver.waitEvent(st, forked);
        double[] load = new double[SIDE_STREAMS];
        List<Product> order = new ArrayList<>(work);
        order.sort((x, y) -> Double.compare(y.flops(), x.flops()));
        for (Product p : order) {
            int best = 0;
            for (int i = 1; i < SIDE_STREAMS; i++) if (load[i] < load[best]) best = i;
            load[best] += p.flops();
            main.gemm(sideHandles.get(best), p.transA(), p.transB(), p.m(), p.n(), p.k(), 1f, p.a(), p.lda(), p.b(), p.ldb(), 0f,
                    p.c(), p.ldc(), abType, cType);
        }
        for (int i = 0; i < SIDE_STREAMS; i++) {
            main.driver.record(sideDone.get(i), sideStreams.get(i));
            main.driver.waitEvent(main.stream, sideDone.get(i));
        }
    }

    /** All products in one cublasGemmGroupedBatchedEx call (one group per product), column-major terms. */
    private void grouped(List<Product> work, int abType, int cType) {
        int g = work.size();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment ta = arena.allocate(JAVA_INT, g), tb = arena.allocate(JAVA_INT, g);
            MemorySegment m = arena.allocate(JAVA_INT, g), n = arena.allocate(JAVA_INT, g), k = arena.allocate(JAVA_INT, g);
            MemorySegment lda = arena.allocate(JAVA_INT, g), ldb = arena.allocate(JAVA_INT, g), ldc = arena.allocate(JAVA_INT, g);
            MemorySegment alpha = arena.allocate(JAVA_FLOAT, g), beta = arena.allocate(JAVA_FLOAT, g);
            MemorySegment size = arena.allocate(JAVA_INT, g);
            MemorySegment ptrs = arena.allocate(JAVA_LONG, 3L * g);
            for (int i = 0; i < g; i++) {
                Product p = work.get(i);
                Cublas.checkGemmArguments(p.transA(), p.transB(), p.m(), p.n(), p.k(), p.lda(), p.ldb(), p.ldc());
                // row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap operands, m and n
                ta.setAtIndex(JAVA_INT, i, p.transB() ? Cublas.CUBLAS_OP_T : Cublas.CUBLAS_OP_N);
                tb.setAtIndex(JAVA_INT, i, p.transA() ? Cublas.CUBLAS_OP_T : Cublas.CUBLAS_OP_N);
                m.setAtIndex(JAVA_INT, i, p.n());
                n.setAtIndex(JAVA_INT, i, p.m());
                k.setAtIndex(JAVA_INT, i, p.k());
                lda.setAtIndex(JAVA_INT, i, p.ldb());
                ldb.setAtIndex(JAVA_INT, i, p.lda());
                ldc.setAtIndex(JAVA_INT, i, p.ldc());
                alpha.setAtIndex(JAVA_FLOAT, i, 1f);
                beta.setAtIndex(JAVA_FLOAT, i, 0f);
                size.setAtIndex(JAVA_INT, i, 1);
                ptrs.setAtIndex(JAVA_LONG, i, p.b());
                ptrs.setAtIndex(JAVA_LONG, g + i, p.a());
                ptrs.setAtIndex(JAVA_LONG, 2L * g + i, p.c());
            }
            long dev = main.pool.allocate(24L * g, "grouped GEMM pointer arrays");
            // pageable source: the driver stages it before returning, so the arena may close after the call
            main.copyToDevice(dev, ptrs, 24L * g);
            Cublas.get().gemmGroupedBatched(main.cublas, ta, tb, m, n, k, alpha, dev, abType, lda, dev + 8L * g, ldb, beta,
                    dev + 16L * g, cType, ldc, g, size);
            main.pool.free(dev);
        }
    }

}
