package moe4j.text;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.text.Normalizer;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The byte-level BPE tokenizer of a Hugging Face {@code tokenizer.json} (GPT-2, Qwen, OLMo, Llama 3 style):
 * <ol>
 *   <li>added tokens (e.g. {@code <|endoftext|>}) are cut out of the text first and map to their ids;</li>
 *   <li>each remaining piece is normalised (none, NFC or NFKC), split by the pre-tokenizer (ByteLevel's
 *       GPT-2 pattern, or a Split regex followed by ByteLevel), and its UTF-8 bytes written as
 *       {@link ByteLevel} characters;</li>
 *   <li>each word is merged pair by pair, always the pair of lowest merge rank first, and its symbols looked
 *       up in the vocabulary;</li>
 *   <li>a TemplateProcessing post-processor adds its special tokens when asked for.</li>
 * </ol>
 * Anything else in the file (another model type, normaliser or pre-tokenizer, byte fallback) is refused
 * with an error naming it: a tokenizer that silently differs from the reference would corrupt every id.
 */
public final class BpeTokenizer {
    /** GPT-2's pre-tokenization pattern, used by ByteLevel with use_regex. */
    static final String GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

    private final Map<String, Integer> vocab;
    private final String[] idToToken;
    private final Map<String, Integer> mergeRanks;
    private final List<AddedToken> added;
    private final Pattern addedPattern;
    private final Normalizer.Form normalization;
    private final List<Pattern> splits = new ArrayList<>();
    private final boolean addPrefixSpace;
    private final boolean ignoreMerges;
    private final Integer unkId;
    private final List<Integer> prefixIds = new ArrayList<>();
    private final List<Integer> suffixIds = new ArrayList<>();
    private final Map<String, int[]> wordCache = new ConcurrentHashMap<>();

    private record AddedToken(int id, String content, boolean special) {}

    private BpeTokenizer(JsonObject json, String source) {
        JsonObject model = json.getAsJsonObject("model");
        if (model == null || !"BPE".equals(str(model, "type"))) {
            throw new IllegalArgumentException(source + ": model type " + (model == null ? "null" : str(model, "type")) + " is not supported (supported: BPE)");
        }
        if (bool(model, "byte_fallback")) throw new IllegalArgumentException(source + ": byte_fallback BPE is not supported (byte-level BPE only)");
        for (String k : new String[] {"continuing_subword_prefix", "end_of_word_suffix"}) {
            if (model.has(k) && !model.get(k).isJsonNull() && !model.get(k).getAsString().isEmpty()) {
                throw new IllegalArgumentException(source + ": BPE " + k + " is not supported");
            }
        }
        vocab = new HashMap<>();
        int maxId = -1;
        for (var e : model.getAsJsonObject("vocab").entrySet()) {
            vocab.put(e.getKey(), e.getValue().getAsInt());
            maxId = Math.max(maxId, e.getValue().getAsInt());
        }
        mergeRanks = new HashMap<>();
        JsonArray merges = model.getAsJsonArray("merges");
        for (int i = 0; i < merges.size(); i++) {
            JsonElement m = merges.get(i);
            String a;
            String b;
            if (m.isJsonArray()) {
                a = m.getAsJsonArray().get(0).getAsString();
                b = m.getAsJsonArray().get(1).getAsString();
            } else {
                String s = m.getAsString();
                int space = s.indexOf(' ');
                if (space < 0) throw new IllegalArgumentException(source + ": merge " + i + " '" + s + "' is not two symbols");
                a = s.substring(0, space);
                b = s.substring(space + 1);
            }
            mergeRanks.putIfAbsent(pairKey(a, b), i);
        }
        ignoreMerges = bool(model, "ignore_merges");
        String unk = model.has("unk_token") && !model.get("unk_token").isJsonNull() ? model.get("unk_token").getAsString() : null;

        added = new ArrayList<>();
        if (json.has("added_tokens")) {
            for (JsonElement e : json.getAsJsonArray("added_tokens")) {
                JsonObject t = e.getAsJsonObject();
                AddedToken a = new AddedToken(t.get("id").getAsInt(), t.get("content").getAsString(), bool(t, "special"));
                added.add(a);
                maxId = Math.max(maxId, a.id());
            }
        }
        idToToken = new String[maxId + 1];
        vocab.forEach((tok, id) -> idToToken[id] = tok);
        for (AddedToken a : added) idToToken[a.id()] = a.content();
        unkId = unk == null ? null : vocab.get(unk);
        // longest first, so that a token containing another wins
        List<AddedToken> byLength = new ArrayList<>(added);
        byLength.sort(Comparator.comparingInt((AddedToken a) -> a.content().length()).reversed());
        addedPattern = byLength.isEmpty() ? null
                : Pattern.compile(String.join("|", byLength.stream().map(a -> Pattern.quote(a.content())).toList()));

        normalization = normalizer(json.get("normalizer"), source);
        boolean[] prefix = new boolean[1];
        preTokenizer(json.get("pre_tokenizer"), source, prefix);
        addPrefixSpace = prefix[0];
        postProcessor(json.get("post_processor"), source);
    }

