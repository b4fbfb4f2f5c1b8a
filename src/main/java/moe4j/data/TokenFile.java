package moe4j.data;

import java.nio.file.Path;

/**
 * Pre-tokenized data: a raw file of little-endian unsigned token ids with no header, memory-mapped.
 *
 * <p>The token width comes from {@link Width} if given, else from the extension: {@code .u16} and
 * {@code .u32} say it, and {@code .bin} means uint16, the format nanoGPT's {@code prepare.py} writes
 * (numpy {@code uint16} {@code tofile}). The vocabulary size is given, or else the largest id + 1
 * (found by a full scan on open). With a given vocabulary, ids are checked against it: the whole file on
 * open when it is small (up to {@value #FULL_CHECK_TOKENS} tokens), otherwise each window as it is
 * read; an id out of range is an error naming the file, the token's offset and its value.
 */
public final class TokenFile implements TokenSource {
    private static final String OP = "tokens";
    /** Files up to this many tokens are checked completely on open. */
    static final long FULL_CHECK_TOKENS = 1L << 24;

    /** Bytes per token id. */
    public enum Width {
        U16(2), U32(4);

        public final int bytes;

        Width(int bytes) {
            this.bytes = bytes;
        }

        /** {@code .u16} and {@code .bin} (nanoGPT) are uint16, {@code .u32} is uint32. */
        public static Width forPath(Path path) {
            String name = path.getFileName() == null ? "" : path.getFileName().toString().toLowerCase();
            if (name.endsWith(".u16") || name.endsWith(".bin")) return U16;
            if (name.endsWith(".u32")) return U32;
            throw new IllegalArgumentException(OP + ": cannot tell the token width of " + path
                    + " from its extension: expected .u16 or .bin (uint16) or .u32 (uint32), or give the width"
                    + " (tokens:PATH:u16 or tokens:PATH:u32)");
        }
    }

    private final MappedTokens file;
    private final Width width;
    private final int vocabSize;
    private final boolean checkEachWindow;
    private final FileWindows windows;
    private final WindowOrder order;

    private TokenFile(MappedTokens file, Width width, int vocabSize, boolean checkEachWindow, long seed,
            WindowOrder order) {
        this.file = file;
        this.width = width;
        this.vocabSize = vocabSize;
        this.checkEachWindow = checkEachWindow;
        this.order = order;
        this.windows = new FileWindows(OP, java.util.List.of(file), seed, order);
    }

    /** Random windows; width from the extension, vocabulary from the largest id. */
    public static TokenFile open(Path path, long seed) {
        return open(path, null, 0, seed, WindowOrder.RANDOM);
    }

    /**
     * @param width     token width, or null to take it from the extension
     * @param vocabSize the vocabulary size, or 0 for the largest id in the file + 1
     */
    public static TokenFile open(Path path, Width width, int vocabSize, long seed, WindowOrder order) {
        return open(path, width, vocabSize, seed, order, FULL_CHECK_TOKENS);
    }

    /** As above; files of more than {@code fullCheckTokens} tokens are checked window by window. */
    static TokenFile open(Path path, Width width, int vocabSize, long seed, WindowOrder order, long fullCheckTokens) {
        if (path == null || order == null) throw new IllegalArgumentException(OP + ": path and order must be given");
        if (vocabSize < 0) throw new IllegalArgumentException(OP + ": vocabulary size must be >= 0 (0: infer), got " + vocabSize);
        Width w = width != null ? width : Width.forPath(path);
        MappedTokens file = MappedTokens.map(OP, path, w.bytes);
        if (vocabSize == 0) {
            return new TokenFile(file, w, largestId(file) + 1, false, seed, order);
        }
        boolean small = file.length <= fullCheckTokens;
        if (small) {
            for (long i = 0; i < file.length; i++) check(file, i, file.get(i), vocabSize);
        }
        return new TokenFile(file, w, vocabSize, !small, seed, order);
    }

    private static int largestId(MappedTokens file) {
        int max = 0;
        for (long i = 0; i < file.length; i++) {
            int v = file.get(i);
            if (v < 0 || v == Integer.MAX_VALUE) throw outOfRange(file, i, v, "is too large for an int32 token id");
            max = Math.max(max, v);
        }
        return max;
    }

    private static void check(MappedTokens file, long i, int v, int vocabSize) {
        if (v < 0 || v >= vocabSize) {
            throw outOfRange(file, i, v, "is not below the vocabulary size " + vocabSize);
        }
    }

    private static IllegalArgumentException outOfRange(MappedTokens file, long i, int v, String why) {
        return new IllegalArgumentException(OP + ": token " + i + " (byte offset " + i * file.width + ") of "
                + file.path + " has id " + Integer.toUnsignedString(v) + ", which " + why);
    }

    @Override
    public String name() {
        return OP + ":" + file.path + ":" + width.name().toLowerCase()
                + (order == WindowOrder.SEQUENTIAL ? ":sequential" : "");
    }

    @Override
    public int vocabSize() {
        return vocabSize;
    }

    public Width width() {
        return width;
    }

    /** Number of tokens in the file. */
    public long length() {
        return file.length;
    }

    @Override
    public void checkWindowLength(int length) {
        TokenSource.super.checkWindowLength(length);
        if (file.length < length) {
            throw new IllegalArgumentException(OP + ": " + file.path + " has " + file.length
                    + " tokens, too few for a window of " + length + " tokens (seqLen " + (length - 1) + " + 1)");
        }
    }

    @Override
    public void window(long index, int[] window) {
        FileWindows.Place place = windows.place(index, window.length);
        file.read(place.start(), window);
        if (checkEachWindow) {
            for (int p = 0; p < window.length; p++) check(file, place.start() + p, window[p], vocabSize);
        }
    }
}
