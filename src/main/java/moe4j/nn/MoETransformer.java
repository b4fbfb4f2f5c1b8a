package moe4j.nn;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import moe4j.ops.Ops;
import moe4j.tensor.DType;
import moe4j.tensor.Tensor;

/**
 * A Llama-style decoder-only language model whose feed-forwards are MoE layers (every
 * {@code moe_frequency}-th block, see {@link ModelConfig#isMoeLayer(int)}) or dense SwiGLU MLPs:
 * <pre>
 *   tokens (B, S) → tok_embeddings → layers.0 … layers.{n−1} → norm → output → logits (B·S, V)
 * </pre>
 * Parameter names follow the PyTorch (Meta Llama) convention: {@code tok_embeddings.weight},
 * {@code layers.{i}.attention.{wq,wk,wv,wo}.weight}, {@code layers.{i}.attention_norm.weight},
 * {@code layers.{i}.ffn_norm.weight}, {@code layers.{i}.moe.router.gate.weight},
 * {@code layers.{i}.moe.experts.{g}.{gate,up,down}_proj.weight} (or {@code layers.{i}.mlp.{gate,up,down}_proj.weight}),
 * {@code norm.weight}, {@code output.weight} (absent with tied embeddings).
 *
 * <p>Initialisation depends only on {@code config.seed()}: each tensor from the stream of its own name
 * (see {@link ParameterInit}); each MoE layer initialises itself from a seed derived from (seed, layer).
 * Weights Normal(0, init_std²), the residual-stream projections (wo, down_proj) init_std / sqrt(2·n_layers),
 * norms ones.
 */
public final class MoETransformer extends Module {
    private final ModelConfig config;
    private final TransformerOptions options;
    private final Embedding tokEmbeddings;
    private final List<TransformerBlock> layers;
    private final RMSNorm norm;
    private final Linear output;
    private java.util.function.BinaryOperator<Tensor> crossEntropy = Ops::crossEntropy;

    /** The loss of one batch and its parts; {@code total = crossEntropy + aux_w · auxLoss + z_w · zLoss}. */
    public record Loss(Tensor total, Tensor crossEntropy, Tensor auxLoss, Tensor zLoss) {}

    public MoETransformer(ModelConfig config) {
        this(config, TransformerOptions.DEFAULT);
    }

    /** The model of {@code config} with a published family's changes ({@link TransformerOptions}). */
    public MoETransformer(ModelConfig config, TransformerOptions options) {
        this(config, options, true);
    }

    /**
     * The model with its weights left at zero (norm weights at one), for filling from a checkpoint: drawing
     * billions of random numbers only to overwrite them would dominate loading a published model.
     */
    public static MoETransformer uninitialized(ModelConfig config, TransformerOptions options) {
        return new MoETransformer(config, options, false);
    }

    private MoETransformer(ModelConfig config, TransformerOptions options, boolean initialize) {
        this.config = config;
        this.options = options;
        this.tokEmbeddings = registerModule("tok_embeddings", new Embedding(config.vocabSize(), config.dim()));
        Module layerList = registerModule("layers", new LayerList());
        List<TransformerBlock> blocks = new ArrayList<>();
        for (int i = 0; i < config.nLayers(); i++) {
            blocks.add(layerList.registerModule(Integer.toString(i), new TransformerBlock(config, options, i, initialize)));
        }
        this.layers = Collections.unmodifiableList(blocks);
        this.norm = registerModule("norm", new RMSNorm(config.dim(), config.normEps()));
        this.output = config.tieEmbeddings() ? null : registerModule("output", new Linear(config.dim(), config.vocabSize()));
        if (initialize) initialize();
    }

    private void initialize() {
        long seed = config.seed();
        double std = config.initStd();
        double residualStd = std / Math.sqrt(2.0 * config.nLayers());
        ParameterInit.normal(tokEmbeddings.weight(), seed, "tok_embeddings.weight", std);
        for (int i = 0; i < layers.size(); i++) {
            String p = "layers." + i + ".";
            TransformerBlock block = layers.get(i);
            Attention a = block.attention();
            ParameterInit.normal(a.wq().weight(), seed, p + "attention.wq.weight", std);
            ParameterInit.normal(a.wk().weight(), seed, p + "attention.wk.weight", std);
            ParameterInit.normal(a.wv().weight(), seed, p + "attention.wv.weight", std);
            ParameterInit.normal(a.wo().weight(), seed, p + "attention.wo.weight", residualStd);
            Expert mlp = block.mlp();
            if (mlp != null) {
                ParameterInit.normal(mlp.gateProj().weight(), seed, p + "mlp.gate_proj.weight", std);
                ParameterInit.normal(mlp.upProj().weight(), seed, p + "mlp.up_proj.weight", std);
                ParameterInit.normal(mlp.downProj().weight(), seed, p + "mlp.down_proj.weight", residualStd);
            }
        }
        if (output != null) ParameterInit.normal(output.weight(), seed, "output.weight", std);
    }

    // ---------------------------------------------------------------- forward and loss

