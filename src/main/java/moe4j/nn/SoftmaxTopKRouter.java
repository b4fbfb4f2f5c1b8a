package moe4j.nn;

import moe4j.ops.Ops;
import moe4j.tensor.Tensor;

/**
 * Switch/Mixtral routing: {@code probs = softmax(logits)}, the top K renormalised to sum to 1;
 * auxiliary loss {@code E · Σ f_e · p_e} with p the mean probability (gradient through p only).
 */
public final class SoftmaxTopKRouter extends Router {
    public SoftmaxTopKRouter(int dim, int numExperts, int topK) {
        super(dim, numExperts, topK);
    }

    @Override
    protected RouterOutput computeRouting(Tensor logits) {
        Tensor probs = Ops.softmax(logits);
        Ops.TopK top = Ops.topK(probs, topK);
        Tensor weights = normalizeRows(top.values());
        int[] counts = countExperts(top.indices());
        return new RouterOutput(weights, top.indices(), balanceLoss(probs, counts, 1.0), zLoss(logits), counts);
    }
}
