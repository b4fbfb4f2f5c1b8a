package moe4j.nn;

import moe4j.autograd.Autograd;
import moe4j.kernels.Kernels;
import moe4j.ops.Ops;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;

/**
 * DeepSeek-V3 routing with aux-loss-free balancing: {@code s = sigmoid(logits)}; experts are selected by
 * the top K of {@code s + bias}; the weights are the selected {@code s} renormalised (unless normalisation
 * is off) and multiplied by the routed scaling factor. The bias is state, not a parameter: it never enters
 * the weights and is moved once per optimizer step by {@link #updateBias}, towards experts that received
 * less than their share.
 *
 * <p>Group-limited routing (DeepSeek-V3's {@code n_group}, {@code topk_group}): the experts form G equal
 * groups, each scored by the sum of its two best {@code s + bias}; only experts of the best
 * {@code topKGroups} groups can be selected.
 */
public final class SigmoidTopKRouter extends Router {
    private final double rate;
    private final double decay;
    private final BiasSchedule schedule;
    private final double sequenceAuxLossWeight;
    private final Tensor bias;
    private final Tensor ema;
    private final long[] pendingCounts;
    private final int groups;
    private final int topKGroups;
    private final boolean normalize;
    private final double routedScale;

    public SigmoidTopKRouter(int dim, int numExperts, int topK, double rate, double decay, BiasSchedule schedule,
                             double sequenceAuxLossWeight) {
        this(dim, numExperts, topK, rate, decay, schedule, sequenceAuxLossWeight, 1, 1, true, 1.0);
    }

    /** With group-limited selection over {@code groups} groups (1: none), optional normalisation and a weight scale. */
    public SigmoidTopKRouter(int dim, int numExperts, int topK, double rate, double decay, BiasSchedule schedule,
                             double sequenceAuxLossWeight, int groups, int topKGroups, boolean normalize, double routedScale) {
        super(dim, numExperts, topK);
        if (groups < 1 || numExperts % groups != 0) {
            throw new IllegalArgumentException("router groups (" + groups + ") must divide num_experts (" + numExperts + ")");
        }
        if (topKGroups < 1 || topKGroups > groups || (long) topKGroups * (numExperts / groups) < topK) {
            throw new IllegalArgumentException("router top-k groups (" + topKGroups + ") must be in [1, " + groups
                    + "] and hold at least moe_top_k (" + topK + ") experts");
        }
        if (groups > 1 && numExperts / groups < 2) {
            throw new IllegalArgumentException("group-limited routing scores a group by its two best experts: groups need >= 2 experts, got "
                    + numExperts / groups);
        }
        if (!(routedScale > 0)) throw new IllegalArgumentException("routed scaling factor must be > 0, got " + routedScale);
        this.groups = groups;
        this.topKGroups = topKGroups;
        this.normalize = normalize;
        this.routedScale = routedScale;
        if (rate < 0) throw new IllegalArgumentException("bias update rate must be >= 0, got " + rate);
        if (decay < 0 || decay >= 1) throw new IllegalArgumentException("bias EMA decay must be in [0, 1), got " + decay);
        if (sequenceAuxLossWeight < 0) throw new IllegalArgumentException("sequence aux-loss weight must be >= 0, got " + sequenceAuxLossWeight);
        this.rate = rate;
        this.decay = decay;
        this.schedule = schedule;
        this.sequenceAuxLossWeight = sequenceAuxLossWeight;
        this.bias = MemoryScope.persistent(() -> Tensor.zeros(numExperts));
        this.ema = MemoryScope.persistent(() -> Tensor.full(1f / numExperts, numExperts));
        this.pendingCounts = new long[numExperts];
    }

    @Override
    protected RouterOutput computeRouting(Tensor logits) {
        Tensor scores = Ops.sigmoid(logits);
        Tensor selection = Autograd.noGrad(() -> {
            // the bias is host state updated once per optimizer step: E floats copied to the scores' device
            Kernels kernels = Kernels.of(scores.device());
            Tensor biased = Tensor.zerosLike(scores);
            kernels.elementwise().addColumns(scores, bias.to(scores.device()), biased);
            if (groups > 1) {
                Tensor limited = Tensor.zerosLike(biased);
                kernels.routing().limitToTopGroups(biased, groups, topKGroups, limited);
                biased = limited;
            }
            return Ops.topK(biased, topK).indices();
        });
        Tensor selected = Ops.gatherColumns(scores, selection);
        Tensor weights = normalize ? normalizeRows(selected) : selected;
        if (routedScale != 1.0) weights = Ops.scale(weights, routedScale);
        int[] counts = countExperts(selection);
        if (isTraining()) {
            for (int e = 0; e < numExperts; e++) pendingCounts[e] += counts[e];
        }
        return new RouterOutput(weights, selection, balanceLoss(scores, counts, sequenceAuxLossWeight), zLoss(logits), counts);
    }

    /** The routed (token, slot) counts accumulated by training forwards since the last update. */
    public long[] pendingCounts() {
        return pendingCounts.clone();
    }

    /**
     * One optimizer step's bias update from {@code counts} (the step's routed counts per expert; under data
     * parallelism, summed over all ranks so the replicated bias stays identical):
     * {@code ema ← ema + (1 − decay)(util − ema)}, {@code bias ← bias + rate(step) · (1/E − ema)}.
     * Clears the pending counts.
     */
    public void updateBias(long[] counts, long step, long maxSteps) {
        if (counts.length != numExperts) {
            throw new IllegalArgumentException("updateBias: " + counts.length + " counts for " + numExperts + " experts");
        }
        long total = 0;
        for (long c : counts) total += c;
        double r = schedule.rate(rate, step, maxSteps);
        for (int e = 0; e < numExperts; e++) {
            double util = total == 0 ? 0 : (double) counts[e] / total;
            double m = ema.get(e) + (1 - decay) * (util - ema.get(e));
            ema.set(e, (float) m);
            bias.set(e, (float) (bias.get(e) + r * (1.0 / numExperts - m)));
        }
        java.util.Arrays.fill(pendingCounts, 0);
    }

    /** The selection bias (state, read-only view for checkpoints and tests). */
    public Tensor bias() {
        return bias;
    }

    public Tensor ema() {
        return ema;
    }
}
