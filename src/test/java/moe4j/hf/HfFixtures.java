package moe4j.hf;

import java.net.URISyntaxException;
import java.nio.file.Path;
import moe4j.tensor.SafeTensors;
import moe4j.tensor.Tensor;

/**
 * The reference models under src/test/resources/moe4j/hf, made by scripts/hf-fixtures.py with transformers:
 * one folder per family with its expected.safetensors (input_ids (2, 16), fp32 logits (2, 16, V) from
 * transformers, a prompt and transformers' greedy continuation of it).
 */
final class HfFixtures {
    private HfFixtures() {}

    static final String[] FAMILIES = {"mixtral", "mixtral-bf16", "qwen2_moe", "qwen3_moe", "olmoe"};

    static Path dir(String name) {
        try {
            return Path.of(HfFixtures.class.getResource("/moe4j/hf/" + name).toURI());
        } catch (URISyntaxException | NullPointerException e) {
            throw new IllegalStateException("test fixture moe4j/hf/" + name + " is missing", e);
        }
    }

    /** A persistent float32 / int32 copy of tensor {@code name} of {@code family}'s expected.safetensors. */
    static Tensor expected(String family, String name) {
        try (SafeTensors.Loaded f = SafeTensors.read(dir(family).resolve("expected.safetensors"))) {
            return moe4j.tensor.MemoryScope.persistent(() -> f.tensor(name).copy());
        } catch (java.io.IOException e) {
            throw new IllegalStateException(e);
        }
    }

    /** max |a − b| over all elements. */
    static double maxAbsDiff(float[] a, float[] b) {
        if (a.length != b.length) throw new AssertionError("lengths differ: " + a.length + " vs " + b.length);
        double m = 0;
        for (int i = 0; i < a.length; i++) m = Math.max(m, Math.abs((double) a[i] - b[i]));
        return m;
    }
}
