package moe4j.tensor;

/**
 * Element types. Compute is float32 ({@link #F32}) with int32 ({@link #I32}) for indices;
 * {@link #BF16}, {@link #F16} and {@link #I64} are storage and wire types, converted on load and store.
 */
public enum DType {
    F32(4, "F32"), BF16(2, "BF16"), F16(2, "F16"), I32(4, "I32"), I64(8, "I64");

    public final int byteSize;
    /** The name the safetensors header uses. */
    public final String safetensorsName;

    DType(int byteSize, String safetensorsName) {
        this.byteSize = byteSize;
        this.safetensorsName = safetensorsName;
    }

    public boolean isFloating() {
        return this == F32 || this == BF16 || this == F16;
    }

    public static DType fromSafetensors(String name) {
        for (DType d : values()) {
            if (d.safetensorsName.equals(name)) return d;
        }
        throw new IllegalArgumentException("unsupported safetensors dtype '" + name
                + "': expected one of F32, BF16, F16, I32, I64");
    }
}
