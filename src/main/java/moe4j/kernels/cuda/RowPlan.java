package moe4j.kernels.cuda;

import java.util.ArrayList;
import java.util.List;

/**
 * Where each expert's rows go in the grouped layout, decided on the host from the per-expert counts.
 * Compact: expert after expert, no padding, ragged products ({@link RaggedGemm}). Otherwise experts are
 * put in buckets of similar size; every expert of a bucket gets {@code cap} rows (its own first, then
 * zero rows), so one batched product per bucket serves all of them and fills the GPU where a product
 * per small expert would not. One bucket of all experts in order is the padded layout (one strided
 * batched product).
 *
 * @param rows       rows of the layout (padding included)
 * @param expertBase first row of each expert, or null for the compact layout
 * @param buckets    the batched products' groups (empty when compact)
 */
record RowPlan(int rows, int[] expertBase, List<Bucket> buckets) {
    /** Experts {@code experts} with {@code cap} rows each, from row {@code base}. */
    record Bucket(int cap, int base, int[] experts) {}

    static final int PAD_ROWS = 64;
    /** Padding the padded layout may add (as a share of the rows) before AUTO takes buckets instead. */
    static final double MAX_PADDING = 1.25;
    /** A bucket takes experts down to this share of its largest (so padding stays under ~1/0.85). */
    static final double BUCKET_FILL = 0.85;

    boolean compact() {
        return expertBase == null;
    }

    /** One bucket holding every expert in order: a single strided batched product. */
    boolean strided(int experts) {
        if (buckets.size() != 1 || buckets.get(0).experts().length != experts) return false;
        int[] e = buckets.get(0).experts();
        for (int i = 0; i < e.length; i++) if (e[i] != i) return false;
        return true;
    }

    static int roundUp(int n) {
        return (n + PAD_ROWS - 1) / PAD_ROWS * PAD_ROWS;
    }

    /** Output tile of a large cuBLAS product, for judging whether one expert's product fills the GPU. */
    static final int TILE_ROWS = 128;
    static final int TILE_COLS = 256;

    /**
     * AUTO's first question: does every expert's input product (rows × {@code width}) cover the GPU's
     * {@code multiprocessors} with output tiles on its own? Then products one expert at a time lose
     * nothing and padding would only add work (measured: D=2048 H=7168 E=8 ran 702 TFLOP/s compact
     * against 617 bucketed on uneven groups).
     */
    static boolean expertsFillTheGpu(int[] counts, int width, int multiprocessors) {
        long colTiles = (width + TILE_COLS - 1) / TILE_COLS;
        boolean any = false;
        for (int c : counts) {
            if (c == 0) continue;
            any = true;
            if ((long) ((c + TILE_ROWS - 1) / TILE_ROWS) * colTiles < multiprocessors) return false;
        }
        return any;
    }

    /** As {@link #of(CudaMoELayer.RowLayout, int[], int, int)} for a layout other than AUTO, or AUTO without the fill test. */
    static RowPlan of(CudaMoELayer.RowLayout layout, int[] counts) {
        return of(layout, counts, 0, 0);
    }

    /**
     * The plan for {@code counts}: AUTO is compact when every expert's product of {@code width} columns
     * fills the GPU ({@link #expertsFillTheGpu}; skipped when {@code multiprocessors} is 0), else padded
     * when that adds at most a quarter of the rows, else bucketed.
     */
    static RowPlan of(CudaMoELayer.RowLayout layout, int[] counts, int width, int multiprocessors) {
        long total = 0;
        int max = 0;
        for (int c : counts) {
            total += c;
            max = Math.max(max, c);
        }
        boolean fills = layout == CudaMoELayer.RowLayout.AUTO && multiprocessors > 0 && expertsFillTheGpu(counts, width, multiprocessors);
        if (layout == CudaMoELayer.RowLayout.COMPACT || total == 0 || fills) return new RowPlan((int) total, null, List.of());
        int cap = roundUp(max);
        boolean pad = layout == CudaMoELayer.RowLayout.PADDED
                || layout == CudaMoELayer.RowLayout.AUTO && (double) cap * counts.length <= MAX_PADDING * total;
        if (pad) {
            int[] all = new int[counts.length];
            int[] base = new int[counts.length];
            for (int e = 0; e < all.length; e++) {
                all[e] = e;
                base[e] = e * cap;
            }
            return new RowPlan(cap * counts.length, base, List.of(new Bucket(cap, 0, all)));
        }
        // buckets: experts by count, largest first; a bucket closes when the next would be padded too much
        List<Integer> order = new ArrayList<>();
        for (int e = 0; e < counts.length; e++) if (counts[e] > 0) order.add(e);
        order.sort((a, b) -> counts[b] != counts[a] ? Integer.compare(counts[b], counts[a]) : Integer.compare(a, b));
        int[] base = new int[counts.length];
        List<Bucket> buckets = new ArrayList<>();
        int row = 0;
        int i = 0;
        while (i < order.size()) {
            int bucketCap = roundUp(counts[order.get(i)]);
            int j = i;
            while (j < order.size() && roundUp(counts[order.get(j)]) >= BUCKET_FILL * bucketCap) j++;
            int[] members = new int[j - i];
            for (int m = 0; m < members.length; m++) {
                members[m] = order.get(i + m);
                base[members[m]] = row + m * bucketCap;
            }
            buckets.add(new Bucket(bucketCap, row, members));
            row += members.length * bucketCap;
            i = j;
        }
        return new RowPlan(row, base, List.copyOf(buckets));
    }

    /** A short description for reports: "compact", "padded to 1152 rows", "12 buckets (cap 64..1152)". */
    String describe(int experts) {
        if (compact()) return "rows packed, ragged products";
        if (strided(experts)) return "rows padded to " + buckets.get(0).cap() + " per expert, one batched product per projection";
        int lo = Integer.MAX_VALUE, hi = 0;
        for (Bucket b : buckets) {
            lo = Math.min(lo, b.cap());
            hi = Math.max(hi, b.cap());
        }
        return "experts in " + buckets.size() + " buckets of " + lo + ".." + hi + " rows each, one batched product per bucket ("
                + rows + " rows with padding)";
    }
}
