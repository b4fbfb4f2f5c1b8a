package moe4j.hf;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;
import moe4j.nn.ModelConfig;
import moe4j.nn.RouterKind;
import moe4j.nn.QkNorm;
import moe4j.nn.TransformerOptions;

/**
 * A Hugging Face {@code config.json} of a supported MoE family, read into moe4j's model description:
 * the {@link ModelConfig} plus the family's {@link TransformerOptions}. Settings moe4j does not implement
 * (another RoPE type, a QKV clip, attention output biases, Qwen's per-layer sliding windows) are errors
 * that name the key, never silently ignored.
 *
 * @param json the file as read, kept so that a saved checkpoint carries the same configuration
 */
public record HfConfig(HfFamily family, ModelConfig model, TransformerOptions options, JsonObject json) {

    /** Reads {@code dir/config.json}. */
    public static HfConfig read(Path dir) {
        Path file = dir.resolve("config.json");
        if (!Files.isRegularFile(file)) throw new IllegalArgumentException("model folder " + dir + " has no config.json");
        try {
            return parse(JsonParser.parseString(Files.readString(file)).getAsJsonObject(), file.toString());
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read " + file + ": " + e.getMessage(), e);
        } catch (IllegalStateException | com.google.gson.JsonParseException e) {
            throw new IllegalArgumentException(file + " is not a JSON object: " + e.getMessage(), e);
        }
    }

    public static HfConfig parse(JsonObject json, String source) {
        Keys k = new Keys(json, source);
        HfFamily family = HfFamily.of(k.string("model_type", null), source);
        String act = k.string("hidden_act", "silu");
        if (!act.equals("silu")) throw k.unsupported("hidden_act", act, "silu");
        int dim = k.integer("hidden_size");
        int heads = k.integer("num_attention_heads");
        int headDim = k.has("head_dim") ? k.integer("head_dim") : 0;
        if (headDim == dim / heads && dim % heads == 0) headDim = 0;

        ModelConfig.Builder b = ModelConfig.builder()
                .dim(dim)
                .nLayers(k.integer("num_hidden_layers"))
                .nHeads(heads)
                .nKvHeads(k.has("num_key_value_heads") ? k.integer("num_key_value_heads") : heads)
                .vocabSize(k.integer("vocab_size"))
                .maxSeqLen(k.has("max_position_embeddings") ? k.integer("max_position_embeddings") : 4096)
                .ffnHidden(k.integer("intermediate_size"))
                .normEps(k.number("rms_norm_eps", 1e-6))
                .moeRouter(RouterKind.SOFTMAX_TOPK)
                .moeTopK(k.integer("num_experts_per_tok"))
                .moeAuxLossWeight(k.number("router_aux_loss_coef", 0.01))
                .moeRouterZLossWeight(0)
                .tieEmbeddings(k.bool("tie_word_embeddings", false));

        // RoPE: transformers 5 writes rope_parameters, older files rope_theta with an optional rope_scaling
        double theta = k.number("rope_theta", 10000);
        double scale = 1;
        JsonObject rope = k.object("rope_parameters");
        if (rope == null) rope = k.object("rope_scaling");
        if (rope != null) {
            Keys r = new Keys(rope, source + " rope parameters");
            theta = r.number("rope_theta", theta);
            String type = r.has("rope_type") ? r.string("rope_type", "default") : r.string("type", "default");
            if (r.has("partial_rotary_factor") && r.number("partial_rotary_factor", 1) != 1) {
                throw r.unsupported("partial_rotary_factor", r.number("partial_rotary_factor", 1), "1");
            }
            switch (type) {
                case "default" -> { }
                case "linear" -> scale = r.number("factor", 1);
                default -> throw r.unsupported("rope_type", type, "default, linear");
            }
        }
        b.ropeTheta(theta);

        int expertHidden;
        int sharedHidden = 0;
        boolean sharedGate = false;
        boolean normalizeTopK;
        boolean qkvBias = false;
        QkNorm qkNorm = QkNorm.NONE;
        int window = 0;
        Set<Integer> dense = new HashSet<>();
        switch (family) {
            case MIXTRAL -> {
                b.numExperts(k.integer("num_local_experts"));
                expertHidden = k.integer("intermediate_size");
                normalizeTopK = true;
                window = k.isNull("sliding_window") ? 0 : k.integer("sliding_window");
            }
            case QWEN2_MOE, QWEN3_MOE -> {
                b.numExperts(k.has("num_experts") ? k.integer("num_experts") : k.integer("num_local_experts"));
                expertHidden = k.integer("moe_intermediate_size");
                normalizeTopK = k.bool("norm_topk_prob", false);
                b.moeFrequency(k.has("decoder_sparse_step") ? k.integer("decoder_sparse_step") : 1);
                if (k.has("mlp_only_layers")) {
                    for (JsonElement e : json.getAsJsonArray("mlp_only_layers")) dense.add(e.getAsInt());
                }
                if (k.bool("use_sliding_window", false)) throw k.unsupported("use_sliding_window", true, "false");
                if (family == HfFamily.QWEN2_MOE) {
                    qkvBias = k.bool("qkv_bias", true);
                    sharedHidden = k.integer("shared_expert_intermediate_size");
                    sharedGate = true;
                    b.moeSharedExperts(1);
                } else {
                    if (k.bool("attention_bias", false)) throw k.unsupported("attention_bias", true, "false");
                    qkNorm = QkNorm.PER_HEAD;
                }
            }
            case OLMOE -> {
                b.numExperts(k.integer("num_experts"));
                expertHidden = k.integer("intermediate_size");
                normalizeTopK = k.bool("norm_topk_prob", false);
                if (!k.isNull("clip_qkv")) throw k.unsupported("clip_qkv", json.get("clip_qkv"), "null");
                if (k.bool("attention_bias", false)) throw k.unsupported("attention_bias", true, "false");
                qkNorm = QkNorm.ALL_HEADS;
            }
            default -> throw new AssertionError(family);
        }
        ModelConfig model;
        try {
            model = b.build();
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(source + ": " + e.getMessage(), e);
        }
        TransformerOptions options = new TransformerOptions(headDim, scale, qkvBias, qkNorm, window, dense, expertHidden,
                sharedHidden, sharedGate, normalizeTopK);
        return new HfConfig(family, model, options, json.deepCopy());
    }

