package moe4j.parallel;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import moe4j.nn.Activation;
import moe4j.nn.MoEConfig;
import moe4j.nn.RouterKind;
import moe4j.tensor.DType;
import moe4j.tensor.SafeTensors;
import moe4j.tensor.Tensor;

/**
 * A MoE layer with per-rank inputs in one safetensors file, under PyTorch's names and layouts, for
 * checking moe4j's expert parallelism against a PyTorch run, and the dump of what each rank computed.
 *
 * <p>Read: {@code router.gate.weight (E, D)}; the experts either as a list
 * {@code experts.{g}.{gate,up,down}_proj.weight} stored (out, in), or packed {@code up_w (E, D, H)},
 * {@code down_w (E, H, D)}, {@code gate_w (E, D, H)}; optionally {@code shared_expert.{gate,up,down}_proj.weight};
 * per rank r: {@code x.{r} (T_r, D)}, optionally {@code indices.{r} (T_r, K)} (I32 or I64 global expert ids)
 * with {@code weights.{r} (T_r, K)} to fix the routing, and {@code grad_out.{r} (T_r, D)} (else all ones).
 * D, H, E, the layout, the gate and the shared expert come from the names and shapes.
 *
 * <p>Dump: {@code out.{r}}, {@code grad_x.{r}}, {@code grad.{param}.{r}} for replicated parameters (router,
 * shared expert), and expert gradients under their global names: {@code grad.experts.{g}.up_proj.weight}
 * (list) or {@code grad.up_w (E, D, H)} reassembled from the ranks' slices (packed).
 */
public final class EpLayerFile {
    private EpLayerFile() {}

    /**
     * What the user chose on the command line; null where the file decides. Values given for what the
     * file also fixes (experts, dim, hidden, layout, shared expert) must agree with it.
     */
    public record Options(Integer ep, Integer topK, String activation, RouterKind router, double capacityFactor,
                          boolean gradientScale, Integer experts, Integer dim, Integer hidden, Boolean packed, Boolean shared) {}

    /** The problem the file describes, whether it gave the upstream gradients, and the tensors in it that play no part. */
    public record Loaded(EpVerifier.Problem problem, boolean gradOutGiven, List<String> ignored) {}

    private static final String ROUTER = "router.gate.weight";

    /** Reads and validates {@code file}; every error names the file, the tensor and what was expected. */
    public static Loaded load(Path file, Options opt) throws IOException {
        try (SafeTensors.Loaded f = SafeTensors.read(file)) {
            return new Reader(f, opt).read();
        }
    }

    private static final class Reader {
        private final SafeTensors.Loaded f;
        private final Options opt;
        private final TreeSet<String> unused;

        Reader(SafeTensors.Loaded f, Options opt) {
            this.f = f;
            this.opt = opt;
            this.unused = new TreeSet<>(f.names());
        }

