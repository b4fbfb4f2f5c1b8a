package moe4j.nn;

import java.util.ArrayList;
import java.util.List;
import moe4j.tensor.Device;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;

/**
 * The keys and values of one sequence's tokens so far, per attention layer, for decoding one token at a
 * time without recomputing the prefix. Each layer holds (capacity, Hkv, hd) keys and values, already
 * rotated, in persistent memory on the model's device; {@link Layer#append} adds rows after the last.
 */
public final class KvCache {
    private final List<Layer> layers = new ArrayList<>();
    private final int capacity;

    /** A cache for up to {@code capacity} tokens of {@code model}. */
    public KvCache(MoETransformer model, int capacity) {
        if (capacity < 1) throw new IllegalArgumentException("KvCache: capacity must be >= 1, got " + capacity);
        this.capacity = capacity;
        Device device = model.parameters().getFirst().device();
        for (TransformerBlock block : model.layers()) {
            Attention a = block.attention();
            layers.add(new Layer(device, capacity, a.options().nKvHeads(), a.headDim()));
        }
    }

    public Layer layer(int i) {
        return layers.get(i);
    }

    /** Tokens cached so far (the same in every layer). */
    public int length() {
        return layers.isEmpty() ? 0 : layers.get(0).length();
    }

    public int capacity() {
        return capacity;
    }

    /** One attention layer's cache. */
    public static final class Layer {
        private final Tensor keys;
        private final Tensor values;
        private final int rowWidth;
        private int length;

        Layer(Device device, int capacity, int kvHeads, int headDim) {
            this.keys = MemoryScope.persistent(() -> Tensor.zeros(device, capacity, kvHeads, headDim));
            this.values = MemoryScope.persistent(() -> Tensor.zeros(device, capacity, kvHeads, headDim));
            this.rowWidth = kvHeads * headDim;
        }

        /** Appends the keys and values of {@code n} tokens, each laid out as n rows of Hkv·hd floats. */
        public void append(Tensor k, Tensor v, int n) {
            if (k.numel() != (long) n * rowWidth || v.numel() != (long) n * rowWidth) {
                throw new IllegalArgumentException("KvCache.append: " + n + " tokens need " + n + " × " + rowWidth + " keys and values, got "
                        + k.shapeString() + " and " + v.shapeString());
            }
            if (length + n > keys.dim(0)) {
                throw new IllegalStateException("KvCache: " + (length + n) + " tokens exceed the capacity " + keys.dim(0));
            }
            keys.rows(length, length + n).copyFrom(k);
            values.rows(length, length + n).copyFrom(v);
            length += n;
        }

        public Tensor keys() {
            return keys;
        }

        public Tensor values() {
            return values;
        }

        public int length() {
            return length;
        }
    }
}
