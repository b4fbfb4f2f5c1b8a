package moe4j.nn;

import java.util.List;

/**
 * The shape of a Llama-style (MoE) transformer language model. Each component has a snake_case name in
 * configuration files, the reference framework's, given in brackets; {@link Builder#set(String, Object)}
 * accepts those names.
 *
 * @param dim model dimension D [dim]
 * @param nLayers number of transformer blocks [n_layers]
 * @param nHeads query heads [n_heads]
 * @param nKvHeads key/value heads, a divisor of nHeads (grouped-query attention) [n_kv_heads]
 * @param vocabSize vocabulary size V [vocab_size]
 * @param maxSeqLen longest sequence the model accepts [max_seq_len]
 * @param ffnHidden hidden size of the dense SwiGLU MLP [ffn_hidden]; the builder's default is Llama's
 *        {@code 8/3·dim} rounded up to a multiple of {@code multiple_of} (256)
 * @param normEps RMSNorm epsilon [norm_eps]
 * @param ropeTheta RoPE base [rope_theta]
 * @param numExperts experts per MoE layer; 0 makes every layer dense [num_experts]
 * @param moeTopK experts per token [moe_top_k]
 * @param moeFrequency every moeFrequency-th layer is MoE: layer i (0-based) is MoE iff
 *        {@code numExperts > 0 && i % moeFrequency == moeFrequency − 1}, i.e. {@code (i + 1) % moeFrequency == 0};
 *        1 makes every layer MoE, 2 alternates dense, MoE, dense, MoE... [moe_frequency]
 * @param moeRouter softmax_topk or sigmoid_topk [moe_router]
 * @param moeSharedExperts 0 or 1 shared expert per MoE layer [moe_shared_experts]
 * @param moeAuxLossWeight weight of the summed router auxiliary (load-balance) losses in the total loss [moe_aux_loss_weight]
 * @param moeRouterZLossWeight weight of the summed router z-losses in the total loss [moe_router_z_loss_weight]
 * @param moeCapacityFactor expert capacity factor, 0 for no limit [moe_capacity_factor]
 * @param moeGradientScale scale expert outputs by avg/n_e in training [moe_gradient_scale]
 * @param moePackedExperts packed (E, D, H) expert weights instead of a list of experts [moe_packed_experts]
 * @param moeExpertFfnMultiplier expert hidden size = round(ffnHidden · multiplier) [moe_expert_ffn_multiplier]
 * @param moeSequenceAuxLossWeight sigmoid router's sequence-level aux loss weight [moe_sequence_aux_loss_weight]
 * @param moeBiasSchedule sigmoid router's bias update rate schedule [moe_bias_schedule]
 * @param moeBiasUpdateRate sigmoid router's base bias update rate [moe_bias_update_rate]
 * @param moeBiasEmaDecay sigmoid router's utilisation EMA decay [moe_bias_ema_decay]
 * @param moeWire the type token rows travel in between expert-parallel ranks: auto (bf16 when the matrix
 *        products are bf16, else f32), f32 or bf16 [moe_wire]
 * @param moeDedup expert parallelism sends each token once per rank that owns one of its experts, which
 *        expands it to them and sums their weighted outputs before one row goes back, instead of once per
 *        chosen expert [moe_dedup]
 * @param initStd standard deviation of the normal weight initialisation; the projections into the residual
 *        stream (attention wo, MLP and expert down_proj) use initStd / sqrt(2·nLayers) [init_std]
 * @param tieEmbeddings the output projection reuses tok_embeddings.weight (no output.weight) [tie_embeddings]
 * @param seed initialisation seed [seed]
 */
