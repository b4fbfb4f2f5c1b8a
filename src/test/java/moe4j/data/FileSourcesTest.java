package moe4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import moe4j.tensor.Rng;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.io.TempDir;

/** Byte text and token files round trip through temp files; bad files are clear errors. */
class FileSourcesTest {
    static final int S = 16;

    @TempDir
    Path dir;

    static int[] randomTokens(int n, int bound, long seed) {
        Rng rng = new Rng(seed);
        int[] t = new int[n];
        for (int i = 0; i < n; i++) t[i] = rng.nextInt(bound);
        return t;
    }

    Path writeBytes(String name, int[] values) throws IOException {
        byte[] b = new byte[values.length];
        for (int i = 0; i < b.length; i++) b[i] = (byte) values[i];
        Path p = dir.resolve(name);
        Files.createDirectories(p.getParent());
        Files.write(p, b);
        return p;
    }

    Path writeTokens(String name, int[] values, int width) throws IOException {
        ByteBuffer buf = ByteBuffer.allocate(values.length * width).order(ByteOrder.LITTLE_ENDIAN);
        for (int v : values) {
            if (width == 2) buf.putShort((short) v);
            else buf.putInt(v);
        }
        Path p = dir.resolve(name);
        Files.write(p, buf.array());
        return p;
    }

    /** Start of {@code window} in {@code data}, or -1. */
    static int find(int[] data, int[] window) {
        outer:
        for (int s = 0; s + window.length <= data.length; s++) {
            for (int j = 0; j < window.length; j++) if (data[s + j] != window[j]) continue outer;
            return s;
        }
        return -1;
    }

