package moe4j.nn;

import java.util.Arrays;
import java.util.Locale;
import moe4j.ops.Ops;
import moe4j.tensor.Tensor;

/** Expert activations: {@code silu} always means the gated SwiGLU expert; gelu (exact) and relu give two-matrix experts. */
public enum Activation {
    SILU, GELU, RELU;

    public boolean gated() {
        return this == SILU;
    }

    /** The non-gated activation function (gelu or relu). */
    public Tensor apply(Tensor x) {
        return switch (this) {
            case GELU -> Ops.gelu(x);
            case RELU -> Ops.relu(x);
            case SILU -> throw new IllegalStateException("silu experts are gated: use Ops.swiglu(gate, up)");
        };
    }

    public String configName() {
        return name().toLowerCase(Locale.ROOT);
    }

    public static Activation parse(String name) {
        for (Activation a : values()) {
            if (a.configName().equals(name)) return a;
        }
        throw new IllegalArgumentException("unknown activation '" + name + "': valid activations are "
                + Arrays.stream(values()).map(Activation::configName).toList());
    }
}