public record ModelConfig(int dim, int nLayers, int nHeads, int nKvHeads, int vocabSize, int maxSeqLen, int ffnHidden,
                          double normEps, double ropeTheta, int numExperts, int moeTopK, int moeFrequency, RouterKind moeRouter,
                          int moeSharedExperts, double moeAuxLossWeight, double moeRouterZLossWeight,
                          double moeCapacityFactor, boolean moeGradientScale, boolean moePackedExperts,
                          double moeExpertFfnMultiplier, double moeSequenceAuxLossWeight, BiasSchedule moeBiasSchedule,
                          double moeBiasUpdateRate, double moeBiasEmaDecay, WireType moeWire, boolean moeDedup, double initStd,
                          boolean tieEmbeddings, long seed) {

    /** The configuration keys {@link Builder#set(String, Object)} understands. */
    public static final List<String> KEYS = List.of("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len",
            "ffn_hidden", "multiple_of", "norm_eps", "rope_theta", "num_experts", "moe_top_k", "moe_frequency", "moe_router",
            "moe_shared_experts", "moe_aux_loss_weight", "moe_router_z_loss_weight", "moe_capacity_factor",
            "moe_gradient_scale", "moe_packed_experts", "moe_expert_ffn_multiplier", "moe_sequence_aux_loss_weight",
            "moe_bias_schedule", "moe_bias_update_rate", "moe_bias_ema_decay", "moe_wire", "moe_dedup", "init_std", "tie_embeddings", "seed");

    public ModelConfig {
        positive("dim", dim);
        positive("n_layers", nLayers);
        positive("n_heads", nHeads);
        positive("n_kv_heads", nKvHeads);
        positive("vocab_size", vocabSize);
        positive("max_seq_len", maxSeqLen);
        positive("ffn_hidden", ffnHidden);
        if (dim % nHeads != 0) {
            throw new IllegalArgumentException("dim (" + dim + ") must be divisible by n_heads (" + nHeads + ")");
        }
        if (nHeads % nKvHeads != 0) {
            throw new IllegalArgumentException("n_heads (" + nHeads + ") must be divisible by n_kv_heads (" + nKvHeads + ")");
        }
        if ((dim / nHeads) % 2 != 0) {
            throw new IllegalArgumentException("head_dim = dim / n_heads = " + dim + " / " + nHeads + " = " + dim / nHeads
                    + " must be even for rotary embeddings");
        }
        if (!(normEps > 0)) throw new IllegalArgumentException("norm_eps must be > 0, got " + normEps);
        if (!(ropeTheta > 0)) throw new IllegalArgumentException("rope_theta must be > 0, got " + ropeTheta);
        if (!(initStd > 0)) throw new IllegalArgumentException("init_std must be > 0, got " + initStd);
        if (numExperts < 0) throw new IllegalArgumentException("num_experts must be >= 0 (0 = dense model), got " + numExperts);
        if (moeFrequency < 1) throw new IllegalArgumentException("moe_frequency must be >= 1, got " + moeFrequency);
        nonNegative("moe_aux_loss_weight", moeAuxLossWeight);
        nonNegative("moe_router_z_loss_weight", moeRouterZLossWeight);
        nonNegative("moe_sequence_aux_loss_weight", moeSequenceAuxLossWeight);
        if (moeBiasSchedule == null) throw new IllegalArgumentException("moe_bias_schedule must be set");
        if (moeWire == null) throw new IllegalArgumentException("moe_wire must be set (auto, f32 or bf16)");
        if (numExperts > 0) {
            if (moeTopK < 1) throw new IllegalArgumentException("moe_top_k must be >= 1, got " + moeTopK);
            if (moeTopK > numExperts) {
                throw new IllegalArgumentException("moe_top_k (" + moeTopK + ") must be <= num_experts (" + numExperts + ")");
            }
            if (!(moeExpertFfnMultiplier > 0)) {
                throw new IllegalArgumentException("moe_expert_ffn_multiplier must be > 0, got " + moeExpertFfnMultiplier);
            }
            if (expertHiddenOf(ffnHidden, moeExpertFfnMultiplier) < 1) {
                throw new IllegalArgumentException("expert hidden size round(ffn_hidden · moe_expert_ffn_multiplier) = round("
                        + ffnHidden + " · " + moeExpertFfnMultiplier + ") must be >= 1");
            }
            if (moeRouter == null) throw new IllegalArgumentException("moe_router must be set");
            if (moeSharedExperts < 0 || moeSharedExperts > 1) {
                throw new IllegalArgumentException("moe_shared_experts must be 0 or 1, got " + moeSharedExperts);
            }
            if (!(moeCapacityFactor >= 0)) {
                throw new IllegalArgumentException("moe_capacity_factor must be >= 0 (0 = no limit), got " + moeCapacityFactor);
            }
        }
    }

    private static void positive(String name, int value) {
        if (value < 1) throw new IllegalArgumentException(name + " must be >= 1, got " + value);
    }

    private static void nonNegative(String name, double value) {
        if (!(value >= 0)) throw new IllegalArgumentException(name + " must be >= 0, got " + value);
    }

    private static int expertHiddenOf(int ffnHidden, double multiplier) {
        return (int) Math.round(ffnHidden * multiplier);
    }

    /** dim / n_heads. */
    public int headDim() {
        return dim / nHeads;
    }

    /** Expert hidden size: round(ffn_hidden · moe_expert_ffn_multiplier). */
    public int expertHidden() {
        return expertHiddenOf(ffnHidden, moeExpertFfnMultiplier);
    }

    /** Whether layer {@code i} (0-based) has an MoE feed-forward: {@code numExperts > 0 && (i + 1) % moeFrequency == 0}. */
    public boolean isMoeLayer(int i) {
        return numExperts > 0 && (i + 1) % moeFrequency == 0;
    }

    /** How many of the layers are MoE. */
    public int numMoeLayers() {
        int n = 0;
        for (int i = 0; i < nLayers; i++) if (isMoeLayer(i)) n++;
        return n;
    }

    /** Llama's dense hidden size: 8/3·dim rounded up to a multiple of {@code multipleOf}. */
    public static int defaultFfnHidden(int dim, int multipleOf) {
        if (multipleOf < 1) throw new IllegalArgumentException("multiple_of must be >= 1, got " + multipleOf);
        int hidden = (int) (2L * 4 * dim / 3);
        return multipleOf * ((hidden + multipleOf - 1) / multipleOf);
    }

    /**
     * The configuration of layer {@code layerIndex}'s MoE feed-forward. Its seed is derived from
     * (seed, layerIndex), and numLayers = n_layers so the experts' down projections get the residual scaling.
     */
    public MoEConfig moeConfig(int layerIndex) {
        if (numExperts == 0) throw new IllegalStateException("dense model (num_experts = 0) has no MoE layers");
        return MoEConfig.builder(dim, expertHidden(), numExperts, moeTopK)
                .router(moeRouter)
                .sharedExperts(moeSharedExperts)
                .capacityFactor(moeCapacityFactor)
                .gradientScale(moeGradientScale)
                .sequenceAuxLossWeight(moeSequenceAuxLossWeight)
                .biasSchedule(moeBiasSchedule)
                .biasUpdateRate(moeBiasUpdateRate)
                .biasEmaDecay(moeBiasEmaDecay)
                .wire(moeWire)
                .dedup(moeDedup)
                .packed(moePackedExperts)
                .initStd(initStd)
                .numLayers(nLayers)
                .seed(ParameterInit.derivedSeed(seed, "layers." + layerIndex + ".moe"))
                .build();
    }

    /** A builder holding the small default model: dim 256, 4 layers, 8 heads, 4 kv heads, vocab 256, 8 experts top-2 in every layer. */
    public static Builder builder() {
        return new Builder();
    }

    /** The small default model. */
    public static ModelConfig defaults() {
        return builder().build();
    }

    public Builder toBuilder() {
        Builder b = new Builder();
        b.dim = dim;
        b.nLayers = nLayers;
        b.nHeads = nHeads;
        b.nKvHeads = nKvHeads;
        b.vocabSize = vocabSize;
        b.maxSeqLen = maxSeqLen;
        b.ffnHidden = ffnHidden;
        b.normEps = normEps;
        b.ropeTheta = ropeTheta;
        b.numExperts = numExperts;
        b.moeTopK = moeTopK;
        b.moeFrequency = moeFrequency;
        b.moeRouter = moeRouter;
        b.moeSharedExperts = moeSharedExperts;
        b.moeAuxLossWeight = moeAuxLossWeight;
        b.moeRouterZLossWeight = moeRouterZLossWeight;
        b.moeCapacityFactor = moeCapacityFactor;
        b.moeGradientScale = moeGradientScale;
        b.moePackedExperts = moePackedExperts;
        b.moeExpertFfnMultiplier = moeExpertFfnMultiplier;
        b.moeSequenceAuxLossWeight = moeSequenceAuxLossWeight;
        b.moeBiasSchedule = moeBiasSchedule;
        b.moeBiasUpdateRate = moeBiasUpdateRate;
        b.moeBiasEmaDecay = moeBiasEmaDecay;
        b.moeWire = moeWire;
        b.moeDedup = moeDedup;
        b.initStd = initStd;
        b.tieEmbeddings = tieEmbeddings;
        b.seed = seed;
        return b;
    }

    /** Fluent construction; an unset ffn_hidden is derived from dim and multiple_of when building. */
    public static final class Builder {
        private int dim = 256;
        private int nLayers = 4;
        private int nHeads = 8;
        private int nKvHeads = 4;
        private int vocabSize = 256;
        private int maxSeqLen = 256;
        private int ffnHidden = 0; // 0: derive from dim and multipleOf
        private int multipleOf = 256;
        private double normEps = 1e-5;
        private double ropeTheta = 10000;
        private int numExperts = 8;
        private int moeTopK = 2;
        private int moeFrequency = 1;
        private RouterKind moeRouter = RouterKind.SOFTMAX_TOPK;
        private int moeSharedExperts = 0;
        private double moeAuxLossWeight = 0.01;
        private double moeRouterZLossWeight = 0.001;
        private double moeCapacityFactor = 0;
        private boolean moeGradientScale = false;
        private boolean moePackedExperts = false;
        private double moeExpertFfnMultiplier = 1.0;
        private double moeSequenceAuxLossWeight = 0;
        private BiasSchedule moeBiasSchedule = BiasSchedule.CONSTANT;
        private double moeBiasUpdateRate = 0.001;
        private double moeBiasEmaDecay = 0.99;
        private WireType moeWire = WireType.AUTO;
        private boolean moeDedup = false;
        private double initStd = 0.02;
        private boolean tieEmbeddings = false;
        private long seed = 0;

        private Builder() {}

        public Builder dim(int v) { dim = v; return this; }
        public Builder nLayers(int v) { nLayers = v; return this; }
        public Builder nHeads(int v) { nHeads = v; return this; }
        public Builder nKvHeads(int v) { nKvHeads = v; return this; }
        public Builder vocabSize(int v) { vocabSize = v; return this; }
        public Builder maxSeqLen(int v) { maxSeqLen = v; return this; }
        /** The dense MLP hidden size; 0 derives it from dim and multiple_of. */
        public Builder ffnHidden(int v) { ffnHidden = v; return this; }
        public Builder multipleOf(int v) { multipleOf = v; return this; }
        public Builder normEps(double v) { normEps = v; return this; }
        public Builder ropeTheta(double v) { ropeTheta = v; return this; }
        public Builder numExperts(int v) { numExperts = v; return this; }
        public Builder moeTopK(int v) { moeTopK = v; return this; }
        public Builder moeFrequency(int v) { moeFrequency = v; return this; }
        public Builder moeRouter(RouterKind v) { moeRouter = v; return this; }
        public Builder moeRouter(String name) { moeRouter = RouterKind.parse(name, "moe_router"); return this; }
        public Builder moeSharedExperts(int v) { moeSharedExperts = v; return this; }
        public Builder moeAuxLossWeight(double v) { moeAuxLossWeight = v; return this; }
        public Builder moeRouterZLossWeight(double v) { moeRouterZLossWeight = v; return this; }
        public Builder moeCapacityFactor(double v) { moeCapacityFactor = v; return this; }
        public Builder moeGradientScale(boolean v) { moeGradientScale = v; return this; }
        public Builder moePackedExperts(boolean v) { moePackedExperts = v; return this; }
        public Builder moeExpertFfnMultiplier(double v) { moeExpertFfnMultiplier = v; return this; }
        public Builder moeSequenceAuxLossWeight(double v) { moeSequenceAuxLossWeight = v; return this; }
        public Builder moeBiasSchedule(BiasSchedule v) { moeBiasSchedule = v; return this; }
        public Builder moeBiasUpdateRate(double v) { moeBiasUpdateRate = v; return this; }
        public Builder moeBiasEmaDecay(double v) { moeBiasEmaDecay = v; return this; }
        public Builder moeWire(WireType v) { moeWire = v; return this; }
        public Builder moeDedup(boolean v) { moeDedup = v; return this; }
        public Builder initStd(double v) { initStd = v; return this; }
        public Builder tieEmbeddings(boolean v) { tieEmbeddings = v; return this; }
        public Builder seed(long v) { seed = v; return this; }

        /**
         * Sets one field by its configuration-file name (see {@link ModelConfig#KEYS}); numbers may be any
         * {@link Number} or a numeric string, booleans a Boolean or "true"/"false", moe_bias_schedule a name.
         */
        public Builder set(String key, Object value) {
            if (value == null) throw new IllegalArgumentException("model config: " + key + " has no value");
            switch (key) {
                case "dim" -> dim = toInt(key, value);
                case "n_layers" -> nLayers = toInt(key, value);
                case "n_heads" -> nHeads = toInt(key, value);
                case "n_kv_heads" -> nKvHeads = toInt(key, value);
                case "vocab_size" -> vocabSize = toInt(key, value);
                case "max_seq_len" -> maxSeqLen = toInt(key, value);
                case "ffn_hidden" -> ffnHidden = toInt(key, value);
                case "multiple_of" -> multipleOf = toInt(key, value);
                case "norm_eps" -> normEps = toDouble(key, value);
                case "rope_theta" -> ropeTheta = toDouble(key, value);
                case "num_experts" -> numExperts = toInt(key, value);
                case "moe_top_k" -> moeTopK = toInt(key, value);
                case "moe_frequency" -> moeFrequency = toInt(key, value);
                case "moe_router" -> moeRouter = value instanceof RouterKind k ? k : RouterKind.parse(value.toString(), "moe_router");
                case "moe_shared_experts" -> moeSharedExperts = toInt(key, value);
                case "moe_aux_loss_weight" -> moeAuxLossWeight = toDouble(key, value);
                case "moe_router_z_loss_weight" -> moeRouterZLossWeight = toDouble(key, value);
                case "moe_capacity_factor" -> moeCapacityFactor = toDouble(key, value);
                case "moe_gradient_scale" -> moeGradientScale = toBoolean(key, value);
                case "moe_packed_experts" -> moePackedExperts = toBoolean(key, value);
                case "moe_expert_ffn_multiplier" -> moeExpertFfnMultiplier = toDouble(key, value);
                case "moe_sequence_aux_loss_weight" -> moeSequenceAuxLossWeight = toDouble(key, value);
                case "moe_bias_schedule" -> moeBiasSchedule = value instanceof BiasSchedule s ? s : BiasSchedule.parse(value.toString());
                case "moe_bias_update_rate" -> moeBiasUpdateRate = toDouble(key, value);
                case "moe_bias_ema_decay" -> moeBiasEmaDecay = toDouble(key, value);
                case "moe_wire" -> moeWire = value instanceof WireType w ? w : WireType.parse(value.toString(), "moe_wire");
                case "moe_dedup" -> moeDedup = toBoolean(key, value);
                case "init_std" -> initStd = toDouble(key, value);
                case "tie_embeddings" -> tieEmbeddings = toBoolean(key, value);
                case "seed" -> seed = toLong(key, value);
                default -> throw new IllegalArgumentException("unknown model config key '" + key + "': valid keys are " + KEYS);
            }
            return this;
        }

        public ModelConfig build() {
            int hidden = ffnHidden > 0 ? ffnHidden : defaultFfnHidden(dim, multipleOf);
            return new ModelConfig(dim, nLayers, nHeads, nKvHeads, vocabSize, maxSeqLen, hidden, normEps, ropeTheta,
                    numExperts, moeTopK, moeFrequency, moeRouter, moeSharedExperts, moeAuxLossWeight, moeRouterZLossWeight,
                    moeCapacityFactor, moeGradientScale, moePackedExperts, moeExpertFfnMultiplier, moeSequenceAuxLossWeight,
                    moeBiasSchedule, moeBiasUpdateRate, moeBiasEmaDecay, moeWire, moeDedup, initStd, tieEmbeddings, seed);
        }

        private static long toLong(String key, Object v) {
            return ConfigValues.toLong("model config: " + key, v);
        }

        private static int toInt(String key, Object v) {
            return ConfigValues.toInt("model config: " + key, v);
        }

        private static double toDouble(String key, Object v) {
            return ConfigValues.toDouble("model config: " + key, v);
        }

        private static boolean toBoolean(String key, Object v) {
            if (v instanceof Boolean b) return b;
            String s = v.toString().trim();
            if (s.equals("true")) return true;
            if (s.equals("false")) return false;
            throw new IllegalArgumentException("model config: " + key + " must be true or false, got '" + v + "'");
        }
    }
}
