package moe4j.nn;

import moe4j.autograd.Autograd;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.kernels.Kernels;
import moe4j.ops.Ops;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * Maps tokens {@code x_TD} to top-K experts through a bias-free gate {@code logits = x · Wgᵀ}, Wg (E, D).
 * Subclasses decide how scores become selections and weights.
 */
public abstract class Router extends Module {
    protected final int dim;
    protected final int numExperts;
    protected final int topK;
    protected final Linear gate;
    private RouterOutput last;
    private ProcessGroup statisticsGroup;

    protected Router(int dim, int numExperts, int topK) {
        if (topK > numExperts) throw new IllegalArgumentException("moe_top_k (" + topK + ") must be <= num_experts (" + numExperts + ")");
        if (topK < 1) throw new IllegalArgumentException("moe_top_k must be >= 1, got " + topK);
        this.dim = dim;
        this.numExperts = numExperts;
        this.topK = topK;
        this.gate = registerModule("gate", new Linear(dim, numExperts));
    }

    public Router init(Rng rng, double std) {
        gate.init(rng, std);
        return this;
    }

    /**
     * Makes the load-balance statistics global over {@code group} (the data-parallel ranks): the routed
     * fractions f_e of the auxiliary loss are then counted over every rank's tokens, so the loss, averaged
     * over the ranks, equals the loss of one rank on the whole batch. Adds one small all-reduce per forward.
     */
    public void setStatisticsGroup(ProcessGroup group) {
        this.statisticsGroup = group;
    }

    public Linear gate() {
        return gate;
    }

    public int topK() {
        return topK;
    }

    public int numExperts() {
        return numExperts;
    }

    /** Routes {@code x_TD}; the result is also kept as {@link #lastOutput()} for the training loop. */
    public final RouterOutput route(Tensor x) {
        RouterOutput out = computeRouting(gate.forward(x));
        last = out;
        return out;
    }

    protected abstract RouterOutput computeRouting(Tensor logits);

    public RouterOutput lastOutput() {
        return last;
    }

    /** {@code mean_t (logsumexp_e logits[t, e])²}; 0 for no tokens. */
    protected static Tensor zLoss(Tensor logits) {
        if (logits.dim(0) == 0) return Tensor.zeros(logits.device());
        return Ops.mean(Ops.square(Ops.logSumExp(logits)));
    }

    /** {@code scale · E · Σ_e f_e · p_e} with f_e = count_e / (T·K) (constant) and p = mean over tokens of {@code scores}. */
    protected Tensor balanceLoss(Tensor scores, int[] counts, double scale) {
        int t = scores.dim(0);
        if (scale == 0) return Tensor.zeros(scores.device());
        // f_e = count_e / (T·K), over the whole data-parallel batch when a statistics group is set
        Tensor f = Tensor.zeros(numExperts + 1);
        for (int e = 0; e < numExperts; e++) f.set(e, counts[e]);
        f.set(numExperts, t);
        // Only in training with gradients on (the same on every rank of a step): an evaluation or inference
        // forward on one rank must not wait for its data-parallel peers.
        if (statisticsGroup != null && statisticsGroup.size() > 1 && isTraining() && Autograd.isGradEnabled()) {
            statisticsGroup.allReduce(f, ReduceOp.SUM);
        }
        double tokens = f.get(numExperts);
        if (t == 0 || tokens == 0) return Tensor.zeros(scores.device());
        f = f.rows(0, numExperts);
        for (int e = 0; e < numExperts; e++) f.set(e, (float) (f.get(e) / (tokens * topK)));
        f = f.to(scores.device()); // E host-computed constants, copied to where the scores are
        Tensor p = Ops.mean(scores, 0);
        return Ops.scale(Ops.sum(Ops.mul(p, f)), scale * numExperts);
    }

    /**
     * Each row of {@code w_TK} divided by its sum. A tiny constant keeps rows whose selected scores all
     * underflowed to 0 (sigmoid of very negative logits) at 0 instead of 0/0; it is far below float
     * resolution for any real sum, so x / x stays exactly 1 (K = 1).
     */
    protected static Tensor normalizeRows(Tensor w) {
        return Ops.divRows(w, Ops.addScalar(Ops.sum(w, 1), 1e-30));
    }

    /** Routed (token, slot) entries per expert, counted on the device and copied to the host (E ints). */
    protected int[] countExperts(Tensor indices) {
        Tensor counts = Tensor.zeros(indices.device(), DType.I32, numExperts);
        Kernels.of(indices.device()).routing().bincount(indices, counts);
        return counts.to(Device.CPU).toIntArray();
    }
}
