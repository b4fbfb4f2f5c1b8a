package moe4j.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import moe4j.tensor.DType;
import moe4j.tensor.Rng;
import moe4j.tensor.SafeTensors;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import picocli.CommandLine;

class VerifyCommandTest {
    private record Run(int exitCode, String out, String err) {
        JsonObject json() {
            List<String> lines = out.lines().toList();
            return JsonParser.parseString(lines.getLast()).getAsJsonObject();
        }
    }

    private static Run run(String... args) {
        CommandLine cli = Main.commandLine();
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        cli.setOut(new PrintWriter(out));
        cli.setErr(new PrintWriter(err));
        List<String> all = new ArrayList<>(List.of("verify"));
        all.addAll(List.of(args));
        int code = cli.execute(all.toArray(String[]::new));
        return new Run(code, out.toString(), err.toString());
    }

    // ------------------------------------------------------------------ generated layers

    static Stream<Arguments> grid() {
        List<Arguments> out = new ArrayList<>();
        String[][] variants = {
                {},
                {"--packed"},
                {"--shared", "--activation", "gelu"},
                {"--packed", "--capacity", "1.0", "--activation", "relu"},
                {"--gradient-scale", "--shared"},
                {"--router", "sigmoid_topk", "--packed", "--top-k", "3"},
                {"--dedup", "--top-k", "4", "--capacity", "1.0"},
                {"--dedup", "--packed", "--top-k", "3", "--shared"},
        };
        for (int p : new int[] {1, 2, 4}) {
            for (String[] v : variants) out.add(Arguments.of(p, v));
        }
        return out.stream();
    }

    @ParameterizedTest(name = "P={0} {1}")
    @MethodSource("grid")
    void passesOnSmallConfigurations(int p, String[] variant) {
        List<String> args = new ArrayList<>(List.of("--ep", Integer.toString(p), "--tokens", "5", "--dim", "8", "--hidden", "6", "--json"));
        args.addAll(List.of(variant));
        Run r = run(args.toArray(String[]::new));
        assertEquals(0, r.exitCode(), r.out() + r.err());
        JsonObject json = r.json();
        assertTrue(json.get("pass").getAsBoolean(), r.out());
        assertEquals(p, json.get("ep").getAsInt());
        // uneven token counts: 5, 6, 7, ...
        for (int i = 0; i < p; i++) assertEquals(5 + i, json.getAsJsonArray("tokensPerRank").get(i).getAsInt());
        List<String> v = List.of(variant);
        JsonObject perRank = json.getAsJsonObject("oracles").getAsJsonObject("per-rank");
        JsonObject global = json.getAsJsonObject("oracles").getAsJsonObject("global");
        assertEquals(!v.contains("--gradient-scale"), perRank.get("checked").getAsBoolean());
        assertEquals(!v.contains("--capacity"), global.get("checked").getAsBoolean());
        JsonObject checked = perRank.get("checked").getAsBoolean() ? perRank : global;
        JsonObject errors = checked.getAsJsonObject("errors");
        for (String category : List.of("output", "input gradient", "router gradient", "expert gradients")) {
            assertTrue(errors.get(category).getAsDouble() <= 1e-5, category + ": " + errors);
        }
        assertEquals(v.contains("--shared"), errors.has("shared-expert gradient"), errors.toString());
        assertTrue(r.out().contains("RESULT: PASS"), r.out());
        assertEquals(v.contains("--dedup"), json.getAsJsonObject("layer").get("dedup").getAsBoolean());
        assertTrue(r.out().contains("dedup=" + (v.contains("--dedup") ? "on" : "off")), r.out());
        if (p > 1) {
            long sent = 0;
            for (var rank : json.getAsJsonArray("ranks")) sent += rank.getAsJsonObject().get("bytesSent").getAsLong();
            assertTrue(sent > 0, "ranks exchange tokens: " + json.getAsJsonArray("ranks"));
        }
    }