    /** Reads {@code tokenizer.json}. */
    public static BpeTokenizer load(Path file) {
        try {
            return new BpeTokenizer(JsonParser.parseString(Files.readString(file)).getAsJsonObject(), file.toString());
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read tokenizer " + file + ": " + e.getMessage(), e);
        }
    }

    private static Normalizer.Form normalizer(JsonElement n, String source) {
        if (n == null || n.isJsonNull()) return null;
        String type = str(n.getAsJsonObject(), "type");
        return switch (type) {
            case "NFC" -> Normalizer.Form.NFC;
            case "NFKC" -> Normalizer.Form.NFKC;
            case "Sequence" -> {
                JsonArray parts = n.getAsJsonObject().getAsJsonArray("normalizers");
                if (parts.isEmpty()) yield null;
                if (parts.size() == 1) yield normalizer(parts.get(0), source);
                throw new IllegalArgumentException(source + ": a Sequence of " + parts.size() + " normalizers is not supported");
            }
            default -> throw new IllegalArgumentException(source + ": normalizer " + type + " is not supported (supported: NFC, NFKC)");
        };
    }

    private void preTokenizer(JsonElement p, String source, boolean[] prefixSpace) {
        if (p == null || p.isJsonNull()) throw new IllegalArgumentException(source + ": a byte-level tokenizer needs a ByteLevel pre_tokenizer, found none");
        JsonObject o = p.getAsJsonObject();
        String type = str(o, "type");
        switch (type) {
            case "Sequence" -> {
                for (JsonElement e : o.getAsJsonArray("pretokenizers")) preTokenizer(e, source, prefixSpace);
            }
            case "Split" -> {
                if (!"Isolated".equals(str(o, "behavior")) || bool(o, "invert")) {
                    throw new IllegalArgumentException(source + ": Split pre-tokenizer with behavior " + str(o, "behavior") + ", invert "
                            + bool(o, "invert") + " is not supported (supported: Isolated, not inverted)");
                }
                JsonObject pattern = o.getAsJsonObject("pattern");
                splits.add(pattern.has("Regex") ? Pattern.compile(pattern.get("Regex").getAsString(), Pattern.UNICODE_CHARACTER_CLASS)
                        : Pattern.compile(Pattern.quote(pattern.get("String").getAsString())));
            }
            case "ByteLevel" -> {
                prefixSpace[0] = bool(o, "add_prefix_space");
                if (!o.has("use_regex") || o.get("use_regex").getAsBoolean()) splits.add(Pattern.compile(GPT2_PATTERN, Pattern.UNICODE_CHARACTER_CLASS));
            }
            default -> throw new IllegalArgumentException(source + ": pre_tokenizer " + type + " is not supported (supported: ByteLevel, Split, Sequence)");
        }
    }

    private void postProcessor(JsonElement p, String source) {
        if (p == null || p.isJsonNull()) return;
        JsonObject o = p.getAsJsonObject();
        switch (str(o, "type")) {
            case "ByteLevel" -> { }
            case "Sequence" -> {
                for (JsonElement e : o.getAsJsonArray("processors")) postProcessor(e, source);
            }
            case "TemplateProcessing" -> {
                List<Integer> target = prefixIds;
                for (JsonElement e : o.getAsJsonArray("single")) {
                    JsonObject item = e.getAsJsonObject();
                    if (item.has("Sequence")) {
                        target = suffixIds;
                    } else {
                        String id = item.getAsJsonObject("SpecialToken").get("id").getAsString();
                        JsonObject special = o.getAsJsonObject("special_tokens").getAsJsonObject(id);
                        for (JsonElement i : special.getAsJsonArray("ids")) target.add(i.getAsInt());
                    }
                }
            }
            default -> throw new IllegalArgumentException(source + ": post_processor " + str(o, "type")
                    + " is not supported (supported: ByteLevel, TemplateProcessing, Sequence)");
        }
    }

    // ---------------------------------------------------------------- encoding

    /** The ids of {@code text}, without the post-processor's special tokens. */
    public int[] encode(String text) {
        return encode(text, false);
    }

