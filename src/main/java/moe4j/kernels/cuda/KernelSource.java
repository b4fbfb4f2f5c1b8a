package moe4j.kernels.cuda;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;
import java.util.function.Supplier;

/**
 * The CUDA C kernel modules shipped in the jar ({@code moe4j/kernels/cuda/*.cu}, each compiled with
 * {@code prelude.cuh} in front), and the on-disk cache of their compiled cubins: a module is compiled
 * by NVRTC for the GPU's architecture the first time it is needed and the cubin kept under a key of
 * source hash, architecture, driver and compiler version, so a changed kernel, GPU, driver or NVRTC
 * never loads a stale binary.
 */
public enum KernelSource {
    ROUTER("router.cu"),
    PERMUTE("permute.cu"),
    ELEMENTWISE("elementwise.cu"),
    OPS("ops.cu");

    static final String RESOURCE_DIR = "/moe4j/kernels/cuda/";
    static final String PRELUDE = "prelude.cuh";

    private final String file;

    KernelSource(String file) {
        this.file = file;
    }

    public String file() {
        return file;
    }

    /** The module's full source as compiled: the prelude, then the module. */
    public String source() {
        return resource(PRELUDE) + "\n#line 1 \"" + file + "\"\n" + resource(file);
    }

    static String resource(String name) {
        try (InputStream in = KernelSource.class.getResourceAsStream(RESOURCE_DIR + name)) {
            if (in == null) throw new IllegalStateException("kernel source " + RESOURCE_DIR + name + " is missing from the jar");
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * The cache key of a compiled module: what decides the cubin's bytes. Source hash (SHA-256, first
     * 16 hex digits), target architecture, driver version, compiler version.
     */
    static String cacheKey(String module, String source, int arch, int driverVersion, String compilerVersion) {
        try {
            byte[] h = MessageDigest.getInstance("SHA-256").digest(source.getBytes(StandardCharsets.UTF_8));
            String hash = HexFormat.of().formatHex(h, 0, 8);
            return String.format(Locale.ROOT, "%s-sm%d-drv%d-nvrtc%s-%s", module.replace(".cu", ""), arch, driverVersion,
                    compilerVersion, hash);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** The cache directory: {@code -Dmoe4j.cuda.cache}, {@code MOE4J_CUDA_CACHE}, else {@code ~/.cache/moe4j/cuda}. */
    static Path cacheDirectory() {
        String p = System.getProperty("moe4j.cuda.cache");
        if (p == null || p.isBlank()) p = System.getenv("MOE4J_CUDA_CACHE");
        if (p != null && !p.isBlank()) return Path.of(p);
        return Path.of(System.getProperty("user.home"), ".cache", "moe4j", "cuda");
    }

    /**
     * The cubin under {@code key} in {@code dir}, compiled by {@code compile} and stored when absent. A
     * cache that cannot be written is not an error (the cubin is then compiled again next time).
     */
    static byte[] cached(Path dir, String key, Supplier<byte[]> compile) {
        Path file = dir.resolve(key + ".cubin");
        try {
            if (Files.isRegularFile(file)) return Files.readAllBytes(file);
        } catch (IOException e) {
            // unreadable cache entry: compile again
        }
        byte[] image = compile.get();
        try {
            Files.createDirectories(dir);
            Path tmp = Files.createTempFile(dir, key, ".tmp");
            Files.write(tmp, image);
            Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException | UnsupportedOperationException e) {
            // read-only or missing home: run without a disk cache
        }
        return image;
    }

    /** The extern "C" kernel names the module defines, read from its source (FOR_BOTH macros expanded). */
    List<String> kernelNames() {
        return KernelNames.parse(resource(file));
    }
}
