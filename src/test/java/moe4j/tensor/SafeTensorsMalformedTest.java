package moe4j.tensor;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Files that do not add up are refused with a message naming the file, the tensor and what was expected. */
class SafeTensorsMalformedTest {
    static final String F32_2 = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";

    @TempDir
    Path dir;

    @Test
    void wellFormedBaselineReads() throws IOException {
        // the fixtures below each break one thing of this file
        try (SafeTensors.Loaded loaded = SafeTensors.read(write(F32_2, 8))) {
            assertTrue(loaded.contains("w"));
        }
    }

    @Test
    void fileShorterThanTheHeaderLength() throws IOException {
        Path file = dir.resolve("tiny.safetensors");
        Files.write(file, new byte[] {1, 0, 0});
        expect(file, "3 bytes long", "8-byte header length");
    }

    @Test
    void headerLengthBeyondTheFile() throws IOException {
        byte[] image = SafeTensorsTest.file(F32_2, new byte[8]);
        Path file = dir.resolve("cut.safetensors");
        Files.write(file, Arrays.copyOf(image, 40));
        expect(file, "header length 56 runs past the end of the file (40 bytes");
    }

    @Test
    void absurdHeaderLength() throws IOException {
        Path file = dir.resolve("huge.safetensors");
        Files.write(file, SafeTensorsTest.le(16).putLong(-1L).putLong(0).array());
        expect(file, "header length 18446744073709551615 is beyond the limit");
    }

    @Test
    void badJson() throws IOException {
        expect(write("{\"w\":{\"dtype\":\"F32\",", 0), "not valid JSON");
        expect(write("{\"w\":{\"dtype\":F32}}", 0), "not valid JSON");
        expect(write(F32_2 + " " + F32_2, 8), "not valid JSON");
        expect(write("[1, 2]", 0), "must be a JSON object");
    }

    @Test
    void duplicateKey() throws IOException {
        String w = "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
        expect(write("{" + w + "," + w + "}", 8), "key 'w' appears twice");
    }

    @Test
    void unknownDType() throws IOException {
        expect(write("{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8),
                "tensor 'w'", "unsupported safetensors dtype 'F64'", "expected one of F32, BF16, F16, I32, I64");
    }

    @Test
    void missingOrMistypedFields() throws IOException {
        expect(write("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8), "tensor 'w'", "missing \"shape\"");
        expect(write("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8),
                "tensor 'w'", "\"shape\" must hold integers in [0, 2147483647], got [-2]");
        expect(write("{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8), "tensor 'w'", "\"shape\" must hold integers");
        expect(write("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8), "tensor 'w'", "must be [begin, end]");
        expect(write("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8), "tensor 'w'", "end before they begin");
        expect(write("{\"w\":[1,2]}", 0), "tensor 'w'", "expected an object");
        expect(write("{\"__metadata__\":{\"k\":3}}", 0), "__metadata__ entry 'k' must be a string, got 3");
    }

    @Test
    void shapeTimesDTypeSizeDisagreesWithOffsets() throws IOException {
        expect(write("{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24),
                "tensor 'w'", "shape [2, 3] of BF16 needs 12 bytes, but data_offsets [0, 24] span 24");
    }

    @Test
    void offsetsBeyondTheDataMeanATruncatedFile() throws IOException {
        expect(write(F32_2, 4), "tensor 'w'", "run past the end of the data", "truncated", "only 4 bytes");
    }

    @Test
    void overlappingTensors() throws IOException {
        String header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                + "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
        expect(write(header, 12), "tensor 'b'", "overlap tensor 'a' at [0, 8]");
    }

    @Test
    void holesBetweenTensors() throws IOException {
        String header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                + "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}";
        expect(write(header, 12), "tensor 'b'", "leave bytes [4, 8)", "after tensor 'a'", "must be contiguous");
        expect(write("{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8), "tensor 'b'", "leave bytes [0, 4)");
    }

    @Test
    void bytesAfterTheLastTensor() throws IOException {
        expect(write(F32_2, 12), "4 bytes after the last tensor ('w', ending at 8) belong to no tensor");
    }

    /** Writes a file with {@code header} (padded) and {@code dataBytes} zero bytes of data. */
    private Path write(String header, int dataBytes) throws IOException {
        Path file = Files.createTempFile(dir, "bad", ".safetensors");
        Files.write(file, SafeTensorsTest.file(header, new byte[dataBytes]));
        return file;
    }

    private static void expect(Path file, String... fragments) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> SafeTensors.read(file).close());
        String message = e.getMessage();
        assertTrue(message.contains(file.toString()), "message must name the file: " + message);
        for (String f : fragments) assertTrue(message.contains(f), "message must say '" + f + "': " + message);
    }
}
