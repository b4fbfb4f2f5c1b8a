package moe4j.parallel;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.UnaryOperator;
import moe4j.autograd.Autograd;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.distributed.Work;
import moe4j.kernels.Kernels;
import moe4j.nn.Module;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;

/**
 * FSDP-style sharding over {@code dp_shard}: each parameter, seen as a flat vector of {@code n} elements,
 * is cut into {@code N} equal pieces of {@code L = ceil(n / N)} elements (the last one padded) over the
 * ranks that hold a replica of it, its <em>shard group</em>. Rank r owns elements {@code [r·L, min(n, (r+1)·L))}
 * and keeps, between steps, only that piece of the parameter, of its gradient and of its optimizer state.
 *
 * <p>Whole parameters exist one module at a time. The parameters are grouped into <em>units</em>, in the
 * order the forward uses them: the token embedding, each transformer block, the output projection (and
 * the rest, the final norm and a tied embedding, which stay whole for the whole step). Each parameter the
 * model holds is a {@linkplain Tensor#releasable releasable} tensor of its whole shape, whose memory exists
 * only while its unit is gathered. A wrapper around each unit's module forward ({@link Module#wrapForward})
 * <ol>
 *   <li>waits for the unit's all-gather (started ahead of time, or now), and starts the next unit's
 *       all-gather in the background ({@link ProcessGroup#allGatherAsync}: prefetch);</li>
 *   <li>runs the module; then frees the whole parameters (the last unit keeps them: its backward comes
 *       next);</li>
 *   <li>records two identity nodes for the backward: on the module's output, which gathers the unit again
 *       (and starts the previous unit's all-gather) before any backward rule of the module reads a weight;
 *       and on its input, which runs once every rule of the module has run, and reduce-scatters the unit's
 *       gradients into the owned pieces and frees the whole parameters again.</li>
 * </ol>
 * Units whose input carries no gradient (the embedding looks up int ids) and the rest are reduce-scattered
 * by {@link #reduceScatterGradients} after the backward, in unit order. Every rank records the same graph,
 * so every rank issues the same collectives in the same order. A gradient that reaches a parameter after
 * its unit was reduce-scattered is an error, not a silent loss.
 *
 * <p>{@link #gather} gathers every unit at once (before a published model's weights are loaded into
 * them, or for a model without units); while the whole model is gathered the wrappers do nothing, and
 * {@link #reduceScatterGradients} reduce-scatters and frees everything after the backward.
 *
 * <p>Dense parameters are sharded over {@code dp_shard × ep} (every one of those ranks holds a replica);
 * expert parameters over {@code dp_shard} only (the ranks of one EP coordinate hold the same experts).
 */
final class ParameterShards {
    /** One parameter's sharding on this rank; {@code whole} is the releasable tensor the model holds. */
    record Shard(String name, int[] shape, ProcessGroup group, boolean expert, boolean tpSplit, boolean tpPartial, int pieceLength,
                 int start, int end, Tensor piece, Tensor gradient, Tensor whole) {
        int numel() {
            int n = 1;
            for (int d : shape) n *= d;
            return n;
        }

        long wholeBytes() {
            return (long) numel() * Float.BYTES;
        }
    }

    /** Parameters gathered and freed together: one module's, or the rest. */
    private static final class Unit {
        final String name;
        final List<Shard> shards = new ArrayList<>();
        final List<Work> inFlight = new ArrayList<>();
        /** Whether the whole parameters have memory (being gathered, or gathered). */
        boolean allocated;
        /** Whether this step's gradients were reduce-scattered. */
        boolean reduced;

        Unit(String name) {
            this.name = name;
        }

        long bytes() {
            long b = 0;
            for (Shard s : shards) b += s.wholeBytes();
            return b;
        }
    }

    private final Module model;
    private final List<Shard> shards = new ArrayList<>();
    /** The module units in forward order. */
    private final List<Unit> units = new ArrayList<>();
    /** Whatever belongs to no module unit: gathered from the first forward to the end of the backward. */
    private final Unit rest = new Unit("rest");
    private final Map<String, Tensor> pieces = new LinkedHashMap<>();
    private final ProcessGroup replicaGroup;
    private final ProcessGroup expertReplicaGroup;
    private final ProcessGroup normGroup;
    private final ProcessGroup tpGroup;
    private final float inverseDataRanks;
    /** Set by {@link #gather()}: every unit gathered at once, the wrappers stand aside. */
    private boolean wholeModel;
    private long gatheredBytes;
    private long peakGatheredBytes;

