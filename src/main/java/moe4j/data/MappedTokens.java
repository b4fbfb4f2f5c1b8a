package moe4j.data;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * A read-only memory-mapped file of little-endian unsigned tokens of 1, 2 or 4 bytes each. The mapping
 * lives as long as this object is reachable, so the OS pages the file in on demand and a corpus larger
 * than memory costs nothing up front.
 */
final class MappedTokens {
    private static final ValueLayout.OfShort U16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfInt U32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    final Path path;
    final int width;
    final long length;
    private final MemorySegment segment;

    private MappedTokens(Path path, int width, MemorySegment segment) {
        this.path = path;
        this.width = width;
        this.segment = segment;
        this.length = segment.byteSize() / width;
    }

    /** The size of {@code path} in bytes, or a clear error if it cannot be read ({@code op} names the caller). */
    static long size(String op, Path path) {
        if (!Files.exists(path)) throw new IllegalArgumentException(op + ": " + path + " does not exist");
        if (!Files.isRegularFile(path)) throw new IllegalArgumentException(op + ": " + path + " is not a regular file");
        if (!Files.isReadable(path)) throw new IllegalArgumentException(op + ": " + path + " is not readable");
        try {
            return Files.size(path);
        } catch (IOException e) {
            throw new IllegalArgumentException(op + ": cannot read " + path + ": " + e, e);
        }
    }

    /** Maps {@code path}, whose size must be a non-zero multiple of {@code width}. */
    static MappedTokens map(String op, Path path, int width) {
        long bytes = size(op, path);
        if (bytes == 0) throw new IllegalArgumentException(op + ": " + path + " is empty (0 bytes)");
        if (bytes % width != 0) {
            throw new IllegalArgumentException(op + ": " + path + " is " + bytes + " bytes, not a multiple of the "
                    + width + "-byte token size (" + bytes % width + " trailing bytes): truncated, or not a file of "
                    + (8 * width) + "-bit tokens");
        }
        try (FileChannel channel = FileChannel.open(path, StandardOpenOption.READ)) {
            return new MappedTokens(path, width, channel.map(FileChannel.MapMode.READ_ONLY, 0, bytes, Arena.ofAuto()));
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException(op + ": " + path + " does not exist", e);
        } catch (IOException e) {
            throw new IllegalArgumentException(op + ": cannot map " + path + ": " + e, e);
        }
    }

    /**
     * Token {@code i} as an unsigned value. Unsigned 32-bit values from 2^31 up come back negative;
     * callers that accept 4-byte tokens must check for that.
     */
    int get(long i) {
        return switch (width) {
            case 1 -> Byte.toUnsignedInt(segment.get(ValueLayout.JAVA_BYTE, i));
            case 2 -> Short.toUnsignedInt(segment.get(U16, i * 2));
            default -> segment.get(U32, i * 4);
        };
    }

    /** Copies tokens {@code [start, start + dst.length)} into {@code dst}. */
    void read(long start, int[] dst) {
        for (int p = 0; p < dst.length; p++) dst[p] = get(start + p);
    }
}
