package moe4j.data;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

/**
 * Byte-level text: every byte is a token (vocabulary 256), read from a memory-mapped file or from all
 * {@code .txt} files under a directory (recursively, in path order, so the corpus does not depend on
 * the file system's listing order). A window lies within one file; see {@link WindowOrder} for how
 * windows are picked.
 */
public final class ByteText implements TokenSource {
    private static final String OP = "text";

    private final Path path;
    private final FileWindows windows;
    private final WindowOrder order;

    private ByteText(Path path, FileWindows windows, WindowOrder order) {
        this.path = path;
        this.windows = windows;
        this.order = order;
    }

    /** Random windows of {@code path} (a file, or a directory of {@code .txt} files). */
    public static ByteText open(Path path, long seed) {
        return open(path, seed, WindowOrder.RANDOM);
    }

    public static ByteText open(Path path, long seed, WindowOrder order) {
        if (path == null || order == null) throw new IllegalArgumentException(OP + ": path and order must be given");
        List<MappedTokens> files = new ArrayList<>();
        if (Files.isDirectory(path)) {
            for (Path file : textFilesUnder(path)) {
                // an empty document in a corpus is not an error, it just holds no window
                if (MappedTokens.size(OP, file) > 0) files.add(MappedTokens.map(OP, file, 1));
            }
            if (files.isEmpty()) {
                throw new IllegalArgumentException(OP + ": no non-empty .txt file under directory " + path);
            }
        } else {
            files.add(MappedTokens.map(OP, path, 1));
        }
        return new ByteText(path, new FileWindows(OP, files, seed, order), order);
    }

    private static List<Path> textFilesUnder(Path dir) {
        try (Stream<Path> walk = Files.walk(dir)) {
            return walk.filter(p -> Files.isRegularFile(p) && p.getFileName().toString().endsWith(".txt"))
                    .sorted()
                    .toList();
        } catch (IOException | UncheckedIOException e) {
            throw new IllegalArgumentException(OP + ": cannot list directory " + dir + ": " + e, e);
        }
    }

    @Override
    public String name() {
        return OP + ":" + path + (order == WindowOrder.SEQUENTIAL ? ":sequential" : "");
    }

    @Override
    public int vocabSize() {
        return 256;
    }

    /** The files read, in order. */
    public List<Path> files() {
        return windows.files().stream().map(f -> f.path).toList();
    }

    /** Total bytes over all files. */
    public long totalBytes() {
        long n = 0;
        for (MappedTokens f : windows.files()) n += f.length;
        return n;
    }

    @Override
    public void checkWindowLength(int length) {
        TokenSource.super.checkWindowLength(length);
        if (windows.longest() < length) {
            List<MappedTokens> files = windows.files();
            if (files.size() == 1) {
                throw new IllegalArgumentException(OP + ": " + files.get(0).path + " has " + files.get(0).length
                        + " bytes, too few for a window of " + length + " bytes (seqLen " + (length - 1) + " + 1)");
            }
            MappedTokens longest = files.stream().max((a, b) -> Long.compare(a.length, b.length)).orElseThrow();
            throw new IllegalArgumentException(OP + ": none of the " + files.size() + " .txt files under " + path
                    + " has the " + length + " bytes a window needs (seqLen " + (length - 1) + " + 1); the longest, "
                    + longest.path + ", has " + longest.length);
        }
    }

    @Override
    public void window(long index, int[] window) {
        FileWindows.Place place = windows.place(index, window.length);
        place.file().read(place.start(), window);
    }
}
