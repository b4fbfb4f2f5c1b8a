package moe4j.parallel;

import java.util.Collections;
import java.util.EnumSet;
import java.util.Map;
import java.util.WeakHashMap;
import moe4j.nn.Module;

/**
 * Which model transformations a model has been through, so that they are applied once each and in the
 * one order that composes correctly: tensor parallel → expert parallel → low precision → activation
 * checkpointing → FSDP-style sharding.
 */
public final class ParallelPlan {
    /** The transformations, in the order they must be applied. */
    public enum Stage {
        TENSOR_PARALLEL("tensor parallelism"),
        EXPERT_PARALLEL("expert parallelism"),
        LOW_PRECISION("low precision"),
        ACTIVATION_CHECKPOINTING("activation checkpointing"),
        DATA_PARALLEL_SHARDING("data parallelism (FSDP-style sharding)");

        final String label;

        Stage(String label) {
            this.label = label;
        }
    }

    private static final Map<Module, ParallelPlan> PLANS = Collections.synchronizedMap(new WeakHashMap<>());

    private final EnumSet<Stage> applied = EnumSet.noneOf(Stage.class);

    private ParallelPlan() {}

    public static ParallelPlan of(Module model) {
        return PLANS.computeIfAbsent(model, m -> new ParallelPlan());
    }

    public boolean has(Stage stage) {
        return applied.contains(stage);
    }

    /** Throws unless {@code stage} may be applied now: not yet applied, and no later stage applied before it. */
    public void require(Stage stage) {
        if (applied.contains(stage)) {
            throw new IllegalStateException(stage.label + " was already applied to this model; apply it once");
        }
        for (Stage later : applied) {
            if (later.ordinal() > stage.ordinal()) {
                throw new IllegalStateException(stage.label + " must be applied before " + later.label
                        + " (required order: tensor parallelism, expert parallelism, low precision, activation checkpointing,"
                        + " data parallelism / FSDP-style sharding), but this model already has " + later.label);
            }
        }
    }

    public void mark(Stage stage) {
        require(stage);
        applied.add(stage);
    }
}
