package moe4j.nn;

import java.util.ArrayList;
import java.util.List;
import moe4j.autograd.Autograd;
import moe4j.autograd.Profiler;
import moe4j.distributed.ProcessGroup;
import moe4j.ops.GroupedMatmul;
import moe4j.ops.Ops;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * The Mixture-of-Experts feed-forward layer:
 * <pre>
 *   x_TD → router → (weights_TK, indices_TK) → capacity (drop overflow) → dispatcher → out_TD (+ shared(x))
 * </pre>
 * Experts are stored either as a list of {@link Expert} modules (named by <em>global</em> index,
 * {@code experts.{g}.up_proj.weight}) or packed as {@code up_w (E, D, H)}, {@code down_w (E, H, D)},
 * {@code gate_w (E, D, H)}; both run through the same ragged grouped GEMM.
 *
 * <p>The expert-parallel metadata ({@link #epWorldSize()}, {@link #localExpertStart()},
 * {@link #numLocalExperts()}) are plain fields: without expert parallelism this rank holds all
 * experts. {@code ExpertParallel.apply} keeps a slice of them and installs its dispatcher.
 */
public final class MoEMLP extends Module {
    private final MoEConfig config;
    private final Router router;
    private final Module expertList;
    private final Expert sharedExpert;
    private final Linear sharedExpertGate;
    private TokenDispatcher dispatcher = LocalDispatcher.INSTANCE;

    private int epWorldSize = 1;
    private ProcessGroup epGroup;
    private int layerIndex;
    private int localExpertStart = 0;
    private int numLocalExperts;

    private MoEMLP(MoEConfig config) {
        this.config = config;
        this.numLocalExperts = config.numExperts();
        int d = config.dim();
        int h = config.hidden();
        int e = config.numExperts();
        this.router = registerModule("router", config.router().equals(MoEConfig.SOFTMAX_TOPK)
                ? new SoftmaxTopKRouter(d, e, config.topK(), config.normalizeTopK())
                : new SigmoidTopKRouter(d, e, config.topK(), config.biasUpdateRate(), config.biasEmaDecay(),
                        config.biasSchedule(), config.sequenceAuxLossWeight(), config.routerGroups(), config.routerTopKGroups(),
                        config.normalizeTopK(), config.routedScale()));
        if (config.packed()) {
            this.expertList = null;
            registerParameter("up_w", persistentZeros(e, d, h));
            registerParameter("down_w", persistentZeros(e, h, d));
            if (config.activation().gated()) registerParameter("gate_w", persistentZeros(e, d, h));
        } else {
            this.expertList = registerModule("experts", new ExpertList());
            for (int g = 0; g < e; g++) expertList.registerModule(Integer.toString(g), new Expert(d, h, config.activation()));
        }
        this.sharedExpert = config.sharedExperts() > 0
                ? registerModule("shared_expert", new Expert(d, config.sharedExpertHidden(), config.activation())) : null;
        this.sharedExpertGate = config.sharedExpertGate() ? registerModule("shared_expert_gate", new Linear(d, 1)) : null;
    }

    /** A layer initialised from {@code config.seed()}: expert g from its own stream, whatever the layout or EP size. */
    public static MoEMLP build(MoEConfig config) {
        MoEMLP layer = new MoEMLP(config);
        layer.initialize();
        return layer;
    }

    /** A layer with zero weights, to be filled from a checkpoint. */
    public static MoEMLP uninitialized(MoEConfig config) {
        return new MoEMLP(config);
    }

    private void initialize() {
        double std = config.initStd();
        double downStd = std / Math.sqrt(2.0 * config.numLayers());
        router.init(Rng.forStream(config.seed(), -1), std);
        if (sharedExpert != null) sharedExpert.init(Rng.forStream(config.seed(), -2), std, downStd);
        if (sharedExpertGate != null) sharedExpertGate.init(Rng.forStream(config.seed(), -3), std);
        int d = config.dim();
        int h = config.hidden();
        for (int g = 0; g < config.numExperts(); g++) {
            // The reference order for every layout: gate (H, D), up (H, D), down (D, H), each stored (out, in).
            Expert reference = new Expert(d, h, config.activation()).init(Rng.forStream(config.seed(), g), std, downStd);
            setExpertWeights(g, reference);
        }
    }

    /** Copies one expert's (out, in) weights into global expert {@code g}'s storage, whatever the layout. */
    private void setExpertWeights(int g, Expert source) {
        int local = g - localExpertStart;
        if (config.packed()) {
            transposeInto(source.upProj().weight(), upW(), local);
            transposeInto(source.downProj().weight(), downW(), local);
            if (source.gateProj() != null) transposeInto(source.gateProj().weight(), gateW(), local);
        } else {
            Expert target = localExperts().get(local);
            target.upProj().weight().copyFrom(source.upProj().weight());
            target.downProj().weight().copyFrom(source.downProj().weight());
            if (source.gateProj() != null) target.gateProj().weight().copyFrom(source.gateProj().weight());
        }
    }

    /** packed[slot] (in, out) = linearᵀ where linear is (out, in). */
    private static void transposeInto(Tensor linear, Tensor packed, int slot) {
        int out = linear.dim(0);
        int in = linear.dim(1);
        long base = (long) slot * in * out;
        for (int o = 0; o < out; o++) {
            for (int i = 0; i < in; i++) packed.set(base + (long) i * out + o, linear.get((long) o * in + i));
        }
    }

    // ---------------------------------------------------------------- forward

    /** {@code x} of shape (..., D) → the same shape. */
    public Tensor forward(Tensor x) {
        int d = config.dim();
        if (x.rank() < 1 || x.dim(-1) != d) {
            throw new IllegalArgumentException("MoEMLP: input must be (..., " + d + "), got " + x.shapeString());
        }
        Tensor flat = x.rank() == 2 ? x : Ops.reshape(x, -1, d);
        if (config.checkFinite()) checkFinite(flat);
        RouterOutput routed;
        Tensor indices;
        try (var p = Profiler.phase("router")) {
            routed = router.route(flat);
            indices = config.capacityFactor() > 0 ? dropOverflow(routed.indices()) : routed.indices();
        }
        Tensor out = routedAndShared(flat, routed.weights(), indices);
        return x.rank() == 2 ? out : Ops.reshape(out, x.shape());
    }

    /**
     * The layer on {@code x_TD} with a given routing instead of the router's: {@code weights_TK} and global
     * expert {@code indices_TK}, capacity dropping applied as in {@link #forward}. For checking the layer
     * against an outside reference that fixes the routing; the router takes no part (and gets no gradient).
     */
    public Tensor forwardWithRouting(Tensor x, Tensor weights, Tensor indices) {
        int k = config.topK();
        checkRoutingInputs("MoEMLP.forwardWithRouting", x, weights, indices);
        int[] ids = indices.toIntArray();
        for (int i = 0; i < ids.length; i++) {
            if (ids[i] < 0 || ids[i] >= config.numExperts()) {
                throw new IllegalArgumentException("MoEMLP.forwardWithRouting: indices[" + i / k + ", " + i % k + "] = " + ids[i]
                        + " is not an expert id in [0, " + config.numExperts() + ")");
            }
        }
        if (config.checkFinite()) checkFinite(x);
        return routedAndShared(x, weights, config.capacityFactor() > 0 ? dropOverflow(indices) : indices);
    }

    /**
     * Checks what a dispatcher is handed: {@code x} (T, D) float32, {@code weights} (T, K) float32 and
     * {@code indices} (T, K) int32 with this layer's D and K. Expert ids are checked where they are read.
     */
    public void checkRoutingInputs(String op, Tensor x, Tensor weights, Tensor indices) {
        int d = config.dim();
        int k = config.topK();
        x.requireDType(moe4j.tensor.DType.F32, op);
        weights.requireDType(moe4j.tensor.DType.F32, op);
        indices.requireDType(moe4j.tensor.DType.I32, op);
        if (x.rank() != 2 || x.dim(1) != d) {
            throw new IllegalArgumentException(op + ": x must be (T, " + d + "), got " + x.shapeString());
        }
        int t = x.dim(0);
        if (weights.rank() != 2 || weights.dim(0) != t || weights.dim(1) != k
                || indices.rank() != 2 || indices.dim(0) != t || indices.dim(1) != k) {
            throw new IllegalArgumentException(op + ": weights and indices must be (" + t + ", " + k
                    + ") for x " + x.shapeString() + ", got " + weights.shapeString() + " and " + indices.shapeString());
        }
    }

    /** The routed experts through the dispatcher, plus the shared expert. */
    private Tensor routedAndShared(Tensor flat, Tensor weights, Tensor indices) {
        Tensor out = dispatcher.dispatchAndCompute(flat, weights, indices, this,
                config.gradientScale() && isTraining());
        if (sharedExpert != null) {
            try (var p = Profiler.phase("shared expert")) {
                Tensor shared = sharedExpert.forward(flat);
                if (sharedExpertGate != null) shared = Ops.mulRows(shared, Ops.sigmoid(sharedExpertGate.forward(flat)));
                out = Ops.add(out, shared);
            }
        }
        return out;
    }

    private static void checkFinite(Tensor x) {
        int w = x.rowWidth();
        for (int r = 0; r < x.rowCount(); r++) {
            for (int c = 0; c < w; c++) {
                float v = x.get((long) r * w + c);
                if (!Float.isFinite(v)) {
                    throw new IllegalArgumentException("MoEMLP: input row " + r + " column " + c + " is " + v
                            + " (finite values expected; the check is on)");
                }
            }
        }
    }

    /** The layer's capacity for T tokens: {@code max(1, ceil(T·K/E · cf))}. */
    public int capacity(int tokens) {
        return Math.max(1, (int) Math.ceil((double) tokens * config.topK() / config.numExperts() * config.capacityFactor()));
    }

    /**
     * A copy of {@code indices_TK} where, for each slot k and each expert, the entries beyond the first
     * {@code capacity} tokens (in token order) are −1: dropped, never sent nor computed.
     */
    public Tensor dropOverflow(Tensor indices) {
        int t = indices.dim(0);
        int k = indices.dim(1);
        int cap = capacity(t);
        int[] idx = indices.toIntArray();
        int[][] used = new int[k][config.numExperts()];
        for (int i = 0; i < t; i++) {
            for (int s = 0; s < k; s++) {
                int e = idx[i * k + s];
                if (used[s][e]++ >= cap) idx[i * k + s] = -1;
            }
        }
        return Tensor.ofInts(idx, t, k);
    }

    /**
     * Runs this rank's experts over {@code rows} grouped by local expert ({@code rowsPerLocalExpert[j]}
     * consecutive rows for local expert j) as ragged grouped GEMMs; the result keeps the row order.
     */
    public Tensor computeLocalExperts(Tensor rows, int[] rowsPerLocalExpert) {
        if (rowsPerLocalExpert.length != numLocalExperts) {
            throw new IllegalArgumentException("computeLocalExperts: " + rowsPerLocalExpert.length + " group sizes for "
                    + numLocalExperts + " local experts");
        }
        Activation act = config.activation();
        Tensor up;
        Tensor gate = null;
        try (var p = Profiler.phase(GROUPED_GEMM_PHASE)) {
            up = expertProduct(rows, rowsPerLocalExpert, "up");
            if (act.gated()) gate = expertProduct(rows, rowsPerLocalExpert, "gate");
        }
        Tensor hidden;
        try (var p = Profiler.phase("activation")) {
            hidden = act.gated() ? Ops.swiglu(gate, up) : act.apply(up);
        }
        try (var p = Profiler.phase(GROUPED_GEMM_PHASE)) {
            return expertProduct(hidden, rowsPerLocalExpert, "down");
        }
    }

    /** The profiler phase of the experts' grouped products, forward and backward. */
    public static final String GROUPED_GEMM_PHASE = "grouped gemm";

    /** One of the three expert projections ("gate", "up", "down") of the local experts, over grouped rows. */
    private Tensor expertProduct(Tensor rows, int[] rowsPerLocalExpert, String projection) {
        if (config.packed()) return GroupedMatmul.packed(rows, rowsPerLocalExpert, parameter(projection + "_w"));
        List<Tensor> weights = new ArrayList<>();
        for (Expert e : localExperts()) {
            weights.add(switch (projection) {
                case "gate" -> e.gateProj().weight();
                case "up" -> e.upProj().weight();
                default -> e.downProj().weight();
            });
        }
        return GroupedMatmul.list(rows, rowsPerLocalExpert, weights);
    }

    /**
     * Gradient scaling factors, one per row of the grouped layout: {@code avg / n_e} with
     * {@code n_e = rowsPerGroup[e]} and {@code avg = totalEntries / numExperts}.
     */
    public static Tensor gradientScaleRows(int[] rowsPerGroup, long totalEntries, int numExperts) {
        int n = 0;
        for (int c : rowsPerGroup) n += c;
        Tensor factors = Tensor.zeros(n);
        double avg = (double) totalEntries / numExperts;
        int row = 0;
        for (int c : rowsPerGroup) {
            for (int i = 0; i < c; i++) factors.set(row++, (float) (avg / c));
        }
        return factors;
    }

    // ---------------------------------------------------------------- expert parallelism hooks

    /**
     * Keeps only global experts {@code [start, start + count)}: list experts keep their objects, packed
     * weights become new parameters holding the slice. Called by {@code ExpertParallel.apply}.
     */
    public void keepExperts(int start, int count) {
        if (start < localExpertStart || count < 0 || start + count > localExpertStart + numLocalExperts) {
            throw new IllegalArgumentException("keepExperts: [" + start + ", " + (start + count) + ") is not within this rank's experts ["
                    + localExpertStart + ", " + (localExpertStart + numLocalExperts) + ")");
        }
        int from = start - localExpertStart;
        if (config.packed()) {
            for (String name : config.activation().gated() ? new String[] {"up_w", "down_w", "gate_w"} : new String[] {"up_w", "down_w"}) {
                Tensor full = parameter(name);
                Tensor slice = MemoryScope.persistent(() -> full.rows(from, from + count).copy());
                replaceParameter(name, slice);
            }
        } else {
            for (int g = localExpertStart; g < localExpertStart + numLocalExperts; g++) {
                if (g < start || g >= start + count) expertList.removeModule(Integer.toString(g));
            }
        }
        localExpertStart = start;
        numLocalExperts = count;
    }

    /** Installs a dispatcher together with the expert-parallel metadata it works with. */
    public void setExpertParallel(TokenDispatcher dispatcher, ProcessGroup group, int worldSize, int layerIndex) {
        this.dispatcher = dispatcher;
        this.epGroup = group;
        this.epWorldSize = worldSize;
        this.layerIndex = layerIndex;
    }

    /** This layer's position among the model's MoE layers (set by expert parallelism; ranks check they agree). */
    public int layerIndex() {
        return layerIndex;
    }

    // ---------------------------------------------------------------- accessors

    public MoEConfig config() {
        return config;
    }

    public Router router() {
        return router;
    }

    public Expert sharedExpert() {
        return sharedExpert;
    }

    /** The shared expert's sigmoid gate (1, D), or null when its output is added ungated. */
    public Linear sharedExpertGate() {
        return sharedExpertGate;
    }

    public TokenDispatcher dispatcher() {
        return dispatcher;
    }

    public int numExperts() {
        return config.numExperts();
    }

    public int numLocalExperts() {
        return numLocalExperts;
    }

    public int localExpertStart() {
        return localExpertStart;
    }

    public int epWorldSize() {
        return epWorldSize;
    }

    public ProcessGroup epGroup() {
        return epGroup;
    }

    public boolean packed() {
        return config.packed();
    }

    /** The parameters of this rank's experts (partitioned by expert parallelism), not the router's or shared expert's. */
    public List<Tensor> expertParameters() {
        List<Tensor> out = new ArrayList<>();
        if (config.packed()) {
            namedParameters().forEach((name, t) -> {
                if (name.endsWith("_w")) out.add(t);
            });
        } else {
            out.addAll(expertList.parameters());
        }
        return out;
    }

    /** The list-layout experts this rank holds, in global order. */
    public List<Expert> localExperts() {
        if (expertList == null) throw new IllegalStateException("packed layer: experts are the up_w/down_w/gate_w tensors");
        List<Expert> out = new ArrayList<>();
        for (Module m : expertList.children().values()) out.add((Expert) m);
        return out;
    }

    public Tensor upW() {
        return parameter("up_w");
    }

    public Tensor downW() {
        return parameter("down_w");
    }

    public Tensor gateW() {
        return parameter("gate_w");
    }

    /** The same function in the packed layout (copied weights, same router and shared expert weights). */
    public MoEMLP toPacked() {
        if (config.packed()) throw new IllegalStateException("layer is already packed");
        if (numLocalExperts != config.numExperts()) throw new IllegalStateException("convert before partitioning the experts");
        MoEMLP packed = new MoEMLP(config.toBuilder().packed(true).build());
        Autograd.noGrad(() -> {
            List<Expert> experts = localExperts();
            for (int g = 0; g < experts.size(); g++) packed.setExpertWeights(g, experts.get(g));
            var src = namedParameters();
            packed.namedParameters().forEach((name, t) -> {
                if (src.containsKey(name)) t.copyFrom(src.get(name));
            });
            return null;
        });
        return packed;
    }

    /** The container of list-layout experts; children are named by global expert index. */
    private static final class ExpertList extends Module {}
}
