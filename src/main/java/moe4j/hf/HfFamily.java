package moe4j.hf;

import java.util.Arrays;
import java.util.List;

/** The Hugging Face MoE model families moe4j reads, by their config.json {@code model_type}. */
public enum HfFamily {
    MIXTRAL("mixtral"),
    QWEN2_MOE("qwen2_moe"),
    QWEN3_MOE("qwen3_moe"),
    OLMOE("olmoe");

    private final String modelType;

    HfFamily(String modelType) {
        this.modelType = modelType;
    }

    public String modelType() {
        return modelType;
    }

    public static List<String> modelTypes() {
        return Arrays.stream(values()).map(HfFamily::modelType).toList();
    }

    /** The family of {@code modelType}; an unknown one is an error naming the ones supported. */
    public static HfFamily of(String modelType, String source) {
        for (HfFamily f : values()) {
            if (f.modelType.equals(modelType)) return f;
        }
        throw new IllegalArgumentException(source + ": model_type '" + modelType + "' is not a supported architecture; supported: "
                + modelTypes());
    }
}