        Loaded read() {
            int[] gate = shape(ROUTER, 2);
            int e = gate[0];
            int d = gate[1];
            boolean packed = f.contains("up_w");
            boolean list = f.names().stream().anyMatch(n -> n.startsWith("experts."));
            if (packed && list) throw bad("has both packed (up_w) and list (experts.{g}.*) expert weights: expected one layout");
            if (!packed && !list) {
                throw bad("has no expert weights: expected packed up_w (E, D, H), down_w (E, H, D)[, gate_w (E, D, H)]"
                        + " or list experts.{g}.{gate,up,down}_proj.weight");
            }
            Map<String, Tensor> params = new LinkedHashMap<>();
            params.put(ROUTER, floats(ROUTER));
            int h;
            boolean gated;
            if (packed) {
                h = shape("up_w", 3)[2];
                expect("up_w", e, d, h);
                expect("down_w", e, h, d);
                gated = f.contains("gate_w");
                if (gated) expect("gate_w", e, d, h);
                for (String n : gated ? List.of("up_w", "down_w", "gate_w") : List.of("up_w", "down_w")) params.put(n, floats(n));
            } else {
                h = shape("experts.0.up_proj.weight", 2)[0];
                gated = f.contains("experts.0.gate_proj.weight");
                for (int g = 0; g < e; g++) readExpert("experts." + g + ".", d, h, gated, params);
                for (String n : f.names()) {
                    if (n.startsWith("experts.") && !params.containsKey(n)) {
                        throw bad("has tensor '" + n + "', which is not one of the " + e + " experts' weights that "
                                + ROUTER + " " + Arrays.toString(gate) + " implies (experts.{0.." + (e - 1)
                                + "}.{" + (gated ? "gate," : "") + "up,down}_proj.weight)");
                    }
                }
            }
            boolean shared = f.contains("shared_expert.up_proj.weight");
            if (shared) readExpert("shared_expert.", d, h, gated, params);
            Activation act = activation(gated);
            agree("experts", opt.experts(), e);
            agree("dim", opt.dim(), d);
            agree("hidden", opt.hidden(), h);
            agree("packed", opt.packed(), packed);
            agree("shared", opt.shared(), shared);

            int ranks = countRanks();
            int p = opt.ep() == null ? ranks : opt.ep();
            if (p != ranks) throw bad("has inputs x.0 .. x." + (ranks - 1) + " for " + ranks + " ranks, but --ep is " + p);
            boolean fixed = f.contains("indices.0") || f.contains("weights.0");
            int k = opt.topK() != null ? opt.topK() : fixed && f.contains("indices.0") ? shape("indices.0", 2)[1] : 2;
            if (k > e) throw new IllegalArgumentException("--top-k (" + k + ") must be <= the number of experts in the file (" + e + ")");
            if (e % p != 0) throw new IllegalArgumentException("num_experts (" + e + ") must be divisible by ep (" + p + ")");
            boolean hasGradOut = f.contains("grad_out.0");

            List<Tensor> x = new ArrayList<>();
            List<Tensor> gradOut = new ArrayList<>();
            List<Tensor> weights = fixed ? new ArrayList<>() : null;
            List<Tensor> indices = fixed ? new ArrayList<>() : null;
            for (int r = 0; r < p; r++) {
                int t = shape("x." + r, 2)[0];
                expect("x." + r, t, d);
                x.add(floats("x." + r));
                if (hasGradOut) {
                    expect("grad_out." + r, t, d);
                    gradOut.add(floats("grad_out." + r));
                } else {
                    if (f.contains("grad_out." + r)) throw bad("has grad_out." + r + " but no grad_out.0: give the upstream gradient of every rank or of none");
                    gradOut.add(Tensor.full(1f, t, d));
                }
                if (fixed) {
                    expect("weights." + r, t, k);
                    expect("indices." + r, t, k);
                    weights.add(floats("weights." + r));
                    indices.add(expertIds("indices." + r, e));
                } else if (f.contains("indices." + r) || f.contains("weights." + r)) {
                    throw bad("has indices/weights for rank " + r + " but not for rank 0: fix the routing of every rank or of none");
                }
            }
            MoEConfig config = MoEConfig.builder(d, h, e, k).packed(packed).activation(act).sharedExperts(shared ? 1 : 0)
                    .router(opt.router()).capacityFactor(opt.capacityFactor())
                    .gradientScale(opt.gradientScale()).build();
            EpVerifier.Problem problem = new EpVerifier.Problem(config, p, x, gradOut, weights, indices, params);
            return new Loaded(problem, hasGradOut, List.copyOf(unused));
        }

        private void readExpert(String prefix, int d, int h, boolean gated, Map<String, Tensor> params) {
            if (gated) {
                expect(prefix + "gate_proj.weight", h, d);
                params.put(prefix + "gate_proj.weight", floats(prefix + "gate_proj.weight"));
            } else if (f.contains(prefix + "gate_proj.weight")) {
                throw bad("has " + prefix + "gate_proj.weight but the other experts have no gate: every expert must have one or none");
            }
            expect(prefix + "up_proj.weight", h, d);
            expect(prefix + "down_proj.weight", d, h);
            params.put(prefix + "up_proj.weight", floats(prefix + "up_proj.weight"));
            params.put(prefix + "down_proj.weight", floats(prefix + "down_proj.weight"));
        }

        /** silu when the experts have a gate; else gelu or relu (gelu unless chosen). */
        private Activation activation(boolean gated) {
            String chosen = opt.activation();
            if (gated) {
                if (chosen != null && !chosen.equals("silu")) {
                    throw bad("has gated experts (gate weights), which are SwiGLU: --activation must be silu, got " + chosen);
                }
                return Activation.SILU;
            }
            if (chosen == null) return Activation.GELU;
            Activation a = Activation.parse(chosen);
            if (a.gated()) throw bad("has experts without gate weights: --activation must be gelu or relu, got silu (SwiGLU needs a gate)");
            return a;
        }

        /** The number of ranks: x.0, x.1, ... without gaps. */
        private int countRanks() {
            int n = 0;
            while (f.contains("x." + n)) n++;
            if (n == 0) throw bad("has no inputs: expected x.0 (T, D), x.1, ... one per rank");
            for (String name : f.names()) {
                if (name.matches("(x|grad_out|indices|weights)\\.\\d+")) {
                    int r = Integer.parseInt(name.substring(name.lastIndexOf('.') + 1));
                    if (r >= n) throw bad("has '" + name + "' but inputs only for ranks 0.." + (n - 1) + " (x.0 .. x." + (n - 1) + ")");
                }
            }
            return n;
        }

        private int[] shape(String name, int rank) {
            if (!f.contains(name)) throw bad("has no tensor '" + name + "'");
            int[] s = f.shape(name);
            if (s.length != rank) {
                throw bad("tensor '" + name + "' has shape " + Arrays.toString(s) + ", expected " + rank + " dimensions");
            }
            return s;
        }

