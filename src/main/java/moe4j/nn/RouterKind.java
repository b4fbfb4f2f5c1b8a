package moe4j.nn;

import java.util.Arrays;
import java.util.Locale;

/** The two routers (docs/EXPERT_PARALLELISM.md); the lower-case name is the config, TOML and command-line spelling. */
public enum RouterKind {
    /** Softmax over the gate logits, top K, renormalised (Switch/Mixtral). */
    SOFTMAX_TOPK,
    /** Sigmoid scores, top K of score + bias, renormalised; the bias balances load (DeepSeek-V3). */
    SIGMOID_TOPK;

    public String configName() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** The router named {@code name} ({@code softmax_topk} or {@code sigmoid_topk}); {@code what} names the setting in the error. */
    public static RouterKind parse(String name, String what) {
        for (RouterKind k : values()) {
            if (k.configName().equals(name)) return k;
        }
        throw new IllegalArgumentException("unknown " + what + " '" + name + "': valid routers are "
                + Arrays.stream(values()).map(RouterKind::configName).toList());
    }

    public static RouterKind parse(String name) {
        return parse(name, "router");
    }
}
