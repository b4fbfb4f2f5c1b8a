package moe4j.nn;


/**
 * Everything that defines one MoE feed-forward layer, with the reference framework's defaults.
 *
 * @param dim model dimension D
 * @param hidden expert hidden dimension H
 * @param numExperts global number of experts E
 * @param topK experts per token K
 * @param activation silu (SwiGLU), gelu or relu
 * @param router softmax_topk or sigmoid_topk
 * @param sharedExperts 0 or 1 shared expert
 * @param capacityFactor 0 for no capacity limit, else the factor cf of {@code ceil(T·K/E·cf)}
 * @param gradientScale scale expert outputs by avg/n_e in training
 * @param sequenceAuxLossWeight sigmoid router's sequence-level aux loss weight (0: none)
 * @param biasSchedule sigmoid router's bias update rate schedule
 * @param biasUpdateRate sigmoid router's base bias update rate
 * @param biasEmaDecay sigmoid router's utilisation EMA decay
 * @param packed packed (E, D, H) weights instead of a list of expert modules
 * @param initStd standard deviation of the weight initialisation
 * @param numLayers transformer depth, for the residual scaling of {@code down}: std / sqrt(2·numLayers)
 * @param seed initialisation seed of this layer
 * @param checkFinite reject NaN/Inf in the layer input, naming the row
 * @param sharedHidden the shared expert's hidden size, 0 for H
 * @param sharedExpertGate the shared expert's output is scaled per token by {@code sigmoid(x · w)}, w (1, D)
 * @param normalizeTopK the selected weights are renormalised to sum to 1 (else they are the raw scores)
 * @param routerGroups sigmoid router: experts form this many groups for group-limited selection (1: none)
 * @param routerTopKGroups sigmoid router: tokens choose among the experts of this many best groups
 * @param routedScale sigmoid router: the routing weights are multiplied by this (DeepSeek-V3's routed_scaling_factor)
 * @param wire the type token rows travel in between expert-parallel ranks (auto: bf16 when the products are bf16)
 * @param dedup expert parallelism sends each token once per rank that owns one of its experts (the owner
 *     expands it to those experts, and sums their weighted outputs before sending one row back), instead
 *     of once per chosen expert
 */
