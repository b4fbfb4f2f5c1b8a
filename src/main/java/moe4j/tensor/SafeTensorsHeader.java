package moe4j.tensor;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonPrimitive;
import com.google.gson.Strictness;
import com.google.gson.TypeAdapter;
import com.google.gson.stream.JsonReader;
import com.google.gson.stream.JsonToken;
import java.io.IOException;
import java.io.StringReader;
import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * The JSON header of a safetensors file: encoded for writing, parsed and checked for reading.
 *
 * <p>Reading is strict on purpose: a checkpoint that does not add up (a shape that disagrees with its
 * byte span, tensors that overlap or leave holes, a file cut short) is refused with a message naming the
 * file, the tensor and what was expected, rather than loaded as garbage.
 */
final class SafeTensorsHeader {
    static final String METADATA_KEY = "__metadata__";
    /** The reference implementation refuses larger headers; checking first also bounds the allocation. */
    static final long MAX_HEADER_BYTES = 100_000_000;

    private static final Gson GSON = new GsonBuilder().disableHtmlEscaping().create();
    private static final TypeAdapter<JsonElement> ELEMENT = GSON.getAdapter(JsonElement.class);

    /** One tensor; {@code begin} and {@code end} count bytes from the first byte after the header. */
    record Entry(String name, DType dtype, int[] shape, long begin, long end) {
        long byteSize() {
            return end - begin;
        }
    }

    /** Entries in the order of their data in the file. */
    final List<Entry> entries;
    final Map<String, String> metadata;

    private SafeTensorsHeader(List<Entry> entries, Map<String, String> metadata) {
        this.entries = entries;
        this.metadata = metadata;
    }

    // ---------------------------------------------------------------- writing

    /**
     * The header bytes for {@code entries} (given in data order), padded with spaces to a multiple of 8 so
     * that the data starts 8-byte aligned. Key order is fixed: metadata first (keys sorted), then the
     * tensors in data order, as the reference implementation writes them.
     */
    static byte[] encode(List<Entry> entries, Map<String, String> metadata) {
        JsonObject root = new JsonObject();
        if (!metadata.isEmpty()) {
            JsonObject meta = new JsonObject();
            new TreeMap<>(metadata).forEach(meta::addProperty);
            root.add(METADATA_KEY, meta);
        }
        for (Entry e : entries) {
            JsonObject info = new JsonObject();
            info.addProperty("dtype", e.dtype().safetensorsName);
            JsonArray shape = new JsonArray();
            for (int d : e.shape()) shape.add(d);
            info.add("shape", shape);
            JsonArray offsets = new JsonArray();
            offsets.add(e.begin());
            offsets.add(e.end());
            info.add("data_offsets", offsets);
            root.add(e.name(), info);
        }
        byte[] json = GSON.toJson(root).getBytes(StandardCharsets.UTF_8);
        int padded = (json.length + 7) & ~7;
        byte[] out = Arrays.copyOf(json, padded);
        Arrays.fill(out, json.length, padded, (byte) ' ');
        return out;
    }

    // ---------------------------------------------------------------- reading

