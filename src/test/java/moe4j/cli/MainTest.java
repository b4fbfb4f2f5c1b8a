package moe4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.List;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

class MainTest {
    private record Run(int exitCode, String out, String err) {}

    private static Run run(String... args) {
        CommandLine cli = Main.commandLine();
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        cli.setOut(new PrintWriter(out));
        cli.setErr(new PrintWriter(err));
        int code = cli.execute(args);
        return new Run(code, out.toString(), err.toString());
    }

    @Test
    void benchEpOnTheCpuWithABf16WireSendsHalfTheBytes() {
        String[] shape = {"bench", "ep", "--ranks", "2", "--dim", "16", "--hidden", "24", "--experts", "4", "--top-k", "2",
            "--tokens", "64", "--warmup", "0", "--iters", "1", "--json"};
        long[] bytes = new long[2];
        String[] wires = {"f32", "bf16"};
        for (int i = 0; i < 2; i++) {
            String[] args = java.util.Arrays.copyOf(shape, shape.length + 2);
            args[shape.length] = "--wire";
            args[shape.length + 1] = wires[i];
            Run r = run(args);
            assertEquals(0, r.exitCode(), r.err());
            JsonObject o = JsonParser.parseString(r.out().lines().toList().getLast()).getAsJsonObject();
            bytes[i] = o.get("bytesSentPerRank").getAsLong();
        }
        assertTrue(bytes[0] > 0, "rows went to the other rank");
        assertEquals(bytes[0] / 2, bytes[1], "a bf16 wire halves the bytes of the same routing");
    }

    /** {@code --dedup}: the dispatch measured on the wire is one row per (token, rank) pair, the count the routing gives. */
    @Test
    void benchEpWithDedupMeasuresOneRowPerTokenAndRank() {
        int d = 16;
        JsonObject[] runs = new JsonObject[2];
        for (int i = 0; i < 2; i++) {
            List<String> args = new java.util.ArrayList<>(List.of("bench", "ep", "--ranks", "2", "--dim", "" + d, "--hidden", "24",
                    "--experts", "8", "--top-k", "4", "--tokens", "64", "--warmup", "0", "--iters", "1", "--wire", "f32", "--json"));
            if (i == 1) args.add("--dedup");
            Run r = run(args.toArray(String[]::new));
            assertEquals(0, r.exitCode(), r.err());
            assertTrue(r.out().contains("one dispatch to peers, per rank:") && r.out().contains("with dedup " + (i == 1 ? "on" : "off")), r.out());
            runs[i] = JsonParser.parseString(r.out().lines().toList().getLast()).getAsJsonObject();
        }
        JsonObject plain = runs[0];
        JsonObject dedup = runs[1];
        assertEquals(plain.get("dispatchRowsToPeersDeduplicated").getAsLong(), dedup.get("dispatchRowsToPeersDeduplicated").getAsLong());
        long perEntry = plain.get("dispatchRowsToPeers").getAsLong();
        long pairs = dedup.get("dispatchRowsToPeersDeduplicated").getAsLong();
        assertTrue(pairs > 0 && pairs < perEntry, "top-4 of 8 experts on 2 ranks repeats destinations: " + pairs + " of " + perEntry);
        // means over two ranks of whole rows: within one row
        assertEquals(perEntry * d * 4, plain.get("dispatchBytesToPeers").getAsLong(), d * 4);
        assertEquals(pairs * d * 4, dedup.get("dispatchBytesToPeers").getAsLong(), d * 4);
        assertEquals(pairs * 4 * 4, dedup.get("dispatchIdBytesToPeers").getAsLong(), 4 * 4);
        assertTrue(dedup.get("dedup").getAsBoolean() && !plain.get("dedup").getAsBoolean());
    }