    /**
     * Takes this rank's pieces of {@code model}'s (whole) parameters, puts released whole-shaped tensors in
     * their places, and wraps the forward of each unit's module.
     *
     * @param unitModules the modules whose parameters are gathered and freed together, in the order the forward
     *     runs them, by qualified name; parameters under none of them form the rest
     * @param restFirstUsedBy a module (not a unit) whose forward runs before every unit's and uses the rest,
     *     which its forward then gathers (a tied embedding); null: the first unit's forward gathers the rest
     * @param denseGroup the ranks a dense parameter is sharded over ({@code dp_shard × ep})
     * @param expertGroup the ranks an expert parameter is sharded over ({@code dp_shard})
     * @param replicaGroup {@code dp_replicate}: the copies of each dense shard (null or size 1: none)
     * @param expertReplicaGroup {@code dp_replicate × tp}: the ranks whose expert gradient pieces are summed
     *     (each tp rank computed its own tokens' share); null or size 1: none
     * @param tpGroup the tp group (null: tp = 1); {@code tpSplit} the names of the parameters tensor parallelism split,
     *     {@code tpPartial} those each tp rank applied to its own tokens only (their gradients are summed over tp)
     * @param dataRanks all ranks that see their own data; gradients are averaged over them
     */
    ParameterShards(Module model, List<String> unitModules, String restFirstUsedBy, Set<String> expertParameters, ProcessGroup denseGroup, ProcessGroup expertGroup,
                    ProcessGroup replicaGroup, ProcessGroup expertReplicaGroup, ProcessGroup tpGroup, Set<String> tpSplit,
                    Set<String> tpPartial, int dataRanks) {
        this.model = model;
        this.replicaGroup = replicaGroup;
        this.expertReplicaGroup = expertReplicaGroup;
        this.tpGroup = tpGroup;
        this.normGroup = denseGroup;
        this.inverseDataRanks = 1f / dataRanks;
        Map<String, Unit> byModule = new LinkedHashMap<>();
        for (String m : unitModules) {
            Unit u = new Unit(m);
            units.add(u);
            byModule.put(m, u);
        }
        model.namedParameters().forEach((name, p) -> {
            boolean expert = expertParameters.contains(name);
            ProcessGroup group = expert ? expertGroup : denseGroup;
            int n = Math.toIntExact(p.numel());
            int length = (n + group.size() - 1) / group.size();
            int start = Math.min(n, group.rank() * length);
            int end = Math.min(n, start + length);
            Tensor piece = MemoryScope.persistent(() -> p.view(n).rows(start, end).copy());
            piece.requiresGrad(true);
            // the padded gradient piece: reduce-scatter needs equal pieces on every rank
            Tensor gradient = MemoryScope.persistent(() -> Tensor.zeros(p.device(), length));
            Tensor whole = Tensor.releasable(p.device(), p.shape());
            Shard shard = new Shard(name, p.shape(), group, expert, tpSplit.contains(name), tpPartial.contains(name), length, start, end,
                    piece, gradient, whole);
            shards.add(shard);
            pieces.put(name, piece);
            unitOf(name, byModule).shards.add(shard);
            model.setParameter(name, whole);
        });
        Map<String, Module> modules = model.namedModules();
        for (Unit u : units) {
            modules.get(u.name).wrapForward((x, body) -> forward(u, x, body));
        }
        if (restFirstUsedBy != null) {
            modules.get(restFirstUsedBy).wrapForward((x, body) -> {
                if (!wholeModel) awaitGathered(rest);
                return body.apply(x);
            });
        }
    }

    private Unit unitOf(String parameter, Map<String, Unit> byModule) {
        for (var e : byModule.entrySet()) {
            if (parameter.startsWith(e.getKey() + ".")) return e.getValue();
        }
        return rest;
    }

    /** This rank's piece of every parameter, by parameter name: what the optimizer updates. */
    Map<String, Tensor> pieces() {
        return Collections.unmodifiableMap(pieces);
    }

    // ---------------------------------------------------------------- one unit at a time

    /** The wrapper around a unit's module forward (see the class comment). */
    private Tensor forward(Unit u, Tensor x, UnaryOperator<Tensor> body) {
        if (wholeModel) return body.apply(x);
        boolean recording = Autograd.isGradEnabled();
        awaitGathered(rest);
        awaitGathered(u);
        int i = units.indexOf(u);
        if (i + 1 < units.size()) startGather(units.get(i + 1));
        Tensor in = x;
        if (recording && x.requiresGrad()) {
            // runs after every backward rule that consumed the module's input: the module's gradients are complete
            in = Autograd.recordAlways(x.view(x.shape()), "reduce-scatter " + u.name, new Tensor[] {x}, g -> {
                reduceScatter(u);
                release(u);
                return new Tensor[] {g};
            });
        }
        Tensor y = body.apply(in);
        if (recording) {
            // runs before any backward rule of the module: its weights must be whole again
            y = Autograd.recordAlways(y.view(y.shape()), "all-gather " + u.name, new Tensor[] {y}, g -> {
                awaitGathered(u);
                if (i > 0) startGather(units.get(i - 1));
                return new Tensor[] {g};
            });
        }
        if (!recording || i < units.size() - 1) release(u);
        return y;
    }