    /** The ids of {@code text}; with {@code addSpecialTokens}, the post-processor's (e.g. a BOS id) around them. */
    public int[] encode(String text, boolean addSpecialTokens) {
        List<Integer> ids = new ArrayList<>();
        if (addSpecialTokens) ids.addAll(prefixIds);
        int at = 0;
        if (addedPattern != null) {
            Matcher m = addedPattern.matcher(text);
            while (m.find()) {
                encodePlain(text.substring(at, m.start()), ids);
                ids.add(addedId(m.group()));
                at = m.end();
            }
        }
        encodePlain(text.substring(at), ids);
        if (addSpecialTokens) ids.addAll(suffixIds);
        return ids.stream().mapToInt(Integer::intValue).toArray();
    }

    private int addedId(String content) {
        for (AddedToken a : added) {
            if (a.content().equals(content)) return a.id();
        }
        throw new AssertionError(content);
    }

    private void encodePlain(String text, List<Integer> ids) {
        if (text.isEmpty()) return;
        if (normalization != null) text = Normalizer.normalize(text, normalization);
        if (addPrefixSpace && !text.startsWith(" ")) text = " " + text;
        List<String> pieces = List.of(text);
        for (Pattern split : splits) {
            List<String> next = new ArrayList<>();
            for (String piece : pieces) isolate(split, piece, next);
            pieces = next;
        }
        for (String piece : pieces) {
            for (int id : word(ByteLevel.encode(piece))) ids.add(id);
        }
    }

    /** Splits {@code s} into the matches of {@code p} and the text between them, in order, dropping nothing. */
    private static void isolate(Pattern p, String s, List<String> out) {
        Matcher m = p.matcher(s);
        int at = 0;
        while (m.find()) {
            if (m.end() == m.start()) continue;
            if (m.start() > at) out.add(s.substring(at, m.start()));
            out.add(m.group());
            at = m.end();
        }
        if (at < s.length()) out.add(s.substring(at));
    }

    /** The ids of one byte-level word, merged by rank. */
    private int[] word(String w) {
        int[] cached = wordCache.get(w);
        if (cached != null) return cached;
        int[] ids;
        Integer whole = ignoreMerges ? vocab.get(w) : null;
        if (whole != null) {
            ids = new int[] {whole};
        } else {
            List<String> symbols = new ArrayList<>(w.length());
            for (int i = 0; i < w.length(); i++) symbols.add(String.valueOf(w.charAt(i)));
            while (symbols.size() > 1) {
                int best = -1;
                int bestRank = Integer.MAX_VALUE;
                for (int i = 0; i + 1 < symbols.size(); i++) {
                    Integer r = mergeRanks.get(pairKey(symbols.get(i), symbols.get(i + 1)));
                    if (r != null && r < bestRank) {
                        bestRank = r;
                        best = i;
                    }
                }
                if (best < 0) break;
                symbols.set(best, symbols.get(best) + symbols.get(best + 1));
                symbols.remove(best + 1);
            }
            ids = new int[symbols.size()];
            for (int i = 0; i < ids.length; i++) {
                Integer id = vocab.get(symbols.get(i));
                if (id == null) {
                    if (unkId == null) {
                        throw new IllegalArgumentException("tokenizer: symbol '" + symbols.get(i) + "' is not in the vocabulary and there is no unk_token");
                    }
                    id = unkId;
                }
                ids[i] = id;
            }
        }
        wordCache.put(w, ids);
        return ids;
    }

    private static String pairKey(String a, String b) {
        return a + '\u0000' + b;
    }

    // ---------------------------------------------------------------- decoding

    /** The text of {@code ids}; special tokens appear as their text unless {@code skipSpecialTokens}. */
    public String decode(int[] ids, boolean skipSpecialTokens) {
        StringBuilder chars = new StringBuilder();
        for (int id : ids) {
            if (id < 0 || id >= idToToken.length || idToToken[id] == null) {
                throw new IllegalArgumentException("decode: id " + id + " is not in the vocabulary [0, " + idToToken.length + ")");
            }
            if (skipSpecialTokens && isSpecial(id)) continue;
            chars.append(idToToken[id]);
        }
        return ByteLevel.decode(chars.toString());
    }

    public String decode(int[] ids) {
        return decode(ids, false);
    }

    private boolean isSpecial(int id) {
        for (AddedToken a : added) {
            if (a.id() == id) return a.special();
        }
        return false;
    }

    /** The id of token {@code token} (a vocabulary entry or an added token), or -1. */
    public int tokenId(String token) {
        for (AddedToken a : added) {
            if (a.content().equals(token)) return a.id();
        }
        return vocab.getOrDefault(token, -1);
    }

    /** One more than the largest id. */
    public int vocabSize() {
        return idToToken.length;
    }

    private static String str(JsonObject o, String key) {
        return o.has(key) && !o.get(key).isJsonNull() ? o.get(key).getAsString() : null;
    }

    private static boolean bool(JsonObject o, String key) {
        return o.has(key) && !o.get(key).isJsonNull() && o.get(key).getAsBoolean();
    }
}