    @Test
    void benchEpRefusesBadOptionsInOneSentence() {
        Run bf16OnCpu = run("bench", "ep", "--ranks", "2", "--dtype", "bf16");
        assertEquals(2, bf16OnCpu.exitCode());
        assertTrue(bf16OnCpu.err().contains("--dtype bf16 needs --device cuda"), bf16OnCpu.err());
        Run wire = run("bench", "ep", "--wire", "fp8");
        assertEquals(2, wire.exitCode());
        assertTrue(wire.err().contains("--wire 'fp8'") && wire.err().contains("bf16"), wire.err());
        Run dtype = run("bench", "ep", "--device", "cuda", "--dtype", "fp16", "--ranks", "2");
        assertEquals(2, dtype.exitCode());
        assertTrue(dtype.err().contains("--dtype must be bf16 or f32, got 'fp16'"), dtype.err());
        Run uneven = run("bench", "ep", "--ranks", "3", "--experts", "8");
        assertEquals(2, uneven.exitCode());
        assertTrue(uneven.err().contains("must be divisible by ep (3)"), uneven.err());
    }

    /** Checked before any GPU or library is looked for, so it fails the same on a machine without either. */
    @Test
    void benchAlltoallRefusesANegativeHostWarmupInOneSentence() {
        Run r = run("bench", "alltoall", "--backend", "nccl", "--ranks", "2", "--host-warmup", "-1");
        assertEquals(2, r.exitCode(), r.err());
        assertTrue(r.err().contains("moe4j bench alltoall: error: --host-warmup -1: expected 0 or more exchanges"), r.err());
    }

    @Test
    void infoJsonIsOneObjectOnTheLastLine() {
        Run r = run("info", "--json");
        assertEquals(0, r.exitCode(), r.err());
        List<String> lines = r.out().lines().toList();
        JsonObject info = JsonParser.parseString(lines.getLast()).getAsJsonObject();
        assertTrue(info.getAsJsonObject("java").get("feature").getAsInt() >= 25);
        assertEquals(Runtime.getRuntime().availableProcessors(), info.get("cores").getAsInt());
        // the tests run with the incubator module, as bin/moe4j does
        JsonObject vector = info.getAsJsonObject("vector");
        assertTrue(vector.get("available").getAsBoolean());
        assertEquals(vector.get("bits").getAsInt(), 32 * vector.get("floatLanes").getAsInt());
        JsonObject backends = info.getAsJsonObject("backends");
        assertTrue(backends.getAsJsonObject("local").get("available").getAsBoolean());
        for (String name : List.of("mpi", "openblas", "cuda")) {
            JsonObject b = backends.getAsJsonObject(name);
            boolean available = b.get("available").getAsBoolean();
            assertTrue(available ? b.has("library") : b.get("install").getAsString().contains("install"), name + ": " + b);
        }
        assertTrue(r.out().contains("backends"), "the human-readable report comes first");
    }

    @Test
    void benchAlonePrintsItsUsage() {
        Run r = run("bench");
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode());
        assertTrue(r.err().contains("Missing benchmark"), r.err());
        assertTrue(r.err().contains("Usage: moe4j bench"), r.err());
    }

    @Test
    void noCommandPrintsUsageListingTheCommands() {
        Run r = run();
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode());
        assertTrue(r.err().contains("Usage: moe4j"), r.err());
        assertTrue(r.err().contains("info") && r.err().contains("bench"), r.err());
    }

    @Test
    void versionIsPrinted() {
        Run r = run("--version");
        assertEquals(0, r.exitCode());
        assertTrue(r.out().startsWith("moe4j "), r.out());
    }

    @Test
    void libraryProbeFindsLoadableLibrariesAndTheirFile() {
        LibraryProbe.Result libc = LibraryProbe.probe(List.of("libnot-a-real-library.so.9", "libc.so.6"), "printf");
        assertTrue(libc.found());
        assertTrue(libc.path().get().endsWith("libc.so.6"), libc.path().get());
        assertFalse(LibraryProbe.probe(List.of("libnot-a-real-library.so.9"), "printf").found());
        assertFalse(LibraryProbe.probe(List.of("libc.so.6"), "no_such_symbol_in_libc").found());
    }
}