    @Test
    void badArgumentsAreUsageErrorsWithTheSpecMessages() {
        Run r = run("--ep", "3", "--experts", "8");
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode());
        assertTrue(r.err().contains("num_experts (8) must be divisible by ep (3)"), r.err());
        r = run("--experts", "4", "--top-k", "5", "--ep", "1");
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode());
        // the options' names, not the config keys behind them
        assertTrue(r.err().contains("--top-k (5) must be <= --experts (4)"), r.err());
        r = run("--activation", "tanh");
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode());
        assertTrue(r.err().contains("unknown activation 'tanh'"), r.err());
        r = run("--gradient-scale", "--capacity", "1.0");
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode());
        assertTrue(r.err().contains("leaves no oracle to check"), r.err());
    }

    // ------------------------------------------------------------------ load and dump

    static final int D = 6;
    static final int H = 5;
    static final int E = 4;
    static final int K = 2;
    static final int[] TOKENS = {3, 4};

    /** A layer and two ranks' inputs under PyTorch's names, with fixed routing and upstream gradients. */
    static Map<String, Tensor> layerFile(boolean packed, boolean shared, boolean int64Indices) {
        Map<String, Tensor> t = new LinkedHashMap<>();
        Rng rng = new Rng(7);
        t.put("router.gate.weight", Tensor.randn(rng, 0.5, E, D));
        if (packed) { // relu experts: no gate
            t.put("up_w", Tensor.randn(rng, 0.5, E, D, H));
            t.put("down_w", Tensor.randn(rng, 0.5, E, H, D));
        } else { // SwiGLU experts
            for (int g = 0; g < E; g++) {
                t.put("experts." + g + ".gate_proj.weight", Tensor.randn(rng, 0.5, H, D));
                t.put("experts." + g + ".up_proj.weight", Tensor.randn(rng, 0.5, H, D));
                t.put("experts." + g + ".down_proj.weight", Tensor.randn(rng, 0.5, D, H));
            }
        }
        if (shared) {
            if (!packed) t.put("shared_expert.gate_proj.weight", Tensor.randn(rng, 0.5, H, D));
            t.put("shared_expert.up_proj.weight", Tensor.randn(rng, 0.5, H, D));
            t.put("shared_expert.down_proj.weight", Tensor.randn(rng, 0.5, D, H));
        }
        for (int r = 0; r < TOKENS.length; r++) {
            int n = TOKENS[r];
            t.put("x." + r, Tensor.randn(rng, 1.0, n, D));
            t.put("grad_out." + r, Tensor.randn(rng, 1.0, n, D));
            Tensor w = Tensor.rand(rng, 0.1, 1.0, n, K);
            t.put("weights." + r, w);
            int[] ids = new int[n * K];
            for (int i = 0; i < n; i++) {
                ids[i * K] = (i + r) % E;
                ids[i * K + 1] = (i + r + 1 + i % 2) % E; // distinct from the first slot
            }
            t.put("indices." + r, int64Indices ? int64(ids, n, K) : Tensor.ofInts(ids, n, K));
        }
        return t;
    }

    static Tensor int64(int[] values, int... shape) {
        Tensor t = Tensor.zeros(DType.I64, shape);
        for (int i = 0; i < values.length; i++) t.data().setAtIndex(ValueLayout.JAVA_LONG, i, values[i]);
        return t;
    }

    static int id(Tensor indices, int i) {
        return indices.dtype() == DType.I64 ? (int) indices.data().getAtIndex(ValueLayout.JAVA_LONG, i) : indices.getInt(i);
    }

    /** The layer's output for rank r, token by token in float64. */
    static double[] referenceOut(Map<String, Tensor> f, int r, boolean packed, boolean shared) {
        Tensor x = f.get("x." + r);
        Tensor w = f.get("weights." + r);
        Tensor idx = f.get("indices." + r);
        int n = x.dim(0);
        double[] out = new double[n * D];
        for (int t = 0; t < n; t++) {
            double[] xt = new double[D];
            for (int i = 0; i < D; i++) xt[i] = x.get((long) t * D + i);
            for (int k = 0; k < K; k++) {
                int g = id(idx, t * K + k);
                double[] y = packed ? packedRelu(f, g, xt) : swiglu(f, "experts." + g + ".", xt);
                for (int i = 0; i < D; i++) out[t * D + i] += w.get((long) t * K + k) * y[i];
            }
            if (shared) {
                double[] y = packed ? relu(f, "shared_expert.", xt) : swiglu(f, "shared_expert.", xt);
                for (int i = 0; i < D; i++) out[t * D + i] += y[i];
            }
        }
        return out;
    }

    /** (out, in) weight W times x. */
    static double[] matvec(Tensor w, double[] x) {
        int out = w.dim(0);
        int in = w.dim(1);
        double[] y = new double[out];
        for (int o = 0; o < out; o++) {
            for (int i = 0; i < in; i++) y[o] += w.get((long) o * in + i) * x[i];
        }
        return y;
    }

    static double[] swiglu(Map<String, Tensor> f, String prefix, double[] x) {
        double[] gate = matvec(f.get(prefix + "gate_proj.weight"), x);
        double[] up = matvec(f.get(prefix + "up_proj.weight"), x);
        double[] h = new double[H];
        for (int j = 0; j < H; j++) h[j] = gate[j] / (1 + Math.exp(-gate[j])) * up[j];
        return matvec(f.get(prefix + "down_proj.weight"), h);
    }

    static double[] relu(Map<String, Tensor> f, String prefix, double[] x) {
        double[] up = matvec(f.get(prefix + "up_proj.weight"), x);
        for (int j = 0; j < H; j++) up[j] = Math.max(0, up[j]);
        return matvec(f.get(prefix + "down_proj.weight"), up);
    }

    /** up_w[g] is (D, H), down_w[g] is (H, D): y = relu(x · up) · down. */
    static double[] packedRelu(Map<String, Tensor> f, int g, double[] x) {
        Tensor up = f.get("up_w");
        Tensor down = f.get("down_w");
        double[] h = new double[H];
        for (int j = 0; j < H; j++) {
            for (int i = 0; i < D; i++) h[j] += x[i] * up.get((long) g * D * H + (long) i * H + j);
            h[j] = Math.max(0, h[j]);
        }
        double[] y = new double[D];
        for (int i = 0; i < D; i++) {
            for (int j = 0; j < H; j++) y[i] += h[j] * down.get((long) g * H * D + (long) j * D + i);
        }
        return y;
    }

    @ParameterizedTest(name = "packed={0}")
    @org.junit.jupiter.params.provider.ValueSource(booleans = {false, true})
    void loadAndDumpRoundTrip(boolean packed, @TempDir Path dir) throws IOException {
        Map<String, Tensor> layer = layerFile(packed, true, packed);
        Path in = dir.resolve("layer.safetensors");
        Path dump = dir.resolve("dump.safetensors");
        SafeTensors.write(in, layer);
        List<String> args = new ArrayList<>(List.of("--load", in.toString(), "--top-k", "2", "--dump", dump.toString(), "--json"));
        if (packed) args.addAll(List.of("--activation", "relu"));
        Run r = run(args.toArray(String[]::new));
        assertEquals(0, r.exitCode(), r.out() + r.err());
        JsonObject json = r.json();
        assertTrue(json.get("pass").getAsBoolean());
        assertTrue(json.get("fixedRouting").getAsBoolean());
        assertEquals(TOKENS.length, json.get("ep").getAsInt(), "P comes from the number of x.{r}");
        assertTrue(r.out().contains("router gradient          n/a (fixed routing)"), r.out());
        assertEquals(packed ? "relu" : "silu", json.getAsJsonObject("layer").get("activation").getAsString());

        try (SafeTensors.Loaded d = SafeTensors.read(dump)) {
            for (int rank = 0; rank < TOKENS.length; rank++) {
                double[] expected = referenceOut(layer, rank, packed, true);
                double[] actual = d.tensor("out." + rank).toDoubleArray();
                assertEquals(expected.length, actual.length);
                double err = moe4j.parallel.EpVerifier.relativeError(actual, expected);
                assertTrue(err < 1e-5, "out." + rank + " against the float64 reference: " + err);
                assertEquals(List.of(TOKENS[rank], D), List.of(d.shape("grad_x." + rank)[0], d.shape("grad_x." + rank)[1]));
                assertTrue(d.contains("grad.shared_expert.up_proj.weight." + rank));
                assertTrue(d.contains("grad.shared_expert.down_proj.weight." + rank));
                assertFalse(d.contains("grad.router.gate.weight." + rank), "fixed routing: the router has no gradient");
            }
            if (packed) {
                assertEquals(List.of(E, D, H), List.of(d.shape("grad.up_w")[0], d.shape("grad.up_w")[1], d.shape("grad.up_w")[2]));
                assertEquals(List.of(E, H, D), List.of(d.shape("grad.down_w")[0], d.shape("grad.down_w")[1], d.shape("grad.down_w")[2]));
                assertFalse(d.contains("grad.gate_w"));
            } else {
                for (int g = 0; g < E; g++) {
                    for (String proj : List.of("gate_proj", "up_proj", "down_proj")) {
                        assertTrue(d.contains("grad.experts." + g + "." + proj + ".weight"), g + " " + proj + ": " + d.names());
                    }
                }
            }
        }
    }

    @Test
    void loadWithoutFixedRoutingChecksTheRouterAndDefaultsTheUpstreamGradient(@TempDir Path dir) throws IOException {
        Map<String, Tensor> layer = layerFile(false, false, false);
        for (int r = 0; r < TOKENS.length; r++) {
            layer.remove("indices." + r);
            layer.remove("weights." + r);
            layer.remove("grad_out." + r);
        }
        Path in = dir.resolve("layer.safetensors");
        SafeTensors.write(in, layer);
        Run r = run("--load", in.toString(), "--json");
        assertEquals(0, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("upstream gradient all ones"), r.out());
        JsonObject errors = r.json().getAsJsonObject("oracles").getAsJsonObject("per-rank").getAsJsonObject("errors");
        assertTrue(errors.has("router gradient"), errors.toString());
    }

    @Test
    void nonFiniteTensorsAreNamedInsteadOfFailingEveryCheck(@TempDir Path dir) throws IOException {
        Map<String, Tensor> layer = layerFile(false, false, false);
        layer.get("x.1").set(7, Float.POSITIVE_INFINITY);
        assertLoadError(dir, layer, "tensor 'x.1' holds Infinity at element 7 [1, 1]: every input must be finite");
        layer = layerFile(false, false, false);
        layer.get("experts.1.down_proj.weight").set(0, Float.NaN);
        assertLoadError(dir, layer, "tensor 'experts.1.down_proj.weight' holds NaN at element 0 [0, 0]");
    }

    @Test
    void dumpNeverOverwritesTheInputAndNamesAMissingFolder(@TempDir Path dir) throws IOException {
        Path in = dir.resolve("layer.safetensors");
        SafeTensors.write(in, layerFile(false, true, false));
        byte[] before = java.nio.file.Files.readAllBytes(in);
        Run r = run("--load", in.toString(), "--dump", in.toString());
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode(), r.out() + r.err());
        assertTrue(r.err().contains("--dump " + in + " is the --load input: it would be overwritten"), r.err());
        // the same file under another name
        r = run("--load", in.toString(), "--dump", dir.resolve(".").resolve("layer.safetensors").toString());
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode(), r.out() + r.err());
        assertTrue(r.err().contains("is the --load input"), r.err());
        assertArrayEquals(before, java.nio.file.Files.readAllBytes(in), "the input file is unchanged");

        Path missing = dir.resolve("no-such-folder/out.safetensors");
        r = run("--ep", "2", "--dump", missing.toString());
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode(), r.out() + r.err());
        assertEquals("moe4j verify: error: --dump " + missing + ": folder " + missing.getParent() + " does not exist"
                + " (see moe4j verify --help)", r.err().strip());
    }

    @Test
    void inconsistentFilesAreClearErrors(@TempDir Path dir) throws IOException {
        Map<String, Tensor> layer = layerFile(false, false, false);
        layer.put("x.1", Tensor.zeros(TOKENS[1], D + 1));
        assertLoadError(dir, layer, "tensor 'x.1' has shape [4, 7], expected [4, 6]");

        layer = layerFile(false, false, false);
        layer.put("indices.1", Tensor.ofInts(new int[] {0, 1, 2, 3, 0, 9, 1, 2}, TOKENS[1], K));
        assertLoadError(dir, layer, "tensor 'indices.1' holds expert id 9 at [2, 1], outside [0, 4)");

        layer = layerFile(true, false, false);
        layer.remove("down_w");
        assertLoadError(dir, layer, "has no tensor 'down_w'");

        layer = layerFile(false, false, false);
        layer.remove("experts.2.up_proj.weight");
        assertLoadError(dir, layer, "has no tensor 'experts.2.up_proj.weight'");

        layer = layerFile(false, false, false);
        layer.remove("weights.0");
        assertLoadError(dir, layer, "has no tensor 'weights.0'");

        layer = layerFile(true, false, false);
        layer.remove("x.0");
        assertLoadError(dir, layer, "has no inputs");

        layer = layerFile(false, false, false);
        Path in = dir.resolve("gated.safetensors");
        SafeTensors.write(in, layer);
        Run r = run("--load", in.toString(), "--activation", "gelu");
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode());
        assertTrue(r.err().contains("--activation must be silu"), r.err());
        r = run("--load", dir.resolve("absent.safetensors").toString());
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode());
        assertTrue(r.err().contains("no such file"), r.err());
        r = run("--load", in.toString(), "--ep", "1");
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode());
        assertTrue(r.err().contains("but --ep is 1"), r.err());
    }

    private static void assertLoadError(Path dir, Map<String, Tensor> layer, String expected) throws IOException {
        Path in = dir.resolve("bad.safetensors");
        SafeTensors.write(in, layer);
        Run r = run("--load", in.toString());
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode(), r.out() + r.err());
        assertTrue(r.err().contains(expected), "expected '" + expected + "' in: " + r.err());
    }

    @Test
    void ncclChoicesThatCannotRunAreUsageErrors() {
        Run r = run("--backend", "nccl");
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode());
        assertTrue(r.err().contains("add --device cuda --ep P"), r.err());
        r = run("--device", "cuda:1", "--ep", "2");
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode());
        assertTrue(r.err().contains("--device must be cuda (rank r runs on GPU r)"), r.err());
        r = run("--device", "cuda", "--ep", "2", "--backend", "local");
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode());
        assertTrue(r.err().contains("GPU ranks exchange rows by NCCL: use --backend nccl (or leave --backend out), got local"), r.err());
        r = run("--backend", "gloo");
        assertEquals(CommandLine.ExitCode.USAGE, r.exitCode());
        assertTrue(r.err().contains("local, mpi, nccl or auto"), r.err());
    }

    @Test
    void oneGpuWithoutEpIsTheSingleGpuCheckNotAnNcclRun() {
        // --device cuda alone compares the layer on one GPU with the CPU layer: no process group is involved,
        // so it must not be refused as an NCCL run (without a GPU it ends with the one-sentence "no GPU" error)
        Run r = run("--device", "cuda");
        assertFalse(r.err().contains("NCCL moves GPU memory"), r.err());
        assertTrue(r.exitCode() == 0 || r.exitCode() == CommandLine.ExitCode.USAGE, r.out() + r.err());
    }
}
