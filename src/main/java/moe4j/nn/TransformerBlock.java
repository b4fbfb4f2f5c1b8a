package moe4j.nn;

import moe4j.autograd.Profiler;
import moe4j.ops.Ops;
import moe4j.tensor.Tensor;

/**
 * One pre-norm transformer block:
 * <pre>
 *   h   = x + attention(attention_norm(x))
 *   out = h + ffn(ffn_norm(h))
 * </pre>
 * where the feed-forward is an {@link MoEMLP} (registered as {@code moe}) or a dense SwiGLU
 * {@link Expert} (registered as {@code mlp}).
 */
public final class TransformerBlock extends Module {
    private final RMSNorm attentionNorm;
    private final Attention attention;
    private final RMSNorm ffnNorm;
    private final MoEMLP moe;
    private final Expert mlp;

    /** Block {@code layerIndex} of a model with {@code config}; weights are zero until initialised (the MoE layer initialises itself when {@code initializeMoe}). */
    TransformerBlock(ModelConfig config, TransformerOptions options, int layerIndex, boolean initializeMoe) {
        this.attentionNorm = registerModule("attention_norm", new RMSNorm(config.dim(), config.normEps()));
        this.attention = registerModule("attention", new Attention(config.dim(), options.attention(config)));
        this.ffnNorm = registerModule("ffn_norm", new RMSNorm(config.dim(), config.normEps()));
        if (options.isMoeLayer(config, layerIndex)) {
            MoEConfig moeConfig = options.moeConfig(config, layerIndex);
            this.moe = registerModule("moe", initializeMoe ? MoEMLP.build(moeConfig) : MoEMLP.uninitialized(moeConfig));
            this.mlp = null;
        } else {
            this.moe = null;
            this.mlp = registerModule("mlp", new Expert(config.dim(), config.ffnHidden(), Activation.SILU));
        }
    }

    public Attention attention() {
        return attention;
    }

    public RMSNorm attentionNorm() {
        return attentionNorm;
    }

    public RMSNorm ffnNorm() {
        return ffnNorm;
    }

    /** The MoE feed-forward, or null in a dense block. */
    public MoEMLP moe() {
        return moe;
    }

    /** The dense feed-forward, or null in an MoE block. */
    public Expert mlp() {
        return mlp;
    }

    public boolean isMoe() {
        return moe != null;
    }

    /** {@code x} (B, S, D) → (B, S, D). */
    public Tensor forward(Tensor x) {
        return wrapped(x, this::compute);
    }

    private Tensor compute(Tensor x) {
        Tensor attended;
        try (var p = Profiler.phase(ATTENTION_PHASE)) {
            attended = attention.forward(attentionNorm.forward(x));
        }
        Tensor h = Ops.add(x, attended);
        Tensor normed;
        try (var p = Profiler.phase(NORM_PHASE)) {
            normed = ffnNorm.forward(h);
        }
        Tensor ffn;
        if (moe != null) {
            ffn = moe.forward(normed); // the MoE layer reports its own phases
        } else {
            try (var p = Profiler.phase(DENSE_MLP_PHASE)) {
                ffn = mlp.forward(normed);
            }
        }
        return Ops.add(h, ffn);
    }

    /** Decoding step on {@code x} (n, D), the next n tokens of one sequence; see {@link Attention#forwardCached}. */
    public Tensor forwardCached(Tensor x, KvCache.Layer cache) {
        Tensor h = Ops.add(x, attention.forwardCached(attentionNorm.forward(x), cache));
        Tensor normed = ffnNorm.forward(h);
        return Ops.add(h, moe != null ? moe.forward(normed) : mlp.forward(normed));
    }

    /** Profiler phases of a block, forward and backward (the attention phase includes its input norm). */
    public static final String ATTENTION_PHASE = "attention";
    public static final String NORM_PHASE = "norm";
    public static final String DENSE_MLP_PHASE = "dense mlp";
}
