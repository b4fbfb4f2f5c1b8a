package moe4j.tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Reads and writes the safetensors format, the checkpoint format of the PyTorch / Hugging Face world.
 *
 * <p>Layout: an 8-byte little-endian header length {@code N}; {@code N} bytes of UTF-8 JSON
 * {@code {"__metadata__": {..}, "name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..}},
 * padded with spaces; then the raw little-endian tensor data, offsets counted from the first byte after
 * the header.
 *
 * <p>Files are laid out the way the reference implementation lays them out: tensors ordered by element
 * size (largest first, so every tensor starts aligned to its element size) and then by name, compact JSON
 * with {@code __metadata__} first (its keys sorted, for reproducible files), the header padded to 8 bytes.
 * Reading maps the file and hands out tensors over the mapped bytes without copying.
 *
 * <p>Tensor memory is little-endian on every platform the JDK's vector and FFM code targets here
 * (x86-64, AArch64); on a big-endian platform these methods refuse to run rather than swap bytes.
 */
public final class SafeTensors {
    private static final int WRITE_CHUNK = 16 << 20;
    private static final ValueLayout.OfLong HEADER_LENGTH = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private SafeTensors() {}

    /**
     * Writes {@code tensors} (each in its own dtype) and {@code metadata} to {@code file}, atomically: the
     * bytes go to a temporary file in the same directory, are forced to disk, and the temporary file is then
     * renamed over {@code file}. A reader sees the old file or the new one, never half of one.
     *
     * @param metadata free-form string pairs stored under {@code __metadata__}; may be empty or null
     */
    public static void write(Path file, Map<String, Tensor> tensors, Map<String, String> metadata) throws IOException {
        Objects.requireNonNull(tensors, "tensors");
        Map<String, Spec> specs = new java.util.LinkedHashMap<>();
        tensors.forEach((name, t) -> specs.put(name, t == null ? null : new Spec(t.dtype(), t.shape())));
        try (Writer writer = Writer.create(file, specs, metadata)) {
            for (Map.Entry<String, Tensor> e : tensors.entrySet()) writer.put(e.getKey(), e.getValue());
            writer.commit();
        }
    }

    /** The dtype and shape a tensor will have in a file, known before its values are. */
    public record Spec(DType dtype, int[] shape) {
        long bytes() {
            long n = dtype.byteSize;
            for (int d : shape) n *= d;
            return n;
        }
    }

    /**
     * Writes a safetensors file whose tensors arrive one at a time, in any order, so that a writer never
     * holds more than the tensor in hand (a checkpoint assembled from many ranks, one tensor after
     * another). The names, dtypes and shapes are given up front: the header and every tensor's place are
     * fixed before the first byte of data, each tensor is written straight into its place, and the file
     * comes out byte for byte as {@link #write} makes it. Atomic like {@link #write}: nothing appears at
     * the file's path until {@link #commit()}; closing an uncommitted writer deletes its temporary file.
     */
    public static final class Writer implements AutoCloseable {
        private final Path target;
        private final Path tmp;
        private final FileChannel out;
        private final long dataStart;
        private final Map<String, SafeTensorsHeader.Entry> entries = new java.util.HashMap<>();
        private final java.util.Set<String> written = new java.util.HashSet<>();
        private boolean committed;
        private boolean closed;

        private Writer(Path target, Path tmp, FileChannel out, long dataStart, List<SafeTensorsHeader.Entry> entries) {
            this.target = target;
            this.tmp = tmp;
            this.out = out;
            this.dataStart = dataStart;
            for (SafeTensorsHeader.Entry e : entries) this.entries.put(e.name(), e);
        }

        /**
         * Starts {@code file} with the tensors of {@code specs} (laid out as {@link #write} lays them out) and
         * {@code metadata} (may be empty or null).
         */
        public static Writer create(Path file, Map<String, Spec> specs, Map<String, String> metadata) throws IOException {
            requireLittleEndian("write " + file);
            Objects.requireNonNull(file, "file");
            Objects.requireNonNull(specs, "specs");
            Map<String, String> meta = metadata == null ? Map.of() : metadata;
            meta.forEach((k, v) -> {
                if (k == null || v == null) {
                    throw new IllegalArgumentException("write " + file + ": metadata keys and values must not be null, got "
                            + k + " = " + v);
                }
            });
            List<Map.Entry<String, Spec>> ordered = new ArrayList<>(specs.entrySet());
            for (Map.Entry<String, Spec> e : ordered) {
                if (e.getKey() == null || e.getValue() == null) {
                    throw new IllegalArgumentException("write " + file + ": tensor names and tensors must not be null, got "
                            + e.getKey() + " = " + e.getValue());
                }
                if (e.getKey().equals(SafeTensorsHeader.METADATA_KEY)) {
                    throw new IllegalArgumentException("write " + file + ": '" + SafeTensorsHeader.METADATA_KEY
                            + "' is reserved for metadata and cannot name a tensor");
                }
            }
            ordered.sort(Comparator.<Map.Entry<String, Spec>>comparingInt(e -> -alignmentRank(e.getValue().dtype()))
                    .thenComparing(Map.Entry::getKey));
            List<SafeTensorsHeader.Entry> entries = new ArrayList<>(ordered.size());
            long offset = 0;
            for (Map.Entry<String, Spec> e : ordered) {
                long bytes = e.getValue().bytes();
                entries.add(new SafeTensorsHeader.Entry(e.getKey(), e.getValue().dtype(), e.getValue().shape().clone(), offset, offset + bytes));
                offset += bytes;
            }
            byte[] header = SafeTensorsHeader.encode(entries, meta);
            Path target = file.toAbsolutePath();
            Path tmp = target.getParent().resolve("." + target.getFileName() + "." + ProcessHandle.current().pid() + "."
                    + Long.toHexString(System.nanoTime()) + ".tmp");
            FileChannel out = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
            try {
                ByteBuffer prefix = ByteBuffer.allocate(8 + header.length).order(ByteOrder.LITTLE_ENDIAN);
                prefix.putLong(header.length).put(header).flip();
                writeFully(out, prefix);
                return new Writer(target, tmp, out, 8L + header.length, entries);
            } catch (IOException | RuntimeException | Error e) {
                out.close();
                Files.deleteIfExists(tmp);
                throw e;
            }
        }

        /** Writes {@code tensor}, which must match its spec, into its place; each name once. */
        public void put(String name, Tensor tensor) throws IOException {
            if (committed || closed) throw new IllegalStateException("write " + target + ": the writer is " + (committed ? "committed" : "closed"));
            SafeTensorsHeader.Entry entry = entries.get(name);
            if (entry == null) throw new IllegalArgumentException("write " + target + ": no tensor '" + name + "' was announced");
            if (tensor.dtype() != entry.dtype() || !java.util.Arrays.equals(tensor.shape(), entry.shape())) {
                throw new IllegalArgumentException("write " + target + ": tensor '" + name + "' is " + tensor.dtype() + tensor.shapeString()
                        + ", announced as " + entry.dtype() + java.util.Arrays.toString(entry.shape()));
            }
            if (!written.add(name)) throw new IllegalArgumentException("write " + target + ": tensor '" + name + "' written twice");
            if (!tensor.device().isCpu()) {
                // a device tensor goes through the host one at a time: the file never needs a host copy of all
                try (MemoryScope scope = MemoryScope.open()) {
                    writeAt(dataStart + entry.begin(), tensor.to(Device.CPU).data());
                }
                return;
            }
            writeAt(dataStart + entry.begin(), tensor.data());
        }

        private void writeAt(long position, MemorySegment data) throws IOException {
            // asByteBuffer is limited to 2 GiB; chunks also keep each write call a modest size
            for (long pos = 0; pos < data.byteSize(); pos += WRITE_CHUNK) {
                long n = Math.min(WRITE_CHUNK, data.byteSize() - pos);
                ByteBuffer buffer = data.asSlice(pos, n).asByteBuffer();
                while (buffer.hasRemaining()) out.write(buffer, position + pos + (n - buffer.remaining()));
            }
        }

        /** Checks that every announced tensor was written, forces the file to disk and renames it into place. */
        public void commit() throws IOException {
            if (written.size() != entries.size()) {
                List<String> missing = entries.keySet().stream().filter(n -> !written.contains(n)).sorted().toList();
                throw new IllegalStateException("write " + target + ": " + missing.size() + " announced tensors were not written: "
                        + missing.subList(0, Math.min(5, missing.size())));
            }
            out.force(true);
            out.close();
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            committed = true;
            syncDirectory(target.getParent());
        }

        /** Abandons an uncommitted file (its temporary file is deleted). */
        @Override
        public void close() throws IOException {
            if (closed) return;
            closed = true;
            if (committed) return;
            out.close();
            Files.deleteIfExists(tmp);
        }
    }

    /** Writes {@code tensors} without metadata. */
    public static void write(Path file, Map<String, Tensor> tensors) throws IOException {
        write(file, tensors, Map.of());
    }

    /**
     * Opens {@code file}, checks its header and maps it read-only. The returned {@link Loaded} must be closed;
     * closing unmaps the file, after which its tensors may no longer be used.
     *
     * @throws IllegalArgumentException if the file is not a well-formed safetensors file (the message names
     *                                  the file, the tensor and what was expected)
     */
    public static Loaded read(Path file) throws IOException {
        requireLittleEndian("read " + file);
        String name = file.toString();
        Arena arena = Arena.ofShared();
        try (FileChannel in = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = in.size();
            if (size < 8) {
                throw SafeTensorsHeader.bad(name, "the file is " + size
                        + " bytes long, too short for the 8-byte header length it must start with");
            }
            MemorySegment whole = in.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            long headerBytes = whole.get(HEADER_LENGTH, 0);
            if (headerBytes < 0 || headerBytes > SafeTensorsHeader.MAX_HEADER_BYTES) {
                throw SafeTensorsHeader.bad(name, "header length " + Long.toUnsignedString(headerBytes)
                        + " is beyond the limit of " + SafeTensorsHeader.MAX_HEADER_BYTES + " bytes");
            }
            if (8 + headerBytes > size) {
                throw SafeTensorsHeader.bad(name, "header length " + headerBytes + " runs past the end of the file ("
                        + size + " bytes, so at most " + (size - 8) + " header bytes): the file is truncated or not safetensors");
            }
            byte[] json = whole.asSlice(8, headerBytes).toArray(ValueLayout.JAVA_BYTE);
            SafeTensorsHeader header = SafeTensorsHeader.parse(name, json, size - 8 - headerBytes);
            return new Loaded(file, arena, whole.asSlice(8 + headerBytes), header);
        } catch (IOException | RuntimeException | Error e) {
            arena.close();
            throw e;
        }
    }

    /**
     * The reference implementation's data order: wider elements first. Its dtype enum is declared in
     * increasing width (F16 < BF16 < I32 < F32 < I64), so sorting by it descending keeps every tensor
     * aligned to its element size once the header is padded to 8 bytes.
     */
    private static int alignmentRank(DType d) {
        return switch (d) {
            case F16 -> 0;
            case BF16 -> 1;
            case I32 -> 2;
            case F32 -> 3;
            case I64 -> 4;
        };
    }

    private static void writeFully(FileChannel out, ByteBuffer buffer) throws IOException {
        while (buffer.hasRemaining()) out.write(buffer);
    }

    /** Makes the rename itself durable. Not every platform can open a directory; there it is skipped. */
    private static void syncDirectory(Path dir) {
        try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
            d.force(true);
        } catch (IOException | UnsupportedOperationException e) {
            // the data itself was forced before the rename; only the rename's durability is not guaranteed
        }
    }

    private static void requireLittleEndian(String op) {
        if (ByteOrder.nativeOrder() != ByteOrder.LITTLE_ENDIAN) {
            throw new UnsupportedOperationException(op + ": safetensors data is little-endian and tensors use the "
                    + "native byte order, which is " + ByteOrder.nativeOrder() + " here");
        }
    }

    /**
     * A safetensors file mapped into memory. Thread-safe: tensors may be read from any thread until
     * {@link #close()}.
     */
    public static final class Loaded implements AutoCloseable {
        private final Path file;
        private final Arena arena;
        private final MemorySegment data;
        private final Map<String, SafeTensorsHeader.Entry> entries = new TreeMap<>();
        private final Map<String, String> metadata;
        /** Copies of tensors whose bytes are not aligned to their element size in the file (see {@link #tensor}). */
        private final Map<String, Tensor> alignedCopies = new ConcurrentHashMap<>();

        private Loaded(Path file, Arena arena, MemorySegment data, SafeTensorsHeader header) {
            this.file = file;
            this.arena = arena;
            this.data = data;
            this.metadata = header.metadata;
            for (SafeTensorsHeader.Entry e : header.entries) entries.put(e.name(), e);
        }

        public Path file() {
            return file;
        }

        /** The tensor names, sorted. */
        public List<String> names() {
            return List.copyOf(entries.keySet());
        }

        public boolean contains(String name) {
            return entries.containsKey(name);
        }

        /** The {@code __metadata__} pairs (empty if the file has none). */
        public Map<String, String> metadata() {
            return metadata;
        }

        public DType dtype(String name) {
            return entry(name).dtype();
        }

        public int[] shape(String name) {
            return entry(name).shape().clone();
        }

        /**
         * The tensor {@code name} in its stored dtype, over the mapped file bytes: no copy, read-only (writes
         * throw), valid until {@link #close()}. Files written by the reference implementation or by
         * {@link SafeTensors#write} keep every tensor aligned; a tensor that another writer left unaligned
         * is copied once into aligned memory owned by this object.
         */
        public Tensor tensor(String name) {
            SafeTensorsHeader.Entry e = entry(name);
            if (!arena.scope().isAlive()) {
                throw new IllegalStateException("tensor '" + name + "': " + file + " has been closed");
            }
            MemorySegment bytes = data.asSlice(e.begin(), e.byteSize());
            if (bytes.address() % e.dtype().byteSize == 0) {
                return Tensor.wrap(bytes, e.dtype(), e.shape());
            }
            return alignedCopies.computeIfAbsent(name, n -> {
                MemorySegment copy = arena.allocate(e.byteSize(), 64);
                MemorySegment.copy(bytes, 0, copy, 0, e.byteSize());
                return Tensor.wrap(copy.asReadOnly(), e.dtype(), e.shape());
            });
        }

        /**
         * A copy of tensor {@code name} converted to {@code dtype} (see {@link Tensor#to(DType)}), allocated in
         * the current {@link MemoryScope}: it stays valid after this file is closed.
         */
        public Tensor tensorAs(String name, DType dtype) {
            Tensor stored = tensor(name);
            return stored.dtype() == dtype ? stored.copy() : stored.to(dtype);
        }

        private SafeTensorsHeader.Entry entry(String name) {
            SafeTensorsHeader.Entry e = entries.get(name);
            if (e == null) {
                List<String> names = names();
                String known = names.size() <= 20 ? names.toString()
                        : names.subList(0, 20).toString().replace("]", ", ... (" + names.size() + " in all)]");
                throw new IllegalArgumentException("safetensors file " + file + " has no tensor '" + name
                        + "'; it has " + known);
            }
            return e;
        }

        /** Unmaps the file. Tensors obtained from {@link #tensor} throw {@link IllegalStateException} afterwards. */
        @Override
        public synchronized void close() {
            if (arena.scope().isAlive()) arena.close();
        }
    }
}
