package moe4j.nn;

import java.util.Arrays;
import java.util.Locale;
import moe4j.tensor.DType;

/**
 * The element type token rows travel in between expert-parallel ranks, forward and backward (dispatch,
 * combine and their gradients); the lower-case name is the config, TOML and command-line spelling. A bf16
 * wire halves the bytes on the wire: each row is rounded to bfloat16 before it leaves and widened back to
 * float32 on arrival, so the experts see bf16-rounded rows, which is what bf16 products read anyway.
 */
public enum WireType {
    /** bf16 when the rank's matrix products take bf16 operands (its execution context), else f32. */
    AUTO,
    /** Rows travel as computed, in float32. */
    F32,
    /** Rows travel rounded to bfloat16 (round to nearest even). */
    BF16;

    public String configName() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** The type rows travel in when the products take {@code productInputs} operands. */
    public DType resolve(DType productInputs) {
        return switch (this) {
            case AUTO -> productInputs == DType.BF16 ? DType.BF16 : DType.F32;
            case F32 -> DType.F32;
            case BF16 -> DType.BF16;
        };
    }

    /** The wire named {@code name} ({@code auto}, {@code f32} or {@code bf16}); {@code what} names the setting in the error. */
    public static WireType parse(String name, String what) {
        for (WireType w : values()) {
            if (w.configName().equals(name)) return w;
        }
        throw new IllegalArgumentException("unknown " + what + " '" + name + "': valid values are "
                + Arrays.stream(values()).map(WireType::configName).toList());
    }
}
