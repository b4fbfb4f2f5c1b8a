package moe4j.nn;

import java.nio.charset.StandardCharsets;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * Deterministic initialisation by name: every tensor draws from its own random stream, chosen by its
 * qualified parameter name, so a tensor's initial value depends only on (seed, name) — not on the
 * order modules are built in, nor on which other tensors exist.
 */
final class ParameterInit {
    private ParameterInit() {}

    /** A 64-bit FNV-1a hash of the name's UTF-8 bytes: a stable stream id. */
    static long streamId(String name) {
        long h = 0xcbf29ce484222325L;
        for (byte b : name.getBytes(StandardCharsets.UTF_8)) {
            h ^= b & 0xff;
            h *= 0x100000001b3L;
        }
        return h;
    }

    /** The generator of the tensor called {@code name}. */
    static Rng rng(long seed, String name) {
        return Rng.forStream(seed, streamId(name));
    }

    /** A seed for a sub-model (e.g. an MoE layer that initialises itself) derived from (seed, name). */
    static long derivedSeed(long seed, String name) {
        return rng(seed, name).nextLong();
    }

    /** Fills {@code t} with Normal(0, std²) draws from the stream of {@code name}. */
    static void normal(Tensor t, long seed, String name, double std) {
        Rng rng = rng(seed, name);
        float[] values = new float[Math.toIntExact(t.numel())];
        for (int i = 0; i < values.length; i++) values[i] = (float) (rng.nextGaussian() * std);
        t.copyFrom(Tensor.of(values, t.shape()));
    }
}