public record MoEConfig(int dim, int hidden, int numExperts, int topK, Activation activation, RouterKind router,
                        int sharedExperts, double capacityFactor, boolean gradientScale, double sequenceAuxLossWeight,
                        BiasSchedule biasSchedule, double biasUpdateRate, double biasEmaDecay, boolean packed,
                        double initStd, int numLayers, long seed, boolean checkFinite, int sharedHidden,
                        boolean sharedExpertGate, boolean normalizeTopK, int routerGroups, int routerTopKGroups,
                        double routedScale, WireType wire, boolean dedup) {

    public MoEConfig {
        if (dim <= 0) throw new IllegalArgumentException("dim must be > 0, got " + dim);
        if (hidden <= 0) throw new IllegalArgumentException("hidden dim must be > 0, got " + hidden);
        if (numExperts <= 0) throw new IllegalArgumentException("num_experts must be > 0, got " + numExperts);
        if (topK < 1) throw new IllegalArgumentException("moe_top_k must be >= 1, got " + topK);
        if (topK > numExperts) throw new IllegalArgumentException("moe_top_k (" + topK + ") must be <= num_experts (" + numExperts + ")");
        if (router == null) throw new IllegalArgumentException("router must be set (softmax_topk or sigmoid_topk)");
        if (wire == null) throw new IllegalArgumentException("the expert-parallel wire type must be set (auto, f32 or bf16)");
        if (sharedExperts < 0 || sharedExperts > 1) throw new IllegalArgumentException("moe_shared_experts must be 0 or 1, got " + sharedExperts);
        if (capacityFactor < 0 || Double.isNaN(capacityFactor)) {
            throw new IllegalArgumentException("moe_capacity_factor must be >= 0 (0 = no limit), got " + capacityFactor);
        }
        if (numLayers < 1) throw new IllegalArgumentException("numLayers must be >= 1, got " + numLayers);
        if (!(initStd > 0)) throw new IllegalArgumentException("initStd must be > 0, got " + initStd);
        if (sharedHidden < 0) throw new IllegalArgumentException("shared expert hidden size must be >= 0 (0 = the expert hidden size), got " + sharedHidden);
        if (sharedExpertGate && sharedExperts == 0) {
            throw new IllegalArgumentException("a shared-expert gate needs a shared expert (moe_shared_experts = 1)");
        }
    }

    /** The shared expert's hidden size: {@code sharedHidden}, or the routed experts' H when that is 0. */
    public int sharedExpertHidden() {
        return sharedHidden > 0 ? sharedHidden : hidden;
    }

    public static Builder builder(int dim, int hidden, int numExperts, int topK) {
        return new Builder(dim, hidden, numExperts, topK);
    }

    public Builder toBuilder() {
        Builder b = new Builder(dim, hidden, numExperts, topK);
        b.activation = activation;
        b.router = router;
        b.sharedExperts = sharedExperts;
        b.capacityFactor = capacityFactor;
        b.gradientScale = gradientScale;
        b.sequenceAuxLossWeight = sequenceAuxLossWeight;
        b.biasSchedule = biasSchedule;
        b.biasUpdateRate = biasUpdateRate;
        b.biasEmaDecay = biasEmaDecay;
        b.packed = packed;
        b.initStd = initStd;
        b.numLayers = numLayers;
        b.seed = seed;
        b.checkFinite = checkFinite;
        b.sharedHidden = sharedHidden;
        b.sharedExpertGate = sharedExpertGate;
        b.normalizeTopK = normalizeTopK;
        b.routerGroups = routerGroups;
        b.routerTopKGroups = routerTopKGroups;
        b.routedScale = routedScale;
        b.wire = wire;
        b.dedup = dedup;
        return b;
    }

    /** Fluent construction, like the reference's {@code build_moe(...)} keyword arguments. */
    public static final class Builder {
        private final int dim;
        private final int hidden;
        private final int numExperts;
        private final int topK;
        private Activation activation = Activation.SILU;
        private RouterKind router = RouterKind.SOFTMAX_TOPK;
        private int sharedExperts;
        private double capacityFactor;
        private boolean gradientScale;
        private double sequenceAuxLossWeight;
        private BiasSchedule biasSchedule = BiasSchedule.CONSTANT;
        private double biasUpdateRate = 0.001;
        private double biasEmaDecay = 0.99;
        private boolean packed;
        private double initStd = 0.02;
        private int numLayers = 1;
        private long seed = 0;
        private boolean checkFinite;
        private int sharedHidden;
        private boolean sharedExpertGate;
        private boolean normalizeTopK = true;
        private int routerGroups = 1;
        private int routerTopKGroups = 1;
        private double routedScale = 1.0;
        private WireType wire = WireType.AUTO;
        private boolean dedup;

        private Builder(int dim, int hidden, int numExperts, int topK) {
            this.dim = dim;
            this.hidden = hidden;
            this.numExperts = numExperts;
            this.topK = topK;
        }

        public Builder activation(String name) { this.activation = Activation.parse(name); return this; }
        public Builder activation(Activation a) { this.activation = a; return this; }
        public Builder router(String name) { this.router = RouterKind.parse(name); return this; }
        public Builder router(RouterKind kind) { this.router = kind; return this; }
        public Builder sharedExperts(int n) { this.sharedExperts = n; return this; }
        public Builder capacityFactor(double cf) { this.capacityFactor = cf; return this; }
        public Builder gradientScale(boolean on) { this.gradientScale = on; return this; }
        public Builder sequenceAuxLossWeight(double w) { this.sequenceAuxLossWeight = w; return this; }
        public Builder biasSchedule(BiasSchedule s) { this.biasSchedule = s; return this; }
        public Builder biasUpdateRate(double r) { this.biasUpdateRate = r; return this; }
        public Builder biasEmaDecay(double d) { this.biasEmaDecay = d; return this; }
        public Builder packed(boolean on) { this.packed = on; return this; }
        public Builder initStd(double std) { this.initStd = std; return this; }
        public Builder numLayers(int n) { this.numLayers = n; return this; }
        public Builder seed(long s) { this.seed = s; return this; }
        public Builder checkFinite(boolean on) { this.checkFinite = on; return this; }
        /** The shared expert's hidden size (0: the routed experts'). */
        public Builder sharedHidden(int h) { this.sharedHidden = h; return this; }
        /** Scales the shared expert's output per token by {@code sigmoid(x · w_gate)} (Qwen2-MoE). */
        public Builder sharedExpertGate(boolean on) { this.sharedExpertGate = on; return this; }
        /** Renormalises the selected top-K weights to sum to 1 (the default); off, they stay the router's scores. */
        public Builder normalizeTopK(boolean on) { this.normalizeTopK = on; return this; }
        /** Group-limited routing for the sigmoid router: {@code groups} groups, tokens keep the best {@code topKGroups}. */
        public Builder routerGroups(int groups, int topKGroups) { this.routerGroups = groups; this.routerTopKGroups = topKGroups; return this; }
        /** The sigmoid router's weight scale (DeepSeek-V3's routed_scaling_factor). */
        public Builder routedScale(double s) { this.routedScale = s; return this; }
        /** The type token rows travel in between expert-parallel ranks. */
        public Builder wire(WireType w) { this.wire = w; return this; }
        public Builder wire(String name) { this.wire = WireType.parse(name, "moe_wire"); return this; }
        /** Expert parallelism sends each token once per destination rank instead of once per chosen expert. */
        public Builder dedup(boolean on) { this.dedup = on; return this; }

        public MoEConfig build() {
            return new MoEConfig(dim, hidden, numExperts, topK, activation, router, sharedExperts, capacityFactor,
                    gradientScale, sequenceAuxLossWeight, biasSchedule, biasUpdateRate, biasEmaDecay, packed,
                    initStd, numLayers, seed, checkFinite, sharedHidden, sharedExpertGate, normalizeTopK, routerGroups, routerTopKGroups,
                    routedScale, wire, dedup);
        }
    }
}
