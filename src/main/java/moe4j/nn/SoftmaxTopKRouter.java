package moe4j.nn;

import moe4j.ops.Ops;
import moe4j.tensor.Tensor;

/**
 * Switch/Mixtral routing: {@code probs = softmax(logits)}, the top K renormalised to sum to 1 (or, without
 * normalisation as in Qwen2-MoE and OLMoE, the top K probabilities as they are);
 * auxiliary loss {@code E · Σ f_e · p_e} with p the mean probability (gradient through p only).
 */
public final class SoftmaxTopKRouter extends Router {
    private final boolean normalize;

    public SoftmaxTopKRouter(int dim, int numExperts, int topK) {
        this(dim, numExperts, topK, true);
    }

    public SoftmaxTopKRouter(int dim, int numExperts, int topK, boolean normalize) {
        super(dim, numExperts, topK);
        this.normalize = normalize;
    }

    @Override
    protected RouterOutput computeRouting(Tensor logits) {
        Tensor probs = Ops.softmax(logits);
        Ops.TopK top = Ops.topK(probs, topK);
        Tensor weights = normalize ? normalizeRows(top.values()) : top.values();
        int[] counts = countExperts(top.indices());
        return new RouterOutput(weights, top.indices(), balanceLoss(probs, counts, 1.0), zLoss(logits), counts);
    }
}
