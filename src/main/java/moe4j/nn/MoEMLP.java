package moe4j.nn;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.stream.IntStream;
import moe4j.autograd.Autograd;
import moe4j.autograd.Profiler;
import moe4j.distributed.ProcessGroup;
import moe4j.kernels.Kernels;
import moe4j.ops.GroupedMatmul;
import moe4j.ops.Ops;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * The Mixture-of-Experts feed-forward layer:
 * <pre>
 *   x_TD → router → (weights_TK, indices_TK) → capacity (drop overflow)
 *        → dispatcher.dispatch → this layer's experts (+ gradient scaling) → dispatcher.combine → out_TD (+ shared(x))
 * </pre>
 * Experts are stored either as a list of {@link Expert} modules (named by <em>global</em> index,
 * {@code experts.{g}.up_proj.weight}) or packed as {@code up_w (E, D, H)}, {@code down_w (E, H, D)},
 * {@code gate_w (E, D, H)}; both run through the same ragged grouped GEMM.
 *
 * <p>The expert-parallel metadata ({@link #epSize()}, {@link #epRank()}, {@link #epGroup()},
 * {@link #numLocalExperts()}, {@link #localExpertStart()}) are plain fields: without expert parallelism
 * this rank holds all experts and its dispatcher is a {@link LocalDispatcher}.
 * {@code ExpertParallel.apply} keeps this rank's block ({@link #partitionExperts}) and installs an
 * all-to-all dispatcher ({@link #setDispatcher}); the layer's forward is the same either way.
 */
public final class MoEMLP extends Module {
    private final MoEConfig config;
    private final Router router;
    private final Module expertList;
    private final Expert sharedExpert;
    private final Linear sharedExpertGate;
    private TokenDispatcher<?> dispatcher;

    private ProcessGroup epGroup;
    private int epSize = 1;
    private int epRank = 0;
    private int localExpertStart = 0;
    private int numLocalExperts;

    private MoEMLP(MoEConfig config) {
        this(config, 0, config.numExperts());
    }

    /** A layer holding global experts {@code [firstExpert, firstExpert + count)}, zero weights. */
    private MoEMLP(MoEConfig config, int firstExpert, int count) {
        if (firstExpert < 0 || count < 1 || firstExpert + count > config.numExperts()) {
            throw new IllegalArgumentException("MoEMLP: experts [" + firstExpert + ", " + (firstExpert + count)
                    + ") are not a non-empty block of the layer's " + config.numExperts() + " experts");
        }
        this.config = config;
        this.localExpertStart = firstExpert;
        this.numLocalExperts = count;
        this.dispatcher = new LocalDispatcher(config.numExperts());
        int d = config.dim();
        int h = config.hidden();
        int e = config.numExperts();
        this.router = registerModule("router", switch (config.router()) {
            case SOFTMAX_TOPK -> new SoftmaxTopKRouter(d, e, config.topK(), config.normalizeTopK());
            case SIGMOID_TOPK -> new SigmoidTopKRouter(d, e, config.topK(), config.biasUpdateRate(), config.biasEmaDecay(),
                    config.biasSchedule(), config.sequenceAuxLossWeight(), config.routerGroups(), config.routerTopKGroups(),
                    config.normalizeTopK(), config.routedScale());
        });
        if (config.packed()) {
            this.expertList = null;
            for (ExpertProjection projection : packedProjections()) {
                registerParameter(projection.packedName(), projection == ExpertProjection.DOWN
                        ? persistentZeros(count, h, d) : persistentZeros(count, d, h));
            }
        } else {
            this.expertList = registerModule("experts", new ExpertList());
            for (int g = firstExpert; g < firstExpert + count; g++) {
                expertList.registerModule(Integer.toString(g), new Expert(d, h, config.activation()));
            }
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

    /**
     * The part of the layer one expert-parallel rank keeps: global experts {@code [firstExpert, firstExpert
     * + count)}, each with the very weights {@link #build} gives it, and the whole router and shared expert,
     * without making the other experts first (at the sizes of large layers that saves minutes of host work
     * and the memory of the whole layer). {@code ExpertParallel.apply} then keeps the block as it is when it
     * is this rank's.
     */
    public static MoEMLP buildExperts(MoEConfig config, int firstExpert, int count) {
        MoEMLP layer = new MoEMLP(config, firstExpert, count);
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
        // Every expert from its own stream, so the experts are drawn in parallel and each gets the same values
        // whatever the thread count, the layout or the block this layer holds.
        IntStream.range(localExpertStart, localExpertStart + numLocalExperts).parallel()
                .forEach(g -> initializeExpert(g, std, downStd));
    }

    /**
     * Draws global expert {@code g}'s weights in the reference order of every layout ({@link Expert#init}):
     * gate (H, D), up (H, D), down (D, H), each (out, in) row by row, and stores them in its layout.
     */
    private void initializeExpert(int g, double std, double downStd) {
        Rng rng = Rng.forStream(config.seed(), g);
        int local = g - localExpertStart;
        Expert target = config.packed() ? null : localExperts().get(local);
        for (ExpertProjection projection : ExpertProjection.forActivation(config.activation())) {
            boolean down = projection == ExpertProjection.DOWN;
            int out = down ? config.dim() : config.hidden();
            int in = down ? config.hidden() : config.dim();
            double scale = down ? downStd : std;
            float[] weight = new float[out * in];
            for (int i = 0; i < weight.length; i++) weight[i] = (float) (rng.nextGaussian() * scale);
            if (target != null) {
                MemorySegment.copy(weight, 0, projection.in(target).weight().data(), ValueLayout.JAVA_FLOAT, 0, weight.length);
            } else {
                transposeInto(weight, out, in, parameter(projection.packedName()).data(), (long) local * in * out);
            }
        }
    }

    /** packed[base + i·out + o] = linear[o·in + i]: an (out, in) matrix stored (in, out), in tiles that stay in cache. */
    private static void transposeInto(float[] linear, int out, int in, MemorySegment packed, long base) {
        final int tile = 64;
        for (int i0 = 0; i0 < in; i0 += tile) {
            for (int o0 = 0; o0 < out; o0 += tile) {
                for (int i = i0; i < Math.min(in, i0 + tile); i++) {
                    for (int o = o0; o < Math.min(out, o0 + tile); o++) {
                        packed.setAtIndex(ValueLayout.JAVA_FLOAT, base + (long) i * out + o, linear[o * in + i]);
                    }
                }
            }
        }
    }

    /** Copies one expert's (out, in) weights into global expert {@code g}'s storage, whatever the layout. */
    private void setExpertWeights(int g, Expert source) {
        int local = g - localExpertStart;
        Expert target = config.packed() ? null : localExperts().get(local);
        for (ExpertProjection projection : ExpertProjection.forActivation(config.activation())) {
            Tensor weight = projection.in(source).weight();
            if (target == null) {
                transposeInto(weight.toFloatArray(), weight.dim(0), weight.dim(1), parameter(projection.packedName()).data(),
                        (long) local * weight.numel());
            } else {
                projection.in(target).weight().copyFrom(weight);
            }
        }
    }

    /**
     * The packed weight tensors in the order they are registered, which is the order of the optimizer's
     * state and of the checkpoint: up_w, down_w, then gate_w for gated experts.
     */
    private List<ExpertProjection> packedProjections() {
        return config.activation().gated()
                ? List.of(ExpertProjection.UP, ExpertProjection.DOWN, ExpertProjection.GATE)
                : List.of(ExpertProjection.UP, ExpertProjection.DOWN);
    }

    // ---------------------------------------------------------------- forward

    /** {@code x} of shape (..., D) → the same shape. */
    public Tensor forward(Tensor x) {
        return wrapped(x, this::compute);
    }

    private Tensor compute(Tensor x) {
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
        int[] ids = indices.to(Device.CPU).toIntArray(); // an explicit copy: this entry point is for verification
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
     * Checks a routing handed in from outside ({@link #forwardWithRouting}, {@code ExpertParallel.dispatchAndCompute})
     * before any of it is dispatched: {@code x} (T, D) float32, {@code weights} (T, K) float32 and
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
    private Tensor routedAndShared(Tensor x_TD, Tensor weights_TK, Tensor indices_TK) {
        Tensor out_TD = dispatchComputeCombine(dispatcher, x_TD, weights_TK, indices_TK, config.gradientScale() && isTraining());
        if (sharedExpert != null) {
            try (var p = Profiler.phase("shared expert")) {
                Tensor shared_TD = sharedExpert.forward(x_TD);
                if (sharedExpertGate != null) shared_TD = Ops.mulRows(shared_TD, Ops.sigmoid(sharedExpertGate.forward(x_TD)));
                out_TD = Ops.add(out_TD, shared_TD);
            }
        }
        return out_TD;
    }

    /** Route → dispatch → this layer's experts → combine, whichever dispatcher is installed. */
    private <M> Tensor dispatchComputeCombine(TokenDispatcher<M> dispatcher, Tensor x_TD, Tensor weights_TK, Tensor indices_TK,
                                              boolean gradientScale) {
        Dispatched<M> dispatched = dispatcher.dispatch(x_TD, indices_TK);
        Tensor expertOut_RD = computeExperts(dispatched, gradientScale);
        return dispatcher.combine(expertOut_RD, dispatched, weights_TK);
    }

    private static void checkFinite(Tensor x) {
        long at = Kernels.of(x.device()).reductions().firstNonFinite(x);
        if (at >= 0) {
            int w = x.rowWidth();
            float v = x.rows((int) (at / w), (int) (at / w) + 1).to(Device.CPU).get(at % w);
            throw new IllegalArgumentException("MoEMLP: input row " + at / w + " column " + at % w + " is " + v
                    + " (finite values expected; the check is on)");
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
        Tensor kept = Tensor.zeros(indices.device(), DType.I32, t, k);
        Kernels.of(indices.device()).routing().dropOverCapacity(indices, config.numExperts(), capacity(t), kept);
        return kept;
    }

    /**
     * This rank's experts on dispatched rows: ragged grouped GEMMs over {@code dispatched.rows_RD()} grouped
     * by local expert, the result in the same row order, each row scaled by {@code avg / n_e} when
     * {@code gradientScale} is on (docs/EXPERT_PARALLELISM.md, step 6: {@code n_e} and {@code avg} count the entries of every rank
     * that shares these experts, so expert parallelism does not change the model).
     */
    public Tensor computeExperts(Dispatched<?> dispatched, boolean gradientScale) {
        int[] rowsPerLocalExpert = dispatched.rowsPerLocalExpert();
        if (rowsPerLocalExpert.length != numLocalExperts) {
            throw new IllegalArgumentException("computeExperts: " + rowsPerLocalExpert.length + " group sizes for "
                    + numLocalExperts + " local experts");
        }
        Activation act = config.activation();
        Tensor out_RD;
        if (config.packed() && act.gated() && Kernels.of(dispatched.source().device()).matmul().fusesGatedExperts()) {
            // the device gathers the rows, runs the three products and the activation as one computation (its
            // phase includes the gather and the activation)
            try (var p = Profiler.phase(GROUPED_GEMM_PHASE)) {
                out_RD = GroupedMatmul.gatedExperts(dispatched.source(), dispatched.gather(), rowsPerLocalExpert, gateW(), upW(), downW());
            }
        } else {
            out_RD = composedExperts(dispatched.rows_RD(), rowsPerLocalExpert, act);
        }
        if (!gradientScale) return out_RD;
        try (var p = Profiler.phase("gradient scale")) {
            // host-computed constants, copied to where the rows are
            return Ops.mulRows(out_RD, gradientScaleRows(rowsPerLocalExpert, dispatched.groupEntries(), config.numExperts())
                    .to(out_RD.device()));
        }
    }

    /** The experts as grouped products and the activation, one op at a time. */
    private Tensor composedExperts(Tensor rows_RD, int[] rowsPerLocalExpert, Activation act) {
        Tensor up;
        Tensor gate = null;
        // the two projections read the same rows: a device that converts them does it once
        try (var p = Profiler.phase(GROUPED_GEMM_PHASE);
             var shared = Kernels.of(rows_RD.device()).matmul().reuseCopies(t -> t == rows_RD)) {
            up = expertProduct(rows_RD, rowsPerLocalExpert, ExpertProjection.UP);
            if (act.gated()) gate = expertProduct(rows_RD, rowsPerLocalExpert, ExpertProjection.GATE);
        }
        Tensor hidden;
        try (var p = Profiler.phase("activation")) {
            hidden = act.gated() ? Ops.swiglu(gate, up) : act.apply(up);
        }
        try (var p = Profiler.phase(GROUPED_GEMM_PHASE)) {
            return expertProduct(hidden, rowsPerLocalExpert, ExpertProjection.DOWN);
        }
    }

    /** The profiler phase of the experts' grouped products, forward and backward. */
    public static final String GROUPED_GEMM_PHASE = "grouped gemm";

    /** One projection of the local experts over rows grouped by local expert. */
    private Tensor expertProduct(Tensor rows, int[] rowsPerLocalExpert, ExpertProjection projection) {
        if (config.packed()) return GroupedMatmul.packed(rows, rowsPerLocalExpert, parameter(projection.packedName()));
        List<Tensor> weights = new ArrayList<>();
        for (Expert e : localExperts()) weights.add(projection.in(e).weight());
        return GroupedMatmul.list(rows, rowsPerLocalExpert, weights);
    }

    /**
     * Gradient scaling factors, one per row of the grouped layout: {@code avg / n_e} with
     * {@code n_e = rowsPerGroup[e]} and {@code avg = totalEntries / numExperts}.
     */
    private static Tensor gradientScaleRows(int[] rowsPerGroup, long totalEntries, int numExperts) {
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
     * Splits the experts over {@code epGroup}: rank r keeps global experts
     * {@code [r·E_l, (r+1)·E_l)}, {@code E_l = E / P}; list experts keep their objects, packed weights
     * become new parameters holding the slice. The layer still dispatches locally until a dispatcher
     * that reaches the other ranks is installed ({@link #setDispatcher}). Called by {@code ExpertParallel.apply}.
     */
    public void partitionExperts(ProcessGroup epGroup) {
        int p = epGroup.size();
        if (epSize != 1) throw new IllegalStateException("partitionExperts: the experts are already split over " + epSize + " ranks");
        if (config.numExperts() % p != 0) {
            throw new IllegalArgumentException("num_experts (" + config.numExperts() + ") must be divisible by ep (" + p + ")");
        }
        int count = config.numExperts() / p;
        keepExperts(epGroup.rank() * count, count);
        this.epGroup = epGroup;
        this.epSize = p;
        this.epRank = epGroup.rank();
    }

    /** Keeps only global experts {@code [start, start + count)}. */
    private void keepExperts(int start, int count) {
        if (start < localExpertStart || count < 0 || start + count > localExpertStart + numLocalExperts) {
            throw new IllegalArgumentException("keepExperts: [" + start + ", " + (start + count) + ") is not within this rank's experts ["
                    + localExpertStart + ", " + (localExpertStart + numLocalExperts) + ")");
        }
        if (start == localExpertStart && count == numLocalExperts) return; // already this block (buildExperts)
        int from = start - localExpertStart;
        if (config.packed()) {
            for (ExpertProjection projection : packedProjections()) {
                String name = projection.packedName();
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

    /**
     * Installs the dispatcher that moves this layer's tokens to its experts; it must group rows by this
     * rank's local experts ({@link #numLocalExperts()} groups).
     */
    public void setDispatcher(TokenDispatcher<?> dispatcher) {
        this.dispatcher = Objects.requireNonNull(dispatcher, "dispatcher");
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

    public TokenDispatcher<?> dispatcher() {
        return dispatcher;
    }

    public int numExperts() {
        return config.numExperts();
    }

    /** {@code num_local_experts}: how many experts this rank holds, {@code E / ep_size}. */
    public int numLocalExperts() {
        return numLocalExperts;
    }

    /** {@code local_expert_start}: the global index of this rank's first expert, {@code ep_rank · E_l}. */
    public int localExpertStart() {
        return localExpertStart;
    }

    /** {@code ep_size}: the ranks the experts are split over (1 without expert parallelism). */
    public int epSize() {
        return epSize;
    }

    /** {@code ep_rank}: this rank's position in {@link #epGroup()} (0 without expert parallelism). */
    public int epRank() {
        return epRank;
    }

    /** The expert-parallel process group, or null without expert parallelism. */
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
        return parameter(ExpertProjection.UP.packedName());
    }

    public Tensor downW() {
        return parameter(ExpertProjection.DOWN.packedName());
    }

    public Tensor gateW() {
        return parameter(ExpertProjection.GATE.packedName());
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