    /** Gives the unit's whole parameters memory and starts all-gathering them; nothing if they have memory. */
    private void startGather(Unit u) {
        if (u.allocated) return;
        for (Shard s : u.shards) {
            s.whole().allocateStorage();
            u.inFlight.add(s.group().allGatherAsync(s.whole().view(s.numel()), s.piece()));
        }
        u.allocated = true;
        gatheredBytes += u.bytes();
        peakGatheredBytes = Math.max(peakGatheredBytes, gatheredBytes);
    }

    private void awaitGathered(Unit u) {
        startGather(u);
        for (Work w : u.inFlight) w.await();
        u.inFlight.clear();
    }

    /** Frees the unit's whole parameters (and any gradients on them). */
    private void release(Unit u) {
        if (!u.allocated) return;
        for (Work w : u.inFlight) w.await(); // never free memory a collective still writes
        u.inFlight.clear();
        for (Shard s : u.shards) {
            s.whole().setGrad(null);
            s.whole().releaseStorage();
        }
        u.allocated = false;
        gatheredBytes -= u.bytes();
    }

    /**
     * Reduce-scatters the unit's gradients into the owned pieces (averaged over the data ranks). A missing
     * gradient counts as zeros.
     */
    private void reduceScatter(Unit u) {
        if (u.reduced) {
            // a second forward before the backward recorded a second reduce-scatter, which would overwrite the first
            throw new IllegalStateException(u.name + ": gradients reduce-scattered twice in one step; a sharded model takes"
                    + " one forward per backward");
        }
        for (Shard s : u.shards) {
            Tensor owned = s.gradient();
            try (MemoryScope scope = MemoryScope.open()) {
                Tensor padded = Tensor.zeros(owned.device(), s.pieceLength() * s.group().size());
                Tensor grad = s.whole().grad();
                if (s.tpPartial()) {
                    // each tp rank's share of the tokens gave part of this gradient: their sum, on every tp rank
                    if (grad == null) grad = Tensor.zeros(owned.device(), s.shape());
                    tpGroup.allReduce(grad, ReduceOp.SUM);
                }
                if (grad != null) padded.rows(0, s.numel()).copyFrom(grad.view(s.numel()));
                s.group().reduceScatter(owned, padded, ReduceOp.SUM);
            }
            ProcessGroup replicas = s.expert() ? expertReplicaGroup : replicaGroup;
            if (replicas != null && replicas.size() > 1) replicas.allReduce(owned, ReduceOp.SUM);
            Kernels.of(owned.device()).elementwise().scale(inverseDataRanks, owned, owned);
            s.piece().setGrad(owned.rows(0, s.end() - s.start()));
            s.whole().setGrad(null);
        }
        u.reduced = true;
    }

    // ---------------------------------------------------------------- the whole model

    private List<Unit> allUnits() {
        List<Unit> all = new ArrayList<>(units);
        all.add(rest);
        return all;
    }

    /** All-gathers every parameter's pieces into whole parameters; until {@link #release} the wrappers stand aside. */
    void gather() {
        for (Unit u : allUnits()) awaitGathered(u);
        wholeModel = true;
    }

    /** Frees every whole parameter (and any gradients on them): from here on only the pieces exist. */
    void release() {
        for (Unit u : allUnits()) release(u);
        wholeModel = false;
    }

    /** Copies this rank's pieces out of the whole parameters (after a checkpoint was loaded into them). */
    void takePiecesFromWhole() {
        for (Shard s : shards) s.piece().copyFrom(s.whole().view(s.numel()).rows(s.start(), s.end()));
    }

    /**
     * After the backward: reduce-scatters the gradients of every unit the backward did not already (in unit
     * order, the rest last), then frees every whole parameter. Same collectives, same order, on every rank.
     */
    void reduceScatterGradients() {
        for (Unit u : allUnits()) {
            for (Work w : u.inFlight) w.await();
            u.inFlight.clear();
        }
        for (Unit u : allUnits()) {
            if (u.reduced) {
                for (Shard s : u.shards) {
                    if (s.whole().grad() != null) {
                        throw new IllegalStateException("the gradient of " + s.name() + " arrived after " + u.name
                                + "'s gradients were reduce-scattered: a backward rule ran outside its module's backward");
                    }
                }
            } else {
                reduceScatter(u);
            }
        }
        release();
        for (Unit u : allUnits()) u.reduced = false;
    }

    // ---------------------------------------------------------------- what it costs

    /** The most bytes of whole parameters this rank held at once since the last {@link #resetPeakGatheredBytes()}. */
    long peakGatheredBytes() {
        return peakGatheredBytes;
    }

    void resetPeakGatheredBytes() {
        peakGatheredBytes = gatheredBytes;
    }