        private void expect(String name, int... dims) {
            if (!f.contains(name)) throw bad("has no tensor '" + name + "': expected " + Arrays.toString(dims));
            int[] s = f.shape(name);
            if (!Arrays.equals(s, dims)) throw bad("tensor '" + name + "' has shape " + Arrays.toString(s) + ", expected " + Arrays.toString(dims));
        }

        private Tensor floats(String name) {
            DType t = f.dtype(name);
            if (!t.isFloating()) throw bad("tensor '" + name + "' is " + t + ", expected a floating type (F32, BF16, F16)");
            unused.remove(name);
            Tensor v = f.tensorAs(name, DType.F32);
            // a NaN or infinity would make every check fail without saying why: name it instead
            for (long i = 0; i < v.numel(); i++) {
                float x = v.get(i);
                if (!Float.isFinite(x)) {
                    throw bad("tensor '" + name + "' holds " + x + " at element " + i + " " + Arrays.toString(index(v.shape(), i))
                            + ": every input must be finite");
                }
            }
            return v;
        }

        /** The multi-index of flat element {@code flat} in a row-major tensor of {@code shape}. */
        private static long[] index(int[] shape, long flat) {
            long[] at = new long[shape.length];
            for (int d = shape.length - 1; d >= 0; d--) {
                at[d] = flat % shape[d];
                flat /= shape[d];
            }
            return at;
        }

        private Tensor expertIds(String name, int e) {
            DType t = f.dtype(name);
            if (t != DType.I32 && t != DType.I64) throw bad("tensor '" + name + "' is " + t + ", expected I32 or I64 expert ids");
            unused.remove(name);
            Tensor ids = t == DType.I64 ? i64ToI32(name, e) : f.tensorAs(name, DType.I32);
            int k = ids.dim(1);
            int[] v = ids.toIntArray();
            for (int i = 0; i < v.length; i++) {
                if (v[i] < 0 || v[i] >= e) {
                    throw bad("tensor '" + name + "' holds expert id " + v[i] + " at [" + i / k + ", " + i % k
                            + "], outside [0, " + e + ")");
                }
            }
            return ids;
        }

        /** I64 ids narrowed to I32, naming the tensor if one does not fit. */
        private Tensor i64ToI32(String name, int e) {
            try {
                return f.tensorAs(name, DType.I32);
            } catch (IllegalArgumentException ex) {
                throw bad("tensor '" + name + "' holds an expert id outside [0, " + e + "): " + ex.getMessage());
            }
        }

        private <T> void agree(String what, T given, T fromFile) {
            if (given != null && !given.equals(fromFile)) {
                throw bad("fixes " + what + " = " + fromFile + " but --" + what + " says " + given);
            }
        }

        private IllegalArgumentException bad(String what) {
            return new IllegalArgumentException("verify --load: " + f.file() + " " + what);
        }
    }

    // ------------------------------------------------------------------ dump

    /** Writes every rank's output and gradients of {@code report} to {@code file} (names in the class comment). */
    public static void dump(Path file, EpVerifier.Report report) throws IOException {
        Map<String, Tensor> out = new LinkedHashMap<>();
        Map<String, List<EpVerifier.Values>> packedSlices = new LinkedHashMap<>();
        for (EpVerifier.RankRun run : report.ranks()) {
            int r = run.rank();
            out.put("out." + r, run.out().toTensor());
            out.put("grad_x." + r, run.gradX().toTensor());
            run.grads().forEach((name, g) -> {
                if (EpVerifier.Category.ofParameter(name) != EpVerifier.Category.EXPERT_GRADIENTS) {
                    out.put("grad." + name + "." + r, g.toTensor());
                } else if (name.startsWith("experts.")) {
                    out.put("grad." + name, g.toTensor()); // list experts carry their global index
                } else {
                    packedSlices.computeIfAbsent(name, n -> new ArrayList<>()).add(g);
                }
            });
        }
        // ranks own contiguous blocks in rank order, so their slices stack into the global tensor
        packedSlices.forEach((name, slices) -> out.put("grad." + name, stack(slices)));
        Map<String, String> meta = new LinkedHashMap<>();
        MoEConfig c = report.problem().config();
        meta.put("ep", Integer.toString(report.problem().ep()));
        meta.put("config", c.toString());
        meta.put("pass", Boolean.toString(report.pass()));
        SafeTensors.write(file, out, meta);
    }

    private static Tensor stack(List<EpVerifier.Values> slices) {
        int[] shape = slices.getFirst().shape().clone();
        int total = 0;
        int length = 0;
        for (EpVerifier.Values v : slices) {
            total += v.shape()[0];
            length += v.data().length;
        }
        double[] all = new double[length];
        int at = 0;
        for (EpVerifier.Values v : slices) {
            System.arraycopy(v.data(), 0, all, at, v.data().length);
            at += v.data().length;
        }
        shape[0] = total;
        return Tensor.of(all, shape);
    }
}