    /** int32 tokens (B, S), S ≤ max_seq_len, ids in [0, V) → logits (B·S, V), row b·S + s for token (b, s). */
    public Tensor forward(Tensor tokens) {
        tokens.requireDType(DType.I32, "MoETransformer.forward");
        if (tokens.rank() != 2) {
            throw new IllegalArgumentException("MoETransformer.forward: tokens must be (B, S), got " + tokens.shapeString());
        }
        int b = tokens.dim(0);
        int s = tokens.dim(1);
        if (s > config.maxSeqLen()) {
            throw new IllegalArgumentException("MoETransformer.forward: sequence length " + s + " exceeds max_seq_len " + config.maxSeqLen());
        }
        int d = config.dim();
        Tensor h = Ops.reshape(tokEmbeddings.forward(tokens.view(b * s)), b, s, d);
        for (TransformerBlock block : layers) h = block.forward(h);
        Tensor flat = Ops.reshape(norm.forward(h), b * s, d);
        return output != null ? output.forward(flat) : Ops.matmul(flat, false, tokEmbeddings.weight(), true);
    }

    /**
     * Decoding step: int32 {@code tokens} (n), the next n tokens of one sequence after the {@code cache.length()}
     * cached ones → logits (n, V). Appends the tokens' keys and values to {@code cache}. Call without gradients.
     */
    public Tensor forwardCached(Tensor tokens, KvCache cache) {
        tokens.requireDType(DType.I32, "MoETransformer.forwardCached");
        int n = Math.toIntExact(tokens.numel());
        if (cache.length() + n > config.maxSeqLen()) {
            throw new IllegalArgumentException("MoETransformer.forwardCached: " + (cache.length() + n) + " tokens exceed max_seq_len "
                    + config.maxSeqLen());
        }
        Tensor h = tokEmbeddings.forward(tokens.view(n));
        for (int i = 0; i < layers.size(); i++) h = layers.get(i).forwardCached(h, cache.layer(i));
        Tensor normed = norm.forward(h);
        return output != null ? output.forward(normed) : Ops.matmul(normed, false, tokEmbeddings.weight(), true);
    }

    /**
     * Next-token loss: mean cross-entropy of the logits of {@code tokens} against int32 {@code targets}
     * (the same (B, S) shape, or (B·S); −1 marks a position to ignore), plus the weighted router losses
     * of this forward pass.
     */
    public Loss loss(Tensor tokens, Tensor targets) {
        targets.requireDType(DType.I32, "MoETransformer.loss");
        if (targets.numel() != tokens.numel()) {
            throw new IllegalArgumentException("MoETransformer.loss: targets " + targets.shapeString() + " must match tokens "
                    + tokens.shapeString());
        }
        Tensor logits = forward(tokens);
        Tensor ce = crossEntropy.apply(logits, targets.view(Math.toIntExact(targets.numel())));
        Tensor aux = auxLoss();
        Tensor z = zLoss();
        Tensor total = ce;
        if (config.moeAuxLossWeight() != 0 && !moeLayers().isEmpty()) total = Ops.add(total, Ops.scale(aux, config.moeAuxLossWeight()));
        if (config.moeRouterZLossWeight() != 0 && !moeLayers().isEmpty()) total = Ops.add(total, Ops.scale(z, config.moeRouterZLossWeight()));
        return new Loss(total, ce, aux, z);
    }

    /** Σ over MoE layers of the auxiliary (load-balance) loss of their last forward; a zero scalar for a dense model. */
    public Tensor auxLoss() {
        return sumRouterLosses(true);
    }

    /** Σ over MoE layers of the router z-loss of their last forward; a zero scalar for a dense model. */
    public Tensor zLoss() {
        return sumRouterLosses(false);
    }

    private Tensor sumRouterLosses(boolean aux) {
        Tensor sum = null;
        for (MoEMLP moe : moeLayers()) {
            RouterOutput last = moe.router().lastOutput();
            if (last == null) throw new IllegalStateException("router losses asked for before any forward pass");
            Tensor part = aux ? last.auxLoss() : last.zLoss();
            sum = sum == null ? part : Ops.add(sum, part);
        }
        return sum == null ? Tensor.zeros(tokEmbeddings.weight().device()) : sum;
    }

    // ---------------------------------------------------------------- structure

    public ModelConfig config() {
        return config;
    }

    public TransformerOptions options() {
        return options;
    }

    public Embedding tokEmbeddings() {
        return tokEmbeddings;
    }

    public List<TransformerBlock> layers() {
        return layers;
    }

    public RMSNorm norm() {
        return norm;
    }

    /**
     * Replaces the mean cross-entropy of (logits, targets) the loss uses: vocabulary-parallel logits need
     * one that reduces over the ranks holding the other columns.
     */
    public void setCrossEntropy(java.util.function.BinaryOperator<Tensor> crossEntropy) {
        this.crossEntropy = java.util.Objects.requireNonNull(crossEntropy, "crossEntropy");
    }

    /** The output projection, or null when it is tied to the token embeddings. */
    public Linear output() {
        return output;
    }

    /** The MoE feed-forwards in layer order (empty for a dense model). */
    public List<MoEMLP> moeLayers() {
        List<MoEMLP> out = new ArrayList<>();
        for (TransformerBlock block : layers) {
            if (block.moe() != null) out.add(block.moe());
        }
        return out;
    }

    /** The number of parameter elements this rank holds. */
    public long parameterCount() {
        long n = 0;
        for (Tensor p : parameters()) n += p.numel();
        return n;
    }

    /** The container of the blocks, named by layer index. */
    private static final class LayerList extends Module {}
}
