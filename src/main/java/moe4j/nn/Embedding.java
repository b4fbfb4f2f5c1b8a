package moe4j.nn;

import moe4j.ops.Ops;
import moe4j.tensor.Tensor;

/**
 * A lookup table {@code weight (V, D)}: token id t → row t. Tensor parallelism may keep a block of the
 * vocabulary's rows ({@link #keepRows}) and wrap the lookup.
 */
public final class Embedding extends Module {
    private final int vocab;
    private final int dim;

    public Embedding(int vocab, int dim) {
        if (vocab <= 0 || dim <= 0) throw new IllegalArgumentException("Embedding: sizes must be > 0, got vocab=" + vocab + ", dim=" + dim);
        this.vocab = vocab;
        this.dim = dim;
        registerParameter("weight", persistentZeros(vocab, dim));
    }

    /** Keeps vocabulary rows {@code [start, end)} only (a vocabulary-parallel shard). */
    public void keepRows(int start, int end) {
        replaceParameter("weight", persistentCopy(weight().rows(start, end)));
    }

    public Tensor weight() {
        return parameter("weight");
    }

    public int vocabSize() {
        return vocab;
    }

    public int dim() {
        return dim;
    }

    /** int32 ids (T) → (T, D); every id must lie in [0, V). */
    public Tensor forward(Tensor ids) {
        return wrapped(ids, i -> Ops.embedding(weight(), i));
    }
}