    static void expectError(Executable body, String... fragments) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, body);
        for (String f : fragments) assertTrue(e.getMessage().contains(f), "'" + e.getMessage() + "' lacks '" + f + "'");
    }

    // ------------------------------------------------------------ byte text

    @Test
    void sequentialByteWindowsAreBackToBackSlicesOfTheFile() throws IOException {
        int[] data = randomTokens(1000, 256, 1);
        ByteText text = ByteText.open(writeBytes("a.txt", data), 0, WindowOrder.SEQUENTIAL);
        assertEquals(256, text.vocabSize());
        DataLoader loader = new DataLoader(text, 4, S);
        int windows = (1000 - 1) / S;
        for (int step = 0; step < 20; step++) {
            int[] in = loader.batch(step).inputs().toIntArray();
            int[] out = loader.batch(step).targets().toIntArray();
            for (int r = 0; r < 4; r++) {
                int start = ((step * 4 + r) % windows) * S;
                assertArrayEquals(Arrays.copyOfRange(data, start, start + S), Arrays.copyOfRange(in, r * S, r * S + S));
                assertArrayEquals(Arrays.copyOfRange(data, start + 1, start + S + 1),
                        Arrays.copyOfRange(out, r * S, r * S + S));
            }
        }
    }

    @Test
    void randomByteWindowsComeFromTheFileAndDependOnTheSeed() throws IOException {
        int[] data = randomTokens(5000, 256, 2);
        Path file = writeBytes("b.txt", data);
        int[] w = new int[S + 1];
        int[] starts = new int[200];
        for (int i = 0; i < starts.length; i++) {
            ByteText.open(file, 7).window(i, w);
            starts[i] = find(data, w);
            assertTrue(starts[i] >= 0, "window " + i + " is a slice of the file");
        }
        assertTrue(Arrays.stream(starts).distinct().count() > 190, "offsets are spread out");
        int[] other = new int[S + 1];
        ByteText.open(file, 8).window(0, other);
        ByteText.open(file, 7).window(0, w);
        assertTrue(!Arrays.equals(w, other));
    }

    @Test
    void aDirectoryOfTextFilesNeverMixesFilesInOneWindow() throws IOException {
        // file one holds bytes < 128, file two bytes >= 128; the .md file and the empty .txt are passed over
        int[] low = randomTokens(3000, 128, 3);
        int[] high = Arrays.stream(randomTokens(1000, 128, 4)).map(v -> v + 128).toArray();
        writeBytes("corpus/one.txt", low);
        writeBytes("corpus/sub/two.txt", high);
        writeBytes("corpus/notes.md", new int[] {1, 2, 3});
        writeBytes("corpus/empty.txt", new int[0]);
        ByteText text = ByteText.open(dir.resolve("corpus"), 5);
        assertEquals(2, text.files().size());
        assertEquals(4000, text.totalBytes());
        int[] w = new int[S + 1];
        int fromHigh = 0;
        int n = 2000;
        for (int i = 0; i < n; i++) {
            text.window(i, w);
            boolean isHigh = w[0] >= 128;
            for (int v : w) assertEquals(isHigh, v >= 128, "window " + i + " mixes files");
            assertTrue(find(isHigh ? high : low, w) >= 0);
            if (isHigh) fromHigh++;
        }
        // windows in proportion to what each file holds: (1000-16)/(3000-16 + 1000-16) = 0.248
        assertEquals(0.248, fromHigh / (double) n, 0.04);
    }

    @Test
    void byteTextErrorsNameThePathAndSizes() throws IOException {
        Path empty = writeBytes("empty.txt", new int[0]);
        expectError(() -> ByteText.open(empty, 0), empty.toString(), "empty");
        Path missing = dir.resolve("missing.txt");
        expectError(() -> ByteText.open(missing, 0), missing.toString(), "does not exist");
        Path small = writeBytes("small.txt", new int[10]);
        expectError(() -> new DataLoader(ByteText.open(small, 0), 2, S), small.toString(), "10 bytes", "17");
        Files.createDirectories(dir.resolve("nothing"));
        expectError(() -> ByteText.open(dir.resolve("nothing"), 0), "no non-empty .txt file");
        writeBytes("shorts/a.txt", new int[5]);
        writeBytes("shorts/b.txt", new int[9]);
        expectError(() -> new DataLoader(ByteText.open(dir.resolve("shorts"), 0), 2, S),
                "none of the 2 .txt files", "b.txt", "has 9");
    }

    // ------------------------------------------------------------ token files

    @Test
    void uint16AndUint32FilesRoundTrip() throws IOException {
        int[] u16 = randomTokens(2000, 65536, 5);
        int[] u32 = randomTokens(2000, 1 << 20, 6);
        TokenFile a = TokenFile.open(writeTokens("a.u16", u16, 2), 0);
        TokenFile b = TokenFile.open(writeTokens("b.u32", u32, 4), 0);
        TokenFile c = TokenFile.open(writeTokens("c.bin", u16, 2), 0);
        assertEquals(TokenFile.Width.U16, a.width());
        assertEquals(TokenFile.Width.U32, b.width());
        assertEquals(TokenFile.Width.U16, c.width(), ".bin is nanoGPT's uint16");
        assertEquals(Arrays.stream(u16).max().orElseThrow() + 1, a.vocabSize());
        assertEquals(Arrays.stream(u32).max().orElseThrow() + 1, b.vocabSize());
        assertEquals(2000, b.length());
        int[] w = new int[S + 1];
        for (int i = 0; i < 100; i++) {
            a.window(i, w);
            assertTrue(find(u16, w) >= 0);
            b.window(i, w);
            assertTrue(find(u32, w) >= 0);
        }
        TokenFile seq = TokenFile.open(dir.resolve("b.u32"), null, 1 << 20, 0, WindowOrder.SEQUENTIAL);
        assertEquals(1 << 20, seq.vocabSize());
        seq.window(3, w);
        assertArrayEquals(Arrays.copyOfRange(u32, 3 * S, 4 * S + 1), w);
    }

    @Test
    void anExplicitWidthOverridesTheExtension() throws IOException {
        int[] values = {1, 2, 3, 70000, 5, 6, 7, 8};
        Path p = writeTokens("data.raw", values, 4);
        expectError(() -> TokenFile.open(p, 0), "data.raw", "extension");
        TokenFile t = TokenFile.open(p, TokenFile.Width.U32, 0, 0, WindowOrder.SEQUENTIAL);
        int[] w = new int[8];
        t.window(0, w);
        assertArrayEquals(values, w);
    }

    @Test
    void tokenFileErrors() throws IOException {
        Path truncated = dir.resolve("cut.u32");
        Files.write(truncated, new byte[10]);
        expectError(() -> TokenFile.open(truncated, 0), truncated.toString(), "10 bytes", "not a multiple of the 4-byte");
        Path empty = dir.resolve("empty.u16");
        Files.write(empty, new byte[0]);
        expectError(() -> TokenFile.open(empty, 0), empty.toString(), "empty");

        int[] values = randomTokens(100, 50, 7);
        values[37] = 60;
        Path p = writeTokens("ids.u16", values, 2);
        expectError(() -> TokenFile.open(p, null, 50, 0, WindowOrder.RANDOM), "token 37", "byte offset 74", "id 60",
                "vocabulary size 50", p.toString());

        Path huge = writeTokens("huge.u32", new int[] {1, 2, 0x80000000, 3}, 4);
        expectError(() -> TokenFile.open(huge, 0), "token 2", "id 2147483648", "int32");
        expectError(() -> TokenFile.open(huge, null, 10, 0, WindowOrder.RANDOM), "token 2", "id 2147483648");

        Path small = writeTokens("small.u16", new int[] {1, 2, 3}, 2);
        expectError(() -> new DataLoader(TokenFile.open(small, 0), 1, S), "3 tokens", "window of 17");
    }

    @Test
    void largeFilesAreCheckedWindowByWindow() throws IOException {
        int[] values = new int[200];
        Arrays.fill(values, 1);
        values[150] = 99;
        Path p = writeTokens("lazy.u16", values, 2);
        // checked only where read: sequential windows 0..8 cover tokens 0..144
        TokenFile t = TokenFile.open(p, null, 10, 0, WindowOrder.SEQUENTIAL, 50);
        int[] w = new int[S + 1];
        for (int i = 0; i < 9; i++) t.window(i, w);
        expectError(() -> t.window(9, w), "token 150", "byte offset 300", "id 99", "vocabulary size 10");
    }

    // ------------------------------------------------------------ specs

    @Test
    void specsOpenTheRightSources() throws IOException {
        assertTrue(Datasets.open("synthetic", 3) instanceof SyntheticTasks);
        assertTrue(Datasets.open("", 3) instanceof SyntheticTasks);
        assertEquals(3, ((SyntheticTasks) Datasets.open(null, 3)).seed());
        Path text = writeBytes("t.txt", randomTokens(100, 256, 8));
        assertTrue(Datasets.open("text:" + text, 0) instanceof ByteText);
        assertEquals("text:" + text + ":sequential", Datasets.open("text:" + text + ":sequential", 0).name());
        Path tok = writeTokens("t.raw", randomTokens(100, 300, 9), 4);
        TokenSource t = Datasets.open("tokens:" + tok + ":u32:vocab=300:sequential", 0);
        assertEquals(300, t.vocabSize());
        assertEquals("tokens:" + tok + ":u32:sequential", t.name());
        Path colon = writeTokens("a:b.u16", new int[] {4, 5, 6}, 2);
        assertEquals(7, Datasets.open("tokens:" + colon, 0).vocabSize(), "a colon inside the path");
    }

    @Test
    void badSpecsAreClearErrors() {
        expectError(() -> Datasets.open("imagenet", 0), "unknown dataset spec 'imagenet'", "synthetic");
        expectError(() -> Datasets.open("tokens:", 0), "names no path");
        expectError(() -> Datasets.open("tokens:x.u16:vocab=abc", 0), "vocab=abc");
        expectError(() -> Datasets.open("text:x.txt:u16", 0), "text takes only");
        expectError(() -> Datasets.open("synthetic:5", 0), "synthetic takes no options");
    }
}
