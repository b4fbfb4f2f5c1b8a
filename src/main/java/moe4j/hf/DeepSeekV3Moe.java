package moe4j.hf;

import com.google.gson.JsonObject;
import java.util.function.Function;
import java.util.function.Predicate;
import moe4j.nn.Expert;
import moe4j.nn.MoEConfig;
import moe4j.nn.RouterKind;
import moe4j.nn.MoEMLP;
import moe4j.nn.SigmoidTopKRouter;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;

/**
 * The MoE block of DeepSeek-V3 as one moe4j {@link MoEMLP}: sigmoid scores, selection by the top K of
 * scores + {@code e_score_correction_bias} within the best {@code topk_group} of {@code n_group} groups,
 * weights = the selected scores (normalised if {@code norm_topk_prob}) × {@code routed_scaling_factor}, plus
 * {@code n_shared_experts} shared experts as one SwiGLU of {@code n_shared_experts · moe_intermediate_size}.
 *
 * <p>DeepSeek-V3's attention (multi-head latent attention) is not part of moe4j, so whole DeepSeek-V3
 * models are not loaded; this class reads the MoE block of one layer from a checkpoint's tensors.
 */
public final class DeepSeekV3Moe {
    private DeepSeekV3Moe() {}

    /** The layer's configuration from config.json's keys. */
    public static MoEConfig config(JsonObject json, String source) {
        String scoring = json.has("scoring_func") && !json.get("scoring_func").isJsonNull() ? json.get("scoring_func").getAsString() : "sigmoid";
        if (!scoring.equals("sigmoid")) {
            throw new IllegalArgumentException(source + ": scoring_func = " + scoring + " is not supported (supported: sigmoid)");
        }
        String act = json.has("hidden_act") ? json.get("hidden_act").getAsString() : "silu";
        if (!act.equals("silu")) throw new IllegalArgumentException(source + ": hidden_act = " + act + " is not supported (supported: silu)");
        int hidden = required(json, "moe_intermediate_size", source);
        int shared = json.has("n_shared_experts") && !json.get("n_shared_experts").isJsonNull() ? json.get("n_shared_experts").getAsInt() : 0;
        MoEConfig.Builder b = MoEConfig.builder(required(json, "hidden_size", source), hidden,
                        json.has("n_routed_experts") ? required(json, "n_routed_experts", source) : required(json, "num_local_experts", source),
                        required(json, "num_experts_per_tok", source))
                .router(RouterKind.SIGMOID_TOPK)
                .routerGroups(required(json, "n_group", source), required(json, "topk_group", source))
                .normalizeTopK(json.has("norm_topk_prob") && json.get("norm_topk_prob").getAsBoolean())
                .routedScale(json.has("routed_scaling_factor") ? json.get("routed_scaling_factor").getAsDouble() : 1.0)
                .biasUpdateRate(0);
        if (shared > 0) b.sharedExperts(1).sharedHidden(shared * hidden);
        return b.build();
    }

    private static int required(JsonObject json, String key, String source) {
        if (!json.has(key) || json.get(key).isJsonNull()) throw new IllegalArgumentException(source + ": missing key '" + key + "'");
        return json.get(key).getAsInt();
    }

    /**
     * Fills {@code layer} (built from {@link #config}, possibly already holding only this rank's experts) from
     * the tensors under {@code prefix} ("model.layers.3.mlp." in a checkpoint): experts in the per-expert
     * layout ({@code experts.{g}.gate_proj.weight}, ...) or the fused one ({@code experts.gate_up_proj}
     * (E, 2H, D), {@code experts.down_proj} (E, D, H)). {@code has} tells which names exist; {@code tensor}
     * returns one as stored. A missing tensor is an error naming it.
     */
    public static void load(MoEMLP layer, String prefix, Predicate<String> has, Function<String, Tensor> tensor) {
        Function<String, Tensor> get = name -> {
            if (!has.test(prefix + name)) throw new IllegalArgumentException("DeepSeek-V3 MoE block: missing tensor '" + prefix + name + "'");
            return tensor.apply(prefix + name);
        };
        copy(get.apply("gate.weight"), layer.router().gate().weight());
        if (!(layer.router() instanceof SigmoidTopKRouter router)) {
            throw new IllegalArgumentException("DeepSeek-V3 MoE block: the layer must use the sigmoid router");
        }
        copy(get.apply("gate.e_score_correction_bias"), router.bias());
        boolean fused = has.test(prefix + "experts.gate_up_proj");
        for (int j = 0; j < layer.numLocalExperts(); j++) {
            int g = layer.localExpertStart() + j;
            Expert e = layer.localExperts().get(j);
            if (fused) {
                try (MemoryScope scope = MemoryScope.open()) {
                    // slice this expert out of the mapped (E, ...) tensors before converting: only its bytes are read
                    Tensor gateUp = get.apply("experts.gate_up_proj");
                    int rows = gateUp.dim(1);
                    Tensor mine = f32(gateUp.rows(g, g + 1)).view(rows, gateUp.dim(2));
                    copy(mine.rows(0, rows / 2), e.gateProj().weight());
                    copy(mine.rows(rows / 2, rows), e.upProj().weight());
                    Tensor down = get.apply("experts.down_proj");
                    copy(f32(down.rows(g, g + 1)).view(down.dim(1), down.dim(2)), e.downProj().weight());
                }
            } else {
                String p = "experts." + g + ".";
                copy(get.apply(p + "gate_proj.weight"), e.gateProj().weight());
                copy(get.apply(p + "up_proj.weight"), e.upProj().weight());
                copy(get.apply(p + "down_proj.weight"), e.downProj().weight());
            }
        }
        Expert shared = layer.sharedExpert();
        if (shared != null) {
            copy(get.apply("shared_experts.gate_proj.weight"), shared.gateProj().weight());
            copy(get.apply("shared_experts.up_proj.weight"), shared.upProj().weight());
            copy(get.apply("shared_experts.down_proj.weight"), shared.downProj().weight());
        }
    }

    private static Tensor f32(Tensor t) {
        return t.dtype() == moe4j.tensor.DType.F32 ? t : t.to(moe4j.tensor.DType.F32);
    }

    private static void copy(Tensor src, Tensor dst) {
        if (!java.util.Arrays.equals(src.shape(), dst.shape())) {
            throw new IllegalArgumentException("DeepSeek-V3 MoE block: tensor " + src.shapeString() + " where " + dst.shapeString() + " is expected");
        }
        try (MemoryScope scope = MemoryScope.open()) {
            dst.copyFrom(f32(src).copy());
        }
    }

}
