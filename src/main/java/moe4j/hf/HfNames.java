package moe4j.hf;

import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * How a moe4j parameter name reads in a Hugging Face checkpoint of a family, and how its values relate.
 *
 * <p>One relation needs care: RoPE. moe4j rotates adjacent pairs {@code (2i, 2i+1)} of each head (the
 * Meta layout); transformers rotates the halves {@code (i, i + hd/2)}. Both give the same attention once the
 * rows of the query and key projections (and their biases and norm weights) are reordered within each
 * head, so loading applies {@link #toMetaRows} to them and saving its inverse.
 */
public final class HfNames {
    private HfNames() {}

    /** A parameter's place in the checkpoint: its name, and whether its rows are RoPE-ordered (per head of {@code headDim}). */
    public record Source(String name, boolean ropeRows) {}

    private static final Pattern LAYER = Pattern.compile("layers\\.(\\d+)\\.(.+)");
    private static final Pattern EXPERT = Pattern.compile("moe\\.experts\\.(\\d+)\\.(gate|up|down)_proj\\.weight");

    /** The checkpoint name of moe4j parameter {@code name} in {@code family}. */
    public static Source of(HfFamily family, String name) {
        switch (name) {
            case "tok_embeddings.weight" -> { return new Source("model.embed_tokens.weight", false); }
            case "norm.weight" -> { return new Source("model.norm.weight", false); }
            case "output.weight" -> { return new Source("lm_head.weight", false); }
            default -> { }
        }
        Matcher m = LAYER.matcher(name);
        if (!m.matches()) throw new IllegalArgumentException("no " + family.modelType() + " checkpoint name for parameter '" + name + "'");
        String p = "model.layers." + m.group(1) + ".";
        String rest = m.group(2);
        String moe = family == HfFamily.MIXTRAL ? p + "block_sparse_moe." : p + "mlp.";
        Matcher e = EXPERT.matcher(rest);
        if (e.matches()) {
            String proj = e.group(2);
            if (family == HfFamily.MIXTRAL) {
                String w = switch (proj) {
                    case "gate" -> "w1";
                    case "down" -> "w2";
                    default -> "w3";
                };
                return new Source(moe + "experts." + e.group(1) + "." + w + ".weight", false);
            }
            return new Source(moe + "experts." + e.group(1) + "." + proj + "_proj.weight", false);
        }
        return switch (rest) {
            case "attention_norm.weight" -> new Source(p + "input_layernorm.weight", false);
            case "ffn_norm.weight" -> new Source(p + "post_attention_layernorm.weight", false);
            case "attention.wq.weight" -> new Source(p + "self_attn.q_proj.weight", true);
            case "attention.wq.bias" -> new Source(p + "self_attn.q_proj.bias", true);
            case "attention.wk.weight" -> new Source(p + "self_attn.k_proj.weight", true);
            case "attention.wk.bias" -> new Source(p + "self_attn.k_proj.bias", true);
            case "attention.wv.weight" -> new Source(p + "self_attn.v_proj.weight", false);
            case "attention.wv.bias" -> new Source(p + "self_attn.v_proj.bias", false);
            case "attention.wo.weight" -> new Source(p + "self_attn.o_proj.weight", false);
            case "attention.q_norm.weight" -> new Source(p + "self_attn.q_norm.weight", true);
            case "attention.k_norm.weight" -> new Source(p + "self_attn.k_norm.weight", true);
            case "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight" -> new Source(p + rest, false);
            case "moe.router.gate.weight" -> new Source(moe + "gate.weight", false);
            case "moe.shared_expert.gate_proj.weight", "moe.shared_expert.up_proj.weight", "moe.shared_expert.down_proj.weight",
                 "moe.shared_expert_gate.weight" -> new Source(moe + rest.substring("moe.".length()), false);
            default -> throw new IllegalArgumentException("no " + family.modelType() + " checkpoint name for parameter '" + name + "'");
        };
    }

    /**
     * The fused layout transformers 5 keeps in memory (and some checkpoints store): {@code experts.gate_up_proj}
     * (E, 2H, D) with gate rows first, and {@code experts.down_proj} (E, D, H). Null for a name that is no
     * routed expert's.
     */
    public record Fused(String name, int expert, boolean upHalf, boolean gateHalf) {}

    public static Fused fused(HfFamily family, String name) {
        Matcher m = LAYER.matcher(name);
        if (!m.matches()) return null;
        Matcher e = EXPERT.matcher(m.group(2));
        if (!e.matches()) return null;
        String base = "model.layers." + m.group(1) + "." + (family == HfFamily.MIXTRAL ? "block_sparse_moe." : "mlp.") + "experts.";
        int g = Integer.parseInt(e.group(1));
        return switch (e.group(2)) {
            case "gate" -> new Fused(base + "gate_up_proj", g, false, true);
            case "up" -> new Fused(base + "gate_up_proj", g, true, false);
            default -> new Fused(base + "down_proj", g, false, false);
        };
    }

    /**
     * Reorders the rows of {@code hf} (rows × cols, rows a multiple of headDim) from the rotate-half layout
     * to moe4j's adjacent-pair layout: moe4j row {@code h·hd + 2i + c} takes row {@code h·hd + i + c·hd/2}.
     */
    public static float[] toMetaRows(float[] hf, int rows, int cols, int headDim) {
        float[] out = new float[hf.length];
        int half = headDim / 2;
        for (int r = 0; r < rows; r++) {
            int head = r / headDim;
            int within = r % headDim;
            int src = head * headDim + (within / 2) + (within % 2) * half;
            System.arraycopy(hf, src * cols, out, r * cols, cols);
        }
        return out;
    }

    /** The inverse of {@link #toMetaRows}. */
    public static float[] toHfRows(float[] meta, int rows, int cols, int headDim) {
        float[] out = new float[meta.length];
        int half = headDim / 2;
        for (int r = 0; r < rows; r++) {
            int head = r / headDim;
            int within = r % headDim;
            int dst = head * headDim + (within / 2) + (within % 2) * half;
            System.arraycopy(meta, r * cols, out, dst * cols, cols);
        }
        return out;
    }
}
