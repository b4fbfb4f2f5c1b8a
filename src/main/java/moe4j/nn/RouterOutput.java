package moe4j.nn;

import moe4j.tensor.Tensor;

/**
 * What a router decides for T tokens: {@code weights_TK} (differentiable, each row sums to 1),
 * {@code indices_TK} (int32 global expert ids, distinct per token), the scalar auxiliary and z losses
 * (differentiable) and {@code expertCounts_E}, the (token, slot) pairs routed to each expert.
 */
public record RouterOutput(Tensor weights, Tensor indices, Tensor auxLoss, Tensor zLoss, int[] expertCounts) {}
