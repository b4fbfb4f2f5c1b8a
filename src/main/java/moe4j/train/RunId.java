package moe4j.train;

import com.google.gson.Gson;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.HexFormat;

/**
 * Which run a checkpoint or a metrics line belongs to: a hash of the settings that make a run the same
 * run ({@link TrainConfig#resumeIdentity()}), its seed and the moment it first started. A resumed run
 * keeps the identity its checkpoint recorded; a fresh run gets a new one, even with the same settings,
 * so that two runs never mix in one folder or one file.
 */
public record RunId(String configHash, long seed, String started) {
    private static final Gson GSON = new Gson();

    /** The identity of a run of {@code config} that starts at {@code now}. */
    public static RunId start(TrainConfig config, Instant now) {
        return new RunId(configHash(config), config.seed(), now.truncatedTo(ChronoUnit.MILLIS).toString());
    }

    /** The first 16 hex digits of the SHA-256 of the run-defining settings. */
    public static String configHash(TrainConfig config) {
        try {
            byte[] digest = MessageDigest.getInstance("SHA-256")
                    .digest(GSON.toJson(config.resumeIdentity()).getBytes(StandardCharsets.UTF_8));
            return HexFormat.of().formatHex(digest, 0, 8);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** The form stored in checkpoints and metrics lines, e.g. {@code 3f2a9c1e0b7d4a55-seed0-2026-11-29T23:01:02.123Z}. */
    @Override
    public String toString() {
        return configHash + "-seed" + seed + "-" + started;
    }
}
