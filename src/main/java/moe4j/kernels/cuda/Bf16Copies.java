package moe4j.kernels.cuda;

import static moe4j.kernels.cuda.CudaKernels.at;

import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import moe4j.tensor.Tensor;

/**
 * The bfloat16 copies of a mixed-precision call's float32 operands, in stream-ordered scratch memory:
 * freed together on close, after the products queued with them (the frees are ordered on the stream),
 * also when a product throws. Copies of tensors an open {@link KeptCopies} scope keeps outlive the call.
 * Rows of grouped products may be copied into a padded layout ({@link RowPlan}, {@link RowMap}).
 */
final class Bf16Copies implements AutoCloseable {
    /**
     * A grouped layout's row map on the device ({@code pad_rows_f32_bf16}, {@code unpad_rows_f32}): 4 ints
     * per group (its first packed row, its first row in the layout, its rows, its rows in the layout), also
     * kept on the host ({@code layout}, which names the layout of kept copies); {@code maxCap} the most rows
     * a group has in the layout, {@code paddedRows} the layout's rows.
     */
    record RowMap(long address, int groups, int maxCap, int paddedRows, int[] layout) {
        /** Group g's first row in the layout. */
        int layoutRow(int g) {
            return layout[groups + g];
        }

        /** Blocks per group of a row-moving kernel: one per padded row, at most a few per multiprocessor over all groups. */
        int blocks(int multiprocessors) {
            return Math.max(1, Math.min(maxCap, 8 * multiprocessors / Math.max(1, groups) + 1));
        }

        /**
         * The map's 4 ints per group for {@code plan} over the groups of {@code offsets}: a padded or bucketed
         * plan's rows (0 outside buckets), or for a compact plan the packed rows themselves (no padding).
         */
        static int[] layoutOf(int[] offsets, RowPlan plan) {
            int groups = offsets.length - 1;
            int[] meta = new int[4 * groups];
            for (int g = 0; g < groups; g++) {
                int count = offsets[g + 1] - offsets[g];
                meta[g] = offsets[g] - offsets[0];
                meta[groups + g] = plan.compact() ? meta[g] : plan.expertBase()[g];
                meta[2 * groups + g] = count;
                if (plan.compact()) meta[3 * groups + g] = count;
            }
            for (RowPlan.Bucket bucket : plan.buckets()) {
                for (int g : bucket.experts()) meta[3 * groups + g] = bucket.cap();
            }
            return meta;
        }

        /** The map of {@code layout} ({@link #layoutOf}) copied to {@code address} (4 bytes per int) on {@code s}. */
        static RowMap upload(CudaStream s, long address, int[] layout, int paddedRows) {
            try (Arena arena = Arena.ofConfined()) {
                // pageable source: the driver stages it before returning, so the arena may close after the call
                s.copyToDevice(address, arena.allocateFrom(ValueLayout.JAVA_INT, layout), 4L * layout.length);
            }
            int groups = layout.length / 4;
            int maxCap = 0;
            for (int g = 0; g < groups; g++) maxCap = Math.max(maxCap, layout[3 * groups + g]);
            return new RowMap(address, groups, maxCap, paddedRows, layout);
        }

        /** Each group's rows of the packed fp32 {@code src} into the layout at {@code dst} as bf16, zero rows after them. */
        void pad(CudaStream s, long src, long dst, int cols) {
            padGathered(s, src, 0L, dst, cols);
        }

        /**
         * As {@link #pad}, packed row i taken from row {@code index[i]} of {@code src} ({@code index} an int32
         * device array of the packed rows from offsets[0]; 0 for none: row i of {@code src}).
         */
        void padGathered(CudaStream s, long src, long index, long dst, int cols) {
            s.launch(KernelSource.PERMUTE, "pad_rows_f32_bf16").grid(blocks(s.gpu.multiprocessors), groups)
                    .ptr(src).ptr(dst).ptr(address).ptr(index).i32(groups).i32(cols).i32(wide(src, cols)).run();
        }

        /** {@code out[entryOfRow[i]]} = the layout row of packed row i ({@code out} holds −1 beforehand; entries from offsets[0]). */
        void layoutRowOfEntry(CudaStream s, long entryOfRow, long out) {
            s.launch(KernelSource.PERMUTE, "layout_row_of_entry").grid(Math.max(1, (maxCap + Launch.THREADS - 1) / Launch.THREADS), groups)
                    .ptr(address).ptr(entryOfRow).i32(groups).ptr(out).run();
        }

