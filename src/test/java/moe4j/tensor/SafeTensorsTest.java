package moe4j.tensor;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

@ExtendWith(ScopePerTest.class)
class SafeTensorsTest {
    static final ValueLayout.OfShort LE_SHORT = ValueLayout.JAVA_SHORT.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfLong LE_LONG = ValueLayout.JAVA_LONG.withOrder(ByteOrder.LITTLE_ENDIAN);

    @TempDir
    Path dir;
    // ---------------------------------------------------------------- round trips

    @Test
    void roundTripKeepsEveryDTypeShapeAndByte() throws IOException {
        Rng rng = new Rng(7);
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        tensors.put("f32", Tensor.randn(rng, 1.0, 3, 5));
        tensors.put("bf16", Tensor.randn(rng, 1.0, 2, 3, 4).to(DType.BF16));
        tensors.put("f16", Tensor.randn(rng, 1.0, 7).to(DType.F16));
        tensors.put("i32", Tensor.ofInts(new int[] {Integer.MIN_VALUE, -1, 0, 1, Integer.MAX_VALUE}, 5));
        Tensor i64 = Tensor.zeros(DType.I64, 2, 2);
        long[] longs = {Long.MIN_VALUE, -5_000_000_000L, 5_000_000_000L, Long.MAX_VALUE};
        for (int i = 0; i < longs.length; i++) i64.data().setAtIndex(ValueLayout.JAVA_LONG, i, longs[i]);
        tensors.put("i64", i64);
        tensors.put("scalar", Tensor.scalar(3.25f));
        tensors.put("empty", Tensor.zeros(0, 4));
        Map<String, String> metadata = Map.of("format", "pt", "step", "12", "note", "ünïcode \"quoted\" <tag>");

        Path file = dir.resolve("all.safetensors");
        SafeTensors.write(file, tensors, metadata);

        try (SafeTensors.Loaded loaded = SafeTensors.read(file)) {
            assertEquals(new TreeMap<>(tensors).keySet().stream().toList(), loaded.names());
            assertEquals(metadata, loaded.metadata());
            for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
                String name = e.getKey();
                Tensor original = e.getValue();
                Tensor back = loaded.tensor(name);
                assertEquals(original.dtype(), loaded.dtype(name), name);
                assertArrayEquals(original.shape(), loaded.shape(name), name);
                assertEquals(original.dtype(), back.dtype(), name);
                assertArrayEquals(original.shape(), back.shape(), name);
                assertEquals(-1, back.data().mismatch(original.data()), name + ": bytes differ");
            }
            for (int i = 0; i < longs.length; i++) {
                assertEquals(longs[i], loaded.tensor("i64").data().getAtIndex(ValueLayout.JAVA_LONG, i));
            }
            assertEquals(3.25f, loaded.tensor("scalar").item());
        }
    }

    @Test
    void tensorAsConvertsIntoACopyThatOutlivesTheFile() throws IOException {
        Tensor halves = Tensor.of(new float[] {0.5f, -1.5f, 3.0f, 1e-3f}, 2, 2).to(DType.F16);
        Tensor ints = Tensor.ofInts(new int[] {3, -4}, 2);
        Path file = dir.resolve("conv.safetensors");
        SafeTensors.write(file, Map.of("h", halves, "i", ints), null);
        Tensor asF32;
        Tensor asI64;
        Tensor sameType;
        try (SafeTensors.Loaded loaded = SafeTensors.read(file)) {
            asF32 = loaded.tensorAs("h", DType.F32);
            asI64 = loaded.tensorAs("i", DType.I64);
            sameType = loaded.tensorAs("h", DType.F16);
            assertTrue(loaded.metadata().isEmpty());
        }
        // values are what float16 holds: 1e-3 is not exact in f16, the others are
        float[] expected = {0.5f, -1.5f, 3.0f, Float.float16ToFloat(Float.floatToFloat16(1e-3f))};
        assertArrayEquals(expected, asF32.toFloatArray());
        assertEquals(3L, asI64.data().getAtIndex(ValueLayout.JAVA_LONG, 0));
        assertEquals(-4L, asI64.data().getAtIndex(ValueLayout.JAVA_LONG, 1));
        assertEquals(-1, sameType.data().mismatch(halves.data()));
        assertFalse(sameType.data().isMapped());
    }

    @Test
    void sameTensorsGiveTheSameBytesWhateverTheMapOrder() throws IOException {
        Tensor a = Tensor.of(new float[] {1, 2}, 2);
        Tensor b = Tensor.ofInts(new int[] {3}, 1);
        Tensor c = Tensor.of(new float[] {4}, 1).to(DType.BF16);
        Map<String, Tensor> one = new LinkedHashMap<>();
        one.put("c", c);
        one.put("a", a);
        one.put("b", b);
        Map<String, Tensor> two = new HashMap<>(Map.of("b", b, "a", a, "c", c));
        Map<String, String> m1 = new LinkedHashMap<>();
        m1.put("z", "1");
        m1.put("a", "2");
        Path f1 = dir.resolve("one.safetensors");
        Path f2 = dir.resolve("two.safetensors");
        SafeTensors.write(f1, one, m1);
        SafeTensors.write(f2, two, new TreeMap<>(m1));
        assertArrayEquals(Files.readAllBytes(f1), Files.readAllBytes(f2));
    }

    // ---------------------------------------------------------------- the exact format

    /** One F32 tensor whose 64-byte header needs no padding; the layout follows the format description. */
    @Test
    void writesExactlyTheFormatForOneTensor() throws IOException {
        String header = "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}";
        assertEquals(64, header.length());
        ByteBuffer data = le(24);
        for (int i = 0; i < 6; i++) data.putFloat(i);
        byte[] expected = file(header, data.array());

        Path file = dir.resolve("one.safetensors");
        SafeTensors.write(file, Map.of("attn.0", Tensor.of(new float[] {0, 1, 2, 3, 4, 5}, 1, 2, 3)), Map.of());
        assertArrayEquals(expected, Files.readAllBytes(file));
    }

    /**
     * Every dtype and metadata: the data is ordered widest element first, then by name (I64, F32, I32,
     * BF16, F16), the metadata comes first with sorted keys, and the header is padded with spaces to a
     * multiple of 8 bytes. The 16-bit values are written as bit patterns worked out by hand.
     */
    @Test
    void writesExactlyTheFormatForMixedDTypesAndMetadata() throws IOException {
        String header = "{\"__metadata__\":{\"b\":\"x\",\"format\":\"pt\"},"
                + "\"idx\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                + "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]},"
                + "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]},"
                + "\"i\":{\"dtype\":\"I32\",\"shape\":[3,1],\"data_offsets\":[20,32]},"
                + "\"z\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[32,34]},"
                + "\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[34,38]}}";
        ByteBuffer data = le(38);
        data.putLong(-2L);                                   // idx
        data.putFloat(0.25f);                                // a
        data.putFloat(-1f).putFloat(2f);                     // b
        data.putInt(7).putInt(-8).putInt(9);                 // i
        data.putShort((short) 0x3FC0);                       // z = 1.5 in bfloat16
        data.putShort((short) 0x3E00).putShort((short) 0xC000); // w = 1.5, -2 in float16
        byte[] expected = file(header, data.array());

        Tensor idx = Tensor.ofInts(new int[] {-2}, 1).to(DType.I64);
        Map<String, Tensor> tensors = Map.of(
                "w", Tensor.of(new float[] {1.5f, -2f}, 2).to(DType.F16),
                "b", Tensor.of(new float[] {-1f, 2f}, 2),
                "z", Tensor.of(new float[] {1.5f}, 1).to(DType.BF16),
                "i", Tensor.ofInts(new int[] {7, -8, 9}, 3, 1),
                "a", Tensor.scalar(0.25f),
                "idx", idx);
        Path file = dir.resolve("mixed.safetensors");
        SafeTensors.write(file, tensors, Map.of("format", "pt", "b", "x"));
        assertArrayEquals(expected, Files.readAllBytes(file));
    }

    /**
     * Another writer may order keys differently, pad differently, and leave data unaligned: such a file
     * still reads, and an unaligned tensor comes back as an aligned copy with the right values.
     */
    @Test
    void readsFilesLaidOutByOtherWriters() throws IOException {
        String header = "{ \"z\": {\"data_offsets\": [2, 14], \"shape\": [3], \"dtype\": \"F32\"},\n"
                + "  \"h\": {\"dtype\": \"BF16\", \"shape\": [1], \"data_offsets\": [0, 2]} }";
        ByteBuffer data = le(14);
        data.putShort((short) 0xC040); // -3.0 in bfloat16
        data.putFloat(1.5f).putFloat(-2.5f).putFloat(1e30f);
        Path file = dir.resolve("other.safetensors");
        Files.write(file, file(header + "   ", data.array()));
        try (SafeTensors.Loaded loaded = SafeTensors.read(file)) {
            assertEquals(List.of("h", "z"), loaded.names());
            assertArrayEquals(new float[] {1.5f, -2.5f, 1e30f}, loaded.tensor("z").toFloatArray());
            assertArrayEquals(new float[] {-3f}, loaded.tensorAs("h", DType.F32).toFloatArray());
        }
    }

    // ---------------------------------------------------------------- bf16 rounding

    /** float32 → bf16 on the way to the file rounds to nearest, ties to even, as a float64 reference decides. */
    @Test
    void bf16StorageRoundsToNearestEven() throws IOException {
        int random = 200_000;
        float[] special = {
            0f, -0f, 1f, -1f, 1.00390625f /* 1 + 2^-8: tie, even is 1 */, 1.01171875f /* 1 + 3*2^-8: tie, even is up */,
            Math.nextUp(1.00390625f) /* just above the tie */, Float.MAX_VALUE, -Float.MAX_VALUE, Float.MIN_VALUE,
            Float.MIN_NORMAL, Math.scalb(255f, 120) /* largest finite bf16 */,
            Math.scalb(511f, 119) /* halfway to overflow: ties to even give infinity */,
            Math.nextDown(Math.scalb(511f, 119)) /* just below it: the largest finite bf16 */,
            Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, 0.1f, (float) Math.PI, 65504f, 1e-40f
        };
        float[] values = new float[special.length + random];
        System.arraycopy(special, 0, values, 0, special.length);
        Rng rng = new Rng(99);
        for (int i = special.length; i < values.length; ) {
            float f = Float.intBitsToFloat((int) rng.nextLong());
            if (!Float.isNaN(f)) values[i++] = f;
        }
        Path file = dir.resolve("bf16.safetensors");
        SafeTensors.write(file, Map.of("x", Tensor.of(values, values.length).to(DType.BF16)), Map.of());
        try (SafeTensors.Loaded loaded = SafeTensors.read(file)) {
            MemorySegment stored = loaded.tensor("x").data();
            float[] widened = loaded.tensorAs("x", DType.F32).toFloatArray();
            for (int i = 0; i < values.length; i++) {
                int expected = bf16Reference(values[i]);
                int actual = stored.getAtIndex(LE_SHORT, i) & 0xFFFF;
                if (expected != actual) {
                    throw new AssertionError(String.format("bf16(%s) = 0x%04X, expected 0x%04X", values[i], actual, expected));
                }
                double value = bf16Value(expected);
                assertEquals(value, (double) widened[i], "widening bf16 0x" + Integer.toHexString(expected));
            }
        }
    }

    @Test
    void bf16KeepsNaNANaN() throws IOException {
        float[] nans = {Float.NaN, Float.intBitsToFloat(0x7F800001), Float.intBitsToFloat(0xFFC00000)};
        Path file = dir.resolve("nan.safetensors");
        SafeTensors.write(file, Map.of("x", Tensor.of(nans, 3).to(DType.BF16)), Map.of());
        try (SafeTensors.Loaded loaded = SafeTensors.read(file)) {
            for (float f : loaded.tensorAs("x", DType.F32).toFloatArray()) assertTrue(Float.isNaN(f));
        }
    }

    /** Round to nearest (ties to even) chosen by comparing float64 distances to the two neighbouring bf16 values. */
    static int bf16Reference(float f) {
        int sign = Float.floatToRawIntBits(f) >>> 31;
        double x = Math.abs((double) f);
        if (Double.isInfinite(x)) return sign << 15 | 0x7F80;
        int below = Float.floatToRawIntBits(Math.abs(f)) >>> 16; // the bf16 magnitude at or below x
        int above = below + 1;
        double dBelow = x - bf16Magnitude(below);
        double dAbove = bf16Magnitude(above) - x;
        if (dBelow < 0 || dAbove <= 0) throw new AssertionError("reference does not bracket " + f);
        int nearest = dBelow < dAbove ? below : dAbove < dBelow ? above : (below & 1) == 0 ? below : above;
        return sign << 15 | nearest;
    }

    /** The magnitude of a non-negative bf16 pattern; 0x7F80 (infinity) counts as 2^128, where rounding overflows. */
    static double bf16Magnitude(int bits) {
        int exponent = bits >>> 7 & 0xFF;
        int mantissa = bits & 0x7F;
        if (exponent == 0xFF) return Math.scalb(1.0, 128);
        if (exponent == 0) return Math.scalb((double) mantissa, -133);
        return Math.scalb((double) (128 + mantissa), exponent - 134);
    }

    static double bf16Value(int bits) {
        double m = (bits & 0x7FFF) == 0x7F80 ? Double.POSITIVE_INFINITY : bf16Magnitude(bits & 0x7FFF);
        return (bits & 0x8000) != 0 ? -m : m;
    }

    // ---------------------------------------------------------------- memory mapping

    @Test
    void largeTensorIsReadFromTheMappingWithoutCopying() throws IOException {
        int n = 16 << 20; // 64 MiB of float32
        Path file = dir.resolve("large.safetensors");
        try (MemoryScope s = MemoryScope.open()) {
            Tensor big = Tensor.zeros(n);
            for (int i = 0; i < n; i++) big.set(i, i * 0.5f);
            SafeTensors.write(file, Map.of("big", big, "small", Tensor.of(new float[] {9}, 1)), Map.of());
        }
        Tensor t;
        try (SafeTensors.Loaded loaded = SafeTensors.read(file)) {
            t = loaded.tensor("big");
            assertTrue(t.data().isMapped(), "tensor must be a view of the mapped file");
            assertTrue(t.data().isReadOnly());
            assertEquals(t.data().address(), loaded.tensor("big").data().address(), "a second call must not copy");
            assertEquals(n, t.numel());
            for (int i : new int[] {0, 1, 12345, n / 2, n - 1}) assertEquals(i * 0.5f, t.get(i));
            Tensor view = t;
            assertThrows(IllegalArgumentException.class, () -> view.set(0, 1f), "mapped tensors are read-only");
        }
        Tensor closed = t;
        assertThrows(IllegalStateException.class, () -> closed.get(0), "the mapping is gone after close");
    }

    @Test
    void tensorAfterCloseIsAClearError() throws IOException {
        Path file = dir.resolve("c.safetensors");
        SafeTensors.write(file, Map.of("x", Tensor.scalar(1f)), Map.of());
        SafeTensors.Loaded loaded = SafeTensors.read(file);
        loaded.close();
        loaded.close(); // closing twice is harmless
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> loaded.tensor("x"));
        assertTrue(e.getMessage().contains("closed"), e.getMessage());
    }

    // ---------------------------------------------------------------- atomic writes

    @Test
    void overwriteIsAtomicAndLeavesNoTemporaryFiles() throws IOException {
        Path file = dir.resolve("ckpt.safetensors");
        SafeTensors.write(file, Map.of("w", Tensor.of(new float[] {1, 2}, 2)), Map.of());
        try (SafeTensors.Loaded old = SafeTensors.read(file)) {
            SafeTensors.write(file, Map.of("w", Tensor.of(new float[] {3, 4, 5}, 3)), Map.of());
            // the old mapping still sees the old file; a new reader sees the new one
            assertArrayEquals(new float[] {1, 2}, old.tensor("w").toFloatArray());
            try (SafeTensors.Loaded now = SafeTensors.read(file)) {
                assertArrayEquals(new float[] {3, 4, 5}, now.tensor("w").toFloatArray());
            }
        }
        assertThrows(IllegalArgumentException.class,
                () -> SafeTensors.write(file, Map.of("__metadata__", Tensor.scalar(0f)), Map.of()));
        try (Stream<Path> files = Files.list(dir)) {
            assertEquals(List.of(file), files.toList(), "only the checkpoint itself may remain");
        }
    }

    @Test
    void unknownTensorNameListsTheKnownOnes() throws IOException {
        Path file = dir.resolve("n.safetensors");
        SafeTensors.write(file, Map.of("alpha", Tensor.scalar(1f), "beta", Tensor.scalar(2f)), Map.of());
        try (SafeTensors.Loaded loaded = SafeTensors.read(file)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> loaded.tensor("gamma"));
            assertTrue(e.getMessage().contains("'gamma'") && e.getMessage().contains("[alpha, beta]"), e.getMessage());
        }
    }

    // ---------------------------------------------------------------- helpers

    static ByteBuffer le(int bytes) {
        return ByteBuffer.allocate(bytes).order(ByteOrder.LITTLE_ENDIAN);
    }

    /** A file image: 8-byte little-endian header length, the header padded with spaces to 8 bytes, the data. */
    static byte[] file(String header, byte[] data) {
        byte[] json = header.getBytes(StandardCharsets.UTF_8);
        int padding = (8 - json.length % 8) % 8;
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.writeBytes(le(8).putLong(json.length + padding).array());
        out.writeBytes(json);
        out.writeBytes(" ".repeat(padding).getBytes(StandardCharsets.US_ASCII));
        out.writeBytes(data);
        return out.toByteArray();
    }

    @Test
    void aStreamingWriterTakesTensorsInAnyOrderAndWritesTheSameBytesAsWrite(@TempDir Path dir) throws IOException {
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        tensors.put("b.weight", Tensor.randn(new Rng(1), 1, 3, 5));
        tensors.put("a.ids", Tensor.ofInts(new int[] {7, 8, 9}, 3));
        tensors.put("c.bias", Tensor.randn(new Rng(2), 1, 4));
        Path whole = dir.resolve("whole.safetensors");
        SafeTensors.write(whole, tensors, Map.of("k", "v"));
        Map<String, SafeTensors.Spec> specs = new LinkedHashMap<>();
        tensors.forEach((n, t) -> specs.put(n, new SafeTensors.Spec(t.dtype(), t.shape())));
        Path streamed = dir.resolve("streamed.safetensors");
        try (SafeTensors.Writer w = SafeTensors.Writer.create(streamed, specs, Map.of("k", "v"))) {
            List<String> reversed = new java.util.ArrayList<>(tensors.keySet());
            java.util.Collections.reverse(reversed);
            for (String n : reversed) {
                assertFalse(Files.exists(streamed), "nothing at the path before commit");
                w.put(n, tensors.get(n));
            }
            w.commit();
        }
        assertArrayEquals(Files.readAllBytes(whole), Files.readAllBytes(streamed));
    }

    @Test
    void aStreamingWriterRefusesWhatWasNotAnnouncedAndLeavesNothingWhenIncomplete(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("x.safetensors");
        Map<String, SafeTensors.Spec> specs = new LinkedHashMap<>();
        specs.put("w", new SafeTensors.Spec(DType.F32, new int[] {2, 2}));
        specs.put("v", new SafeTensors.Spec(DType.F32, new int[] {3}));
        try (SafeTensors.Writer w = SafeTensors.Writer.create(file, specs, null)) {
            var shape = assertThrows(IllegalArgumentException.class, () -> w.put("w", Tensor.zeros(4)));
            assertTrue(shape.getMessage().contains("announced as F32[2, 2]"), shape.getMessage());
            assertThrows(IllegalArgumentException.class, () -> w.put("u", Tensor.zeros(3)));
            w.put("w", Tensor.zeros(2, 2));
            assertThrows(IllegalArgumentException.class, () -> w.put("w", Tensor.zeros(2, 2)));
            var missing = assertThrows(IllegalStateException.class, w::commit);
            assertTrue(missing.getMessage().contains("[v]"), missing.getMessage());
        }
        try (Stream<Path> left = Files.list(dir)) {
            assertEquals(List.of(), left.toList(), "an abandoned write leaves no file, temporary or final");
        }
    }
}