    /** Bytes of every whole parameter of this rank's (tp/ep-local) model. */
    long wholeModelBytes() {
        long b = 0;
        for (Shard s : shards) b += s.wholeBytes();
        return b;
    }

    /**
     * The peak of whole-parameter bytes a training step holds under the schedule above: in the forward,
     * unit i with unit i+1 prefetched; in the backward, unit i with unit i−1 prefetched (the units before
     * and after are free by then); the rest throughout. So: the rest plus the largest pair of neighbouring
     * units.
     */
    long plannedPeakGatheredBytes() {
        long pair = units.isEmpty() ? 0 : units.get(0).bytes();
        for (int i = 0; i + 1 < units.size(); i++) pair = Math.max(pair, units.get(i).bytes() + units.get(i + 1).bytes());
        return rest.bytes() + pair;
    }

    /** The L2 norm of the whole (averaged) gradient, from the owned pieces: the same value on every rank. */
    double gradientNorm() {
        double split = 0;
        double whole = 0;
        for (Shard s : shards) {
            Tensor g = s.piece().grad();
            if (g == null || g.numel() == 0) continue;
            double sq = Kernels.of(g.device()).reductions().sumOfSquares(g);
            if (s.tpSplit()) split += sq;
            else whole += sq;
        }
        // the pieces of dp_shard × ep together are every gradient element once; dp_replicate holds copies,
        // and tp ranks hold copies of what tensor parallelism did not split
        Tensor t = Tensor.of(new float[] {(float) split, (float) whole}, 2);
        if (normGroup.size() > 1) normGroup.allReduce(t, ReduceOp.SUM);
        Tensor splitSum = t.rows(0, 1).copy();
        if (tpGroup != null && tpGroup.size() > 1) tpGroup.allReduce(splitSum, ReduceOp.SUM);
        return Math.sqrt(splitSum.item() + t.get(1));
    }

    /** The whole (tp/ep-local) shape of each parameter, by name. */
    Map<String, int[]> wholeShapes() {
        Map<String, int[]> out = new LinkedHashMap<>();
        for (Shard s : shards) out.put(s.name(), s.shape().clone());
        return out;
    }

    /**
     * The whole (tp/ep-local) tensor of parameter {@code name} from every rank's piece of it ({@code piece}:
     * this rank's, a parameter piece or an optimizer moment), in the current scope: a collective over the
     * parameter's shard group.
     */
    Tensor unshard(String name, Tensor piece) {
        Shard s = shards.stream().filter(x -> x.name().equals(name)).findFirst()
                .orElseThrow(() -> new IllegalArgumentException("no sharded parameter named '" + name + "'"));
        Tensor full = Tensor.zeros(piece.device(), s.shape());
        s.group().allGather(full.view(s.numel()), piece);
        return full;
    }

    /** Copies this rank's piece of {@code whole}, the whole (tp/ep-local) value of parameter {@code name}, into {@code piece}. */
    void takePiece(String name, Tensor whole, Tensor piece) {
        Shard s = shards.stream().filter(x -> x.name().equals(name)).findFirst()
                .orElseThrow(() -> new IllegalArgumentException("no sharded parameter named '" + name + "'"));
        piece.copyFrom(whole.view(s.numel()).rows(s.start(), s.end()));
    }

    /**
     * Bytes this rank sends to other ranks for one training step's all-gathers and reduce-scatters (float32),
     * not counting the all-reduce over {@code dp_replicate}, whose traffic depends on the backend's
     * algorithm. Every unit is gathered twice (forward, and again for its backward) except the last, whose
     * parameters stay whole from its forward into its backward, and the rest, gathered once.
     */
    long bytesSentPerStep() {
        long bytes = 0;
        Unit last = units.isEmpty() ? null : units.get(units.size() - 1);
        for (Unit u : allUnits()) {
            int gathers = u == rest || u == last ? 1 : 2;
            for (Shard s : u.shards) {
                long others = s.group().size() - 1;
                bytes += others * s.pieceLength() * Float.BYTES; // reduce-scatter: one padded piece to each other rank
                bytes += gathers * others * (s.end() - s.start()) * Float.BYTES; // all-gather: my piece to each other rank
            }
        }
        return bytes;
    }

    /**
     * Bytes this rank keeps between steps (float32): its pieces of the parameters, of the gradients (padded)
     * and of the two AdamW moments.
     */
    long stateBytes() {
        long elements = 0;
        for (Shard s : shards) elements += s.pieceLength() + 3L * (s.end() - s.start());
        return elements * Float.BYTES;
    }

    /** Bytes of the same state without sharding: four float32 values per element of every (tp/ep-local) parameter. */
    long unshardedStateBytes() {
        long elements = 0;
        for (Shard s : shards) elements += s.numel();
        return 4 * elements * Float.BYTES;
    }
}