        /**
         * Adds each group's rows of the fp32 layout at {@code src} into rows {@code index[i]} of {@code dst}
         * (atomically), a block per row: the additions are latency-bound, so as many rows as possible are in flight.
         */
        void unpadScatterAdd(CudaStream s, long src, long index, long dst, int cols) {
            int wide = cols % 4 == 0 && src % 16 == 0 && dst % 16 == 0 ? 1 : 0;
            s.launch(KernelSource.PERMUTE, "unpad_scatter_add_rows_f32").grid(Math.max(1, maxCap), groups)
                    .ptr(src).ptr(dst).ptr(address).ptr(index).i32(groups).i32(cols).i32(wide).run();
        }

        /** Moves each group's rows of the fp32 layout at {@code src} to the packed rows at {@code dst}. */
        void unpad(CudaStream s, long src, long dst, int cols) {
            s.launch(KernelSource.PERMUTE, "unpad_rows_f32").grid(blocks(s.gpu.multiprocessors), groups)
                    .ptr(src).ptr(dst).ptr(address).i32(groups).i32(cols).i32(wide(dst, cols)).run();
        }

        /**
         * 1 when rows of {@code cols} floats from {@code packedBase} can move four floats at a time (every
         * row 16-byte aligned; the padded side comes from the pool, 256-byte aligned), else 0.
         */
        private static int wide(long packedBase, int cols) {
            return cols % 4 == 0 && packedBase % 16 == 0 ? 1 : 0;
        }
    }

    private final CudaStream s;
    private final List<Long> addresses = new ArrayList<>();

    Bf16Copies(CudaStream s) {
        this.s = s;
    }

    /**
     * A copy of the matrix of {@code rows} stored rows of {@code cols} at element {@code off} of
     * {@code t}, row stride {@code ld} (the gaps between rows are copied too, so the copy keeps the
     * stride): its device address.
     */
    long of(Tensor t, long off, long rows, long cols, long ld) {
        long span = (rows - 1) * ld + cols;
        KeptCopies.Key key = new KeptCopies.Key(t, off, rows, cols, ld, null);
        long kept = s.kept().find(key);
        if (kept != 0) return kept;
        long dst = target(key, 2 * span);
        s.launch(KernelSource.ELEMENTWISE, "cast_f32_bf16").over(span).ptr(at(t, off)).ptr(dst).i64(span).run();
        return dst;
    }

    /** A copy of all of {@code t} (a packed weight, for instance): its device address. */
    long of(Tensor t) {
        return of(t, 0, 1, t.numel(), t.numel());
    }

    /** Memory for the copy {@code key}: kept by an open reuse scope that keeps its tensor, else scratch of this call. */
    private long target(KeptCopies.Key key, long bytes) {
        KeptCopies.Scope keeper = s.kept().keeperOf(key.tensor());
        if (keeper == null) return scratch(bytes);
        long dst = s.pool().allocatePersistent(bytes, "bf16 operand copy kept for reuse");
        keeper.keep(key, dst);
        return dst;
    }

    /** Scratch device memory of {@code bytes}, freed with the copies. */
    long scratch(long bytes) {
        long dst = s.pool().allocate(bytes, "scratch of a mixed-precision product");
        addresses.add(dst);
        return dst;
    }

    /** The row map of {@code plan} for the groups of {@code offsets} on the device, in this call's scratch. */
    RowMap rowMap(int[] offsets, RowPlan plan) {
        int[] layout = RowMap.layoutOf(offsets, plan);
        return RowMap.upload(s, scratch(4L * layout.length), layout, plan.rows());
    }

    /** A bf16 copy of the packed rows of {@code cols} at element {@code off} of {@code t}, in the padded layout of {@code map}. */
    long padded(Tensor t, long off, int cols, RowMap map) {
        KeptCopies.Key key = new KeptCopies.Key(t, off, map.paddedRows(), cols, cols, map.layout());
        long kept = s.kept().find(key);
        if (kept != 0) return kept;
        long dst = target(key, 2L * map.paddedRows() * cols);
        map.pad(s, at(t, off), dst, cols);
        return dst;
    }

    @Override
    public void close() {
        addresses.forEach(s.pool()::free);
    }
}