    /** Typed access to config.json keys, with errors naming the file and key. */
    private record Keys(JsonObject json, String source) {
        boolean has(String key) {
            return json.has(key) && !json.get(key).isJsonNull();
        }

        boolean isNull(String key) {
            return !has(key);
        }

        int integer(String key) {
            if (!has(key)) throw new IllegalArgumentException(source + ": missing key '" + key + "'");
            try {
                double v = json.get(key).getAsDouble();
                if (v != Math.rint(v)) throw new NumberFormatException();
                return Math.toIntExact((long) v);
            } catch (RuntimeException e) {
                throw new IllegalArgumentException(source + ": '" + key + "' must be an integer, got " + json.get(key));
            }
        }

        double number(String key, double fallback) {
            if (!has(key)) return fallback;
            try {
                return json.get(key).getAsDouble();
            } catch (RuntimeException e) {
                throw new IllegalArgumentException(source + ": '" + key + "' must be a number, got " + json.get(key));
            }
        }

        boolean bool(String key, boolean fallback) {
            if (!has(key)) return fallback;
            JsonElement e = json.get(key);
            if (!e.isJsonPrimitive() || !e.getAsJsonPrimitive().isBoolean()) {
                throw new IllegalArgumentException(source + ": '" + key + "' must be true or false, got " + e);
            }
            return e.getAsBoolean();
        }

        String string(String key, String fallback) {
            if (!has(key)) {
                if (fallback == null) throw new IllegalArgumentException(source + ": missing key '" + key + "'");
                return fallback;
            }
            return json.get(key).getAsString();
        }

        JsonObject object(String key) {
            return has(key) && json.get(key).isJsonObject() ? json.getAsJsonObject(key) : null;
        }

        IllegalArgumentException unsupported(String key, Object value, String supported) {
            return new IllegalArgumentException(source + ": " + key + " = " + value + " is not supported (supported: " + supported + ")");
        }
    }
}