    /**
     * Parses and checks a header.
     *
     * @param file      the file's name, for messages
     * @param bytes     the header bytes (after the 8-byte length)
     * @param dataBytes how many bytes follow the header in the file
     */
    static SafeTensorsHeader parse(String file, byte[] bytes, long dataBytes) {
        String text = decodeUtf8(file, bytes);
        if (!text.startsWith("{")) {
            throw bad(file, "the header must be a JSON object starting with '{', but it starts with "
                    + quoteStart(text));
        }
        List<Entry> entries = new ArrayList<>();
        Map<String, String> metadata = Map.of();
        Set<String> seen = new HashSet<>();
        JsonReader reader = new JsonReader(new StringReader(text));
        reader.setStrictness(Strictness.STRICT);
        try {
            reader.beginObject();
            while (reader.hasNext()) {
                String key = reader.nextName();
                if (!seen.add(key)) throw bad(file, "key '" + key + "' appears twice in the header");
                JsonElement value = ELEMENT.read(reader);
                if (key.equals(METADATA_KEY)) {
                    metadata = parseMetadata(file, value);
                } else {
                    entries.add(parseEntry(file, key, value));
                }
            }
            reader.endObject();
            if (reader.peek() != JsonToken.END_DOCUMENT) {
                throw bad(file, "the header has content after its JSON object (only space padding may follow)");
            }
        } catch (IOException | IllegalStateException e) {
            throw bad(file, "the header is not valid JSON: " + jsonProblem(e));
        }
        entries.sort(Comparator.comparingLong(Entry::begin).thenComparingLong(Entry::end).thenComparing(Entry::name));
        checkCoverage(file, entries, dataBytes);
        return new SafeTensorsHeader(List.copyOf(entries), Collections.unmodifiableMap(new TreeMap<>(metadata)));
    }

