package moe4j.data;

import moe4j.tensor.Tensor;

/**
 * One rank's share of the global batch of training step {@code step}.
 *
 * @param step    the step this batch belongs to (the loader's position when it was drawn)
 * @param inputs  int32 token ids, shape (localBatch, seqLen)
 * @param targets int32 token ids, shape (localBatch, seqLen): {@code targets[b][t] == inputs[b][t + 1]}
 *                for {@code t < seqLen - 1}, and the next token of the window for the last position
 */
public record Batch(long step, Tensor inputs, Tensor targets) {

    public int batchSize() {
        return inputs.dim(0);
    }

    public int seqLen() {
        return inputs.dim(1);
    }

    /** Number of predicted tokens (batchSize · seqLen). */
    public long tokens() {
        return inputs.numel();
    }
}
