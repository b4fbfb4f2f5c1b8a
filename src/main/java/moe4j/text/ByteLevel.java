package moe4j.text;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;

/**
 * GPT-2's reversible map between bytes and printable characters, which byte-level BPE vocabularies are
 * written in: the printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves, the other
 * 68 bytes in order for U+0100, U+0101, ... (so a space is 'Ġ' and a newline 'Ċ').
 */
public final class ByteLevel {
    private ByteLevel() {}

    private static final char[] BYTE_TO_CHAR = new char[256];
    private static final int[] CHAR_TO_BYTE = new int[512];

    static {
        java.util.Arrays.fill(CHAR_TO_BYTE, -1);
        int next = 256;
        for (int b = 0; b < 256; b++) {
            boolean printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            char c = printable ? (char) b : (char) next++;
            BYTE_TO_CHAR[b] = c;
            CHAR_TO_BYTE[c] = b;
        }
    }

    /** The UTF-8 bytes of {@code text}, each as its stand-in character. */
    public static String encode(String text) {
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        char[] out = new char[bytes.length];
        for (int i = 0; i < bytes.length; i++) out[i] = BYTE_TO_CHAR[bytes[i] & 0xFF];
        return new String(out);
    }

    /**
     * The text whose bytes {@code chars} stand for; characters that stand for no byte (the text of an added
     * token, say) contribute their own UTF-8 bytes. Invalid UTF-8 becomes U+FFFD, as in transformers.
     */
    public static String decode(String chars) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(chars.length());
        for (int i = 0; i < chars.length(); i++) {
            char c = chars.charAt(i);
            int b = c < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[c] : -1;
            if (b >= 0) {
                out.write(b);
            } else {
                int cp = Character.codePointAt(chars, i);
                out.writeBytes(new String(Character.toChars(cp)).getBytes(StandardCharsets.UTF_8));
                if (Character.isSupplementaryCodePoint(cp)) i++;
            }
        }
        return out.toString(StandardCharsets.UTF_8);
    }
}