    private static String decodeUtf8(String file, byte[] bytes) {
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes))
                    .toString();
        } catch (CharacterCodingException e) {
            throw bad(file, "the header is not valid UTF-8 (" + e + ")");
        }
    }

    private static Map<String, String> parseMetadata(String file, JsonElement value) {
        if (!value.isJsonObject()) {
            throw bad(file, METADATA_KEY + " must be an object of string values, got " + abbreviate(value));
        }
        Map<String, String> out = new TreeMap<>();
        for (Map.Entry<String, JsonElement> kv : value.getAsJsonObject().entrySet()) {
            JsonElement v = kv.getValue();
            if (!(v.isJsonPrimitive() && v.getAsJsonPrimitive().isString())) {
                throw bad(file, METADATA_KEY + " entry '" + kv.getKey() + "' must be a string, got " + abbreviate(v));
            }
            out.put(kv.getKey(), v.getAsString());
        }
        return out;
    }

    private static Entry parseEntry(String file, String name, JsonElement value) {
        if (!value.isJsonObject()) {
            throw badTensor(file, name, "expected an object {\"dtype\", \"shape\", \"data_offsets\"}, got "
                    + abbreviate(value));
        }
        JsonObject info = value.getAsJsonObject();
        JsonElement dtypeName = require(file, name, info, "dtype");
        if (!(dtypeName.isJsonPrimitive() && dtypeName.getAsJsonPrimitive().isString())) {
            throw badTensor(file, name, "\"dtype\" must be a string, got " + abbreviate(dtypeName));
        }
        DType dtype;
        try {
            dtype = DType.fromSafetensors(dtypeName.getAsString());
        } catch (IllegalArgumentException e) {
            throw badTensor(file, name, e.getMessage());
        }

        long[] shapeLongs = integers(file, name, info, "shape", Integer.MAX_VALUE);
        int[] shape = new int[shapeLongs.length];
        for (int i = 0; i < shape.length; i++) shape[i] = (int) shapeLongs[i];

        long[] offsets = integers(file, name, info, "data_offsets", Long.MAX_VALUE);
        if (offsets.length != 2) {
            throw badTensor(file, name, "\"data_offsets\" must be [begin, end], got " + info.get("data_offsets"));
        }
        long begin = offsets[0];
        long end = offsets[1];
        if (end < begin) {
            throw badTensor(file, name, "data_offsets [" + begin + ", " + end + "] end before they begin");
        }
        long expectedBytes;
        try {
            long numel = 1;
            for (int d : shape) numel = Math.multiplyExact(numel, d);
            expectedBytes = Math.multiplyExact(numel, dtype.byteSize);
        } catch (ArithmeticException e) {
            throw badTensor(file, name, "shape " + Arrays.toString(shape) + " of " + dtype + " overflows a 64-bit byte count");
        }
        if (end - begin != expectedBytes) {
            throw badTensor(file, name, "shape " + Arrays.toString(shape) + " of " + dtype + " needs " + expectedBytes
                    + " bytes, but data_offsets [" + begin + ", " + end + "] span " + (end - begin));
        }
        return new Entry(name, dtype, shape, begin, end);
    }

    private static JsonElement require(String file, String name, JsonObject info, String key) {
        JsonElement v = info.get(key);
        if (v == null) throw badTensor(file, name, "missing \"" + key + "\"");
        return v;
    }

    /** The array {@code key} of integers in [0, max]. */
    private static long[] integers(String file, String name, JsonObject info, String key, long max) {
        JsonElement v = require(file, name, info, key);
        if (!v.isJsonArray()) throw badTensor(file, name, "\"" + key + "\" must be an array, got " + abbreviate(v));
        JsonArray array = v.getAsJsonArray();
        long[] out = new long[array.size()];
        for (int i = 0; i < out.length; i++) {
            JsonElement x = array.get(i);
            long value = -1;
            if (x.isJsonPrimitive() && x.getAsJsonPrimitive().isNumber()) {
                try {
                    value = new BigDecimal(x.getAsString()).longValueExact();
                } catch (ArithmeticException | NumberFormatException e) {
                    value = -1;
                }
            }
            if (value < 0 || value > max) {
                throw badTensor(file, name, "\"" + key + "\" must hold integers in [0, " + max + "], got " + array);
            }
            out[i] = value;
        }
        return out;
    }

    /**
     * The tensors, in data order, must tile the data exactly: start at 0, no overlaps, no holes, and end
     * at the end of the file. Holes would be bytes no tensor accounts for; the reference refuses them too.
     */
    private static void checkCoverage(String file, List<Entry> entries, long dataBytes) {
        long expected = 0;
        Entry previous = null;
        for (Entry e : entries) {
            if (e.begin() < expected) {
                throw badTensor(file, e.name(), "data_offsets [" + e.begin() + ", " + e.end() + "] overlap tensor '"
                        + previous.name() + "' at [" + previous.begin() + ", " + previous.end() + "]");
            }
            if (e.begin() > expected) {
                throw badTensor(file, e.name(), "data_offsets [" + e.begin() + ", " + e.end() + "] leave bytes ["
                        + expected + ", " + e.begin() + ") of the data to no tensor"
                        + (previous == null ? "" : " (after tensor '" + previous.name() + "')")
                        + ": tensor data must be contiguous");
            }
            expected = e.end();
            previous = e;
        }
        if (expected > dataBytes) {
            throw badTensor(file, previous.name(), "data_offsets [" + previous.begin() + ", " + previous.end()
                    + "] run past the end of the data: the file is truncated (only " + dataBytes
                    + " bytes follow the header)");
        }
        if (expected < dataBytes) {
            throw bad(file, (dataBytes - expected) + " bytes after the last tensor"
                    + (previous == null ? "" : " ('" + previous.name() + "', ending at " + expected + ")")
                    + " belong to no tensor: expected the data to end at byte " + expected + " after the header");
        }
    }

    // ---------------------------------------------------------------- messages

    static IllegalArgumentException bad(String file, String what) {
        return new IllegalArgumentException("safetensors file " + file + ": " + what);
    }

    static IllegalArgumentException badTensor(String file, String tensor, String what) {
        return bad(file, "tensor '" + tensor + "': " + what);
    }

    /** Gson's message without its advice to the programmer (to relax parsing) or its link. */
    private static String jsonProblem(Exception e) {
        String m = String.valueOf(e.getMessage()).lines().findFirst().orElse("");
        return m.replaceFirst("^Use JsonReader\\.setStrictness\\(Strictness\\.LENIENT\\) to accept m", "m");
    }

    private static String abbreviate(JsonElement v) {
        String s = String.valueOf(v);
        return s.length() <= 60 ? s : s.substring(0, 57) + "...";
    }

    private static String quoteStart(String text) {
        String start = text.length() <= 20 ? text : text.substring(0, 20) + "...";
        return new JsonPrimitive(start).toString();
    }
}
