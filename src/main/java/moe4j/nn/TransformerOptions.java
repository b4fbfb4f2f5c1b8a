package moe4j.nn;

import java.util.Set;

/**
 * What a published model family changes in the Llama-style MoE transformer of {@link ModelConfig}; the
 * {@link #DEFAULT} changes nothing.
 *
 * @param headDim attention head dimension, 0 for dim / n_heads (Qwen3 sets its own)
 * @param ropeScale linear RoPE scaling factor, 1 for none
 * @param qkvBias q, k and v projections carry biases (Qwen2)
 * @param qkNorm RMSNorm on queries and keys (Qwen3 per head, OLMoE over all heads)
 * @param slidingWindow attend to the last this-many positions only, 0 for all (Mistral family)
 * @param denseLayers layers that stay dense although the MoE frequency would make them MoE (Qwen2's mlp_only_layers,
 *        DeepSeek's first dense layers)
 * @param expertHidden routed experts' hidden size, 0 for the one ModelConfig derives
 * @param sharedExpertHidden the shared expert's hidden size, 0 for the routed experts'
 * @param sharedExpertGate the shared expert's output is scaled by a per-token sigmoid gate (Qwen2-MoE)
 * @param normalizeTopK the router renormalises the selected weights to sum to 1
 */
public record TransformerOptions(int headDim, double ropeScale, boolean qkvBias, QkNorm qkNorm, int slidingWindow,
                                 Set<Integer> denseLayers, int expertHidden, int sharedExpertHidden,
                                 boolean sharedExpertGate, boolean normalizeTopK) {
    public static final TransformerOptions DEFAULT =
            new TransformerOptions(0, 1.0, false, QkNorm.NONE, 0, Set.of(), 0, 0, false, true);

    public TransformerOptions {
        denseLayers = Set.copyOf(denseLayers);
        if (headDim < 0 || expertHidden < 0 || sharedExpertHidden < 0 || slidingWindow < 0) {
            throw new IllegalArgumentException("TransformerOptions: sizes must be >= 0 (0 = default), got head_dim " + headDim
                    + ", expert hidden " + expertHidden + ", shared expert hidden " + sharedExpertHidden + ", sliding window " + slidingWindow);
        }
        if (!(ropeScale > 0)) throw new IllegalArgumentException("TransformerOptions: rope scale must be > 0, got " + ropeScale);
    }

    /** Attention options of a block of {@code config}. */
    public Attention.Options attention(ModelConfig config) {
        return new Attention.Options(config.nHeads(), config.nKvHeads(), headDim > 0 ? headDim : config.headDim(),
                config.ropeTheta(), ropeScale, qkvBias, qkNorm, config.normEps(), slidingWindow);
    }

    /** Whether layer i of {@code config} has an MoE feed-forward. */
    public boolean isMoeLayer(ModelConfig config, int i) {
        return config.isMoeLayer(i) && !denseLayers.contains(i);
    }

    /** The MoE configuration of layer i of {@code config}, with this family's changes. */
    public MoEConfig moeConfig(ModelConfig config, int i) {
        MoEConfig base = config.moeConfig(i);
        MoEConfig.Builder b = expertHidden > 0
                ? copyInto(base, MoEConfig.builder(base.dim(), expertHidden, base.numExperts(), base.topK()))
                : base.toBuilder();
        return b.sharedHidden(sharedExpertHidden).sharedExpertGate(sharedExpertGate).normalizeTopK(normalizeTopK).build();
    }

    private static MoEConfig.Builder copyInto(MoEConfig c, MoEConfig.Builder b) {
        return b.activation(c.activation()).router(c.router()).sharedExperts(c.sharedExperts()).capacityFactor(c.capacityFactor())
                .gradientScale(c.gradientScale()).sequenceAuxLossWeight(c.sequenceAuxLossWeight()).biasSchedule(c.biasSchedule())
                .biasUpdateRate(c.biasUpdateRate()).biasEmaDecay(c.biasEmaDecay()).packed(c.packed()).initStd(c.initStd())
                .numLayers(c.numLayers()).seed(c.seed()).checkFinite(c.checkFinite());
    }
}
