package moe4j.text;

import static org.junit.jupiter.api.Assertions.*;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The tokenizer against the ids of Hugging Face's tokenizers library (the reference) on mixed-language
 * strings: English, German, Chinese, Japanese, Russian, Arabic, emoji, code, odd whitespace and special
 * tokens in the text. Two tokenizer.json styles: GPT-2 (ByteLevel pre-tokenizer with its own pattern) and
 * Qwen (NFC, a Split regex, then ByteLevel). The ids come from scripts/hf-fixtures.py.
 */
class BpeTokenizerTest {
    static Path resource(String name) throws URISyntaxException {
        return Path.of(BpeTokenizerTest.class.getResource("/moe4j/hf/" + name).toURI());
    }

    @ParameterizedTest
    @ValueSource(strings = {"gpt2", "qwen"})
    void idsAndTextMatchTheReferenceTokenizer(String style) throws Exception {
        BpeTokenizer tok = BpeTokenizer.load(resource("tokenizer-" + style + ".json"));
        JsonObject cases = JsonParser.parseString(Files.readString(resource("tokenizer-cases.json"), StandardCharsets.UTF_8)).getAsJsonObject();
        JsonArray list = cases.getAsJsonArray(style);
        assertTrue(list.size() >= 20, "cases");
        for (JsonElement e : list) {
            JsonObject c = e.getAsJsonObject();
            String text = c.get("text").getAsString();
            JsonArray ids = c.getAsJsonArray("ids");
            int[] expected = new int[ids.size()];
            for (int i = 0; i < expected.length; i++) expected[i] = ids.get(i).getAsInt();
            int[] actual = tok.encode(text);
            assertArrayEquals(expected, actual, style + ": ids of '" + text + "'");
            assertEquals(c.get("decoded").getAsString(), tok.decode(actual), style + ": decoded '" + text + "'");
        }
    }

    @Test
    void byteLevelMapRoundTripsText() {
        assertEquals("Ġ", ByteLevel.encode(" "));
        assertEquals("!", ByteLevel.encode("!"));
        assertEquals("Ċ", ByteLevel.encode("\n"));
        assertEquals("héllo 😀", ByteLevel.decode(ByteLevel.encode("héllo 😀")));
    }

    @Test
    void unsupportedTokenizerTypesAreNamed(@org.junit.jupiter.api.io.TempDir Path dir) throws IOException {
        Path f = dir.resolve("tokenizer.json");
        Files.writeString(f, "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> BpeTokenizer.load(f));
        assertTrue(e.getMessage().contains("Unigram"), e.getMessage());
    }
}
