package moe4j.nn;

import java.util.Arrays;
import java.util.Locale;

/** How the sigmoid router's bias update rate changes over training. */
public enum BiasSchedule {
    /** {@code rate}. */
    CONSTANT,
    /** {@code rate · ½ (1 + cos(π · step / maxSteps))}. */
    COSINE_DECAY,
    /** {@code rate · min(1, 10 · step / maxSteps)}. */
    LINEAR_WARMUP;

    public double rate(double baseRate, long step, long maxSteps) {
        if (maxSteps <= 0 && this != CONSTANT) {
            throw new IllegalArgumentException("bias schedule " + configName() + " needs maxSteps > 0, got " + maxSteps);
        }
        return switch (this) {
            case CONSTANT -> baseRate;
            case COSINE_DECAY -> baseRate * 0.5 * (1 + Math.cos(Math.PI * step / maxSteps));
            case LINEAR_WARMUP -> baseRate * Math.min(1.0, 10.0 * step / maxSteps);
        };
    }

    public String configName() {
        return name().toLowerCase(Locale.ROOT);
    }

    public static BiasSchedule parse(String name) {
        for (BiasSchedule s : values()) {
            if (s.configName().equals(name)) return s;
        }
        throw new IllegalArgumentException("unknown bias schedule '" + name + "': valid schedules are "
                + Arrays.stream(values()).map(BiasSchedule::configName).toList());
    }
}
