package moe4j.kernels.cuda;

import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Deque;
import java.util.HashMap;
import java.util.Map;
import java.util.function.Predicate;
import moe4j.kernels.MatmulKernels;
import moe4j.tensor.Tensor;

/**
 * The bf16 operand copies that open {@link MatmulKernels#reuseCopies} scopes keep on one stream: a product
 * that converts a float32 operand first looks for a copy of the same region (same tensor object, offset,
 * shape, stride and row layout), and a scope that keeps that tensor takes the new copy. Closing a scope
 * frees its copies (stream-ordered, after the products that read them).
 */
final class KeptCopies {
    /** A converted region: {@code layout} is the padded layout's row map (null for a plain copy). */
    record Key(Tensor tensor, long offset, long rows, long cols, long ld, int[] layout) {
        @Override
        public boolean equals(Object o) {
            return o instanceof Key k && k.tensor == tensor && k.offset == offset && k.rows == rows && k.cols == cols && k.ld == ld
                    && Arrays.equals(k.layout, layout);
        }

        @Override
        public int hashCode() {
            return ((System.identityHashCode(tensor) * 31 + Long.hashCode(offset)) * 31 + Long.hashCode(rows * 131 + cols)) * 31
                    + Arrays.hashCode(layout);
        }
    }

    private final CudaStream stream;
    private final Deque<Scope> scopes = new ArrayDeque<>();

    KeptCopies(CudaStream stream) {
        this.stream = stream;
    }

    MatmulKernels.Reuse open(Predicate<Tensor> which) {
        Scope s = new Scope(which);
        scopes.push(s);
        return s;
    }

    /** The kept copy of {@code key}, or 0. */
    long find(Key key) {
        if (scopes.isEmpty()) return 0;
        for (Scope s : scopes) {
            Long a = s.kept.get(key);
            if (a != null) return a;
        }
        return 0;
    }

    /** The innermost open scope that keeps copies of {@code t}, or null. */
    Scope keeperOf(Tensor t) {
        for (Scope s : scopes) if (s.which.test(t)) return s;
        return null;
    }

    final class Scope implements MatmulKernels.Reuse {
        private final Predicate<Tensor> which;
        private final Map<Key, Long> kept = new HashMap<>();

        private Scope(Predicate<Tensor> which) {
            this.which = which;
        }

        void keep(Key key, long address) {
            kept.put(key, address);
        }

        @Override
        public void close() {
            if (scopes.peek() != this) throw new IllegalStateException("reuseCopies scopes must close innermost first");
            scopes.pop();
            kept.values().forEach(stream.pool()::free);
            kept.clear();
        }
    }
}
