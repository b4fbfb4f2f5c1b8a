package moe4j.nn;

import java.util.List;
import java.util.Locale;

/**
 * The three linear maps of an expert: {@code gate} and {@code up} (D → H) and {@code down} (H → D);
 * two-matrix experts (gelu, relu) have no gate. The names are the checkpoint's: {@code gate_proj} in the
 * list layout ({@code experts.{g}.gate_proj.weight}, stored (out, in)), {@code gate_w} in the packed one
 * ({@code (E, in, out)}).
 */
public enum ExpertProjection {
    GATE, UP, DOWN;

    /** The projections an expert with {@code activation} has, in the initialisation order gate, up, down. */
    public static List<ExpertProjection> forActivation(Activation activation) {
        return activation.gated() ? List.of(GATE, UP, DOWN) : List.of(UP, DOWN);
    }

    /** The linear module's name in the list layout and in the shared expert: {@code gate_proj}, ... */
    public String moduleName() {
        return name().toLowerCase(Locale.ROOT) + "_proj";
    }

    /** The packed layer's parameter name: {@code gate_w}, {@code up_w}, {@code down_w}. */
    public String packedName() {
        return name().toLowerCase(Locale.ROOT) + "_w";
    }

    /** This projection's linear map in a list-layout expert (null for the gate of a two-matrix expert). */
    public Linear in(Expert expert) {
        return switch (this) {
            case GATE -> expert.gateProj();
            case UP -> expert.upProj();
            case DOWN -> expert.downProj();
        };
    }
}
