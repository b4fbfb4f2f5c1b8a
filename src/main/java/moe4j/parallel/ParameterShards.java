package moe4j.parallel;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.kernels.Kernels;
import moe4j.nn.Module;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;

/**
 * FSDP-style sharding over {@code dp_shard}: each parameter, seen as a flat vector of {@code n} elements,
 * is cut into {@code N} equal pieces of {@code L = ceil(n / N)} elements (the last one padded) over the
 * ranks that hold a replica of it, its <em>shard group</em>. Rank r owns elements {@code [r·L, min(n, (r+1)·L))}
 * and keeps, between steps, only that piece of the parameter, of its gradient and of its optimizer state.
 * <ul>
 *   <li>{@link #gather} (before the forward, and before a checkpoint is written or read): the pieces
 *       are all-gathered into whole parameters, which the model's modules then use;</li>
 *   <li>{@link #reduceScatterGradients} (after backward): each whole gradient is reduce-scattered over
 *       the shard group (then all-reduced over {@code dp_replicate}, hybrid sharding) into the owned
 *       piece; the whole parameters and gradients are released.</li>
 * </ul>
 * Dense parameters are sharded over {@code dp_shard × ep} (every one of those ranks holds a replica);
 * expert parameters over {@code dp_shard} only (the ranks of one EP coordinate hold the same experts).
 * A released parameter is an empty placeholder, so a forward that forgot to gather fails loudly on its
 * shape instead of computing with stale weights.
 */
final class ParameterShards {
    /** One parameter's sharding on this rank. */
    record Shard(String name, int[] shape, ProcessGroup group, boolean expert, boolean tpSplit, int pieceLength, int start, int end,
                 Tensor piece, Tensor gradient) {
        int numel() {
            int n = 1;
            for (int d : shape) n *= d;
            return n;
        }
    }

    private static final Tensor RELEASED = MemoryScope.persistent(() -> Tensor.zeros(0));

    private final Module model;
    private final List<Shard> shards = new ArrayList<>();
    private final Map<String, Tensor> pieces = new LinkedHashMap<>();
    private final ProcessGroup replicaGroup;
    private final ProcessGroup expertReplicaGroup;
    private final ProcessGroup normGroup;
    private final ProcessGroup tpGroup;
    private final float inverseDataRanks;
    private boolean gathered = true;

    /**
     * Takes this rank's pieces of {@code model}'s (whole) parameters, then releases the whole ones.
     *
     * @param denseGroup the ranks a dense parameter is sharded over ({@code dp_shard × ep})
     * @param expertGroup the ranks an expert parameter is sharded over ({@code dp_shard})
     * @param replicaGroup {@code dp_replicate}: the copies of each dense shard (null or size 1: none)
     * @param expertReplicaGroup {@code dp_replicate × tp}: the ranks whose expert gradient pieces are summed
     *     (each tp rank computed its own tokens' share); null or size 1: none
     * @param tpGroup the tp group (null: tp = 1); {@code tpSplit} the names of the parameters tensor parallelism split
     * @param dataRanks all ranks that see their own data; gradients are averaged over them
     */
    ParameterShards(Module model, Set<String> expertParameters, ProcessGroup denseGroup, ProcessGroup expertGroup,
                    ProcessGroup replicaGroup, ProcessGroup expertReplicaGroup, ProcessGroup tpGroup, Set<String> tpSplit,
                    int dataRanks) {
        this.model = model;
        this.replicaGroup = replicaGroup;
        this.expertReplicaGroup = expertReplicaGroup;
        this.tpGroup = tpGroup;
        this.normGroup = denseGroup;
        this.inverseDataRanks = 1f / dataRanks;
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
            shards.add(new Shard(name, p.shape(), group, expert, tpSplit.contains(name), length, start, end, piece, gradient));
            pieces.put(name, piece);
        });
        release();
    }

    /** This rank's piece of every parameter, by parameter name: what the optimizer updates. */
    Map<String, Tensor> pieces() {
        return Collections.unmodifiableMap(pieces);
    }

    /** All-gathers every parameter's pieces into a whole parameter the model uses; a no-op while they are gathered. */
    void gather() {
        if (gathered) return;
        for (Shard s : shards) {
            Tensor whole = MemoryScope.persistent(() -> Tensor.zeros(s.piece().device(), s.shape()));
            try (MemoryScope scope = MemoryScope.open()) {
                s.group().allGather(whole.view(s.numel()), s.piece().copy()); // a collective's input and output may not overlap
            }
            model.setParameter(s.name(), whole);
        }
        gathered = true;
    }

    /** Drops the whole parameters (and any gradients on them): from here on only the pieces exist. */
    void release() {
        for (Shard s : shards) model.setParameter(s.name(), RELEASED);
        gathered = false;
    }

    /** Copies this rank's pieces out of the whole parameters (after a checkpoint was loaded into them). */
    void takePiecesFromWhole() {
        Map<String, Tensor> whole = model.namedParameters();
        for (Shard s : shards) s.piece().copyFrom(whole.get(s.name()).view(s.numel()).rows(s.start(), s.end()));
    }

    /**
     * Reduce-scatters every parameter's gradient into its owned piece (averaged over the data ranks), then
     * releases the whole parameters and gradients. A missing gradient counts as zeros. Same collectives,
     * same order, on every rank.
     */
    void reduceScatterGradients() {
        Map<String, Tensor> whole = model.namedParameters();
        for (Shard s : shards) {
            Tensor owned = s.gradient();
            try (MemoryScope scope = MemoryScope.open()) {
                Tensor padded = Tensor.zeros(owned.device(), s.pieceLength() * s.group().size());
                Tensor grad = gathered ? whole.get(s.name()).grad() : null;
                if (grad != null) padded.rows(0, s.numel()).copyFrom(grad.view(s.numel()));
                s.group().reduceScatter(owned, padded, ReduceOp.SUM);
            }
            ProcessGroup replicas = s.expert() ? expertReplicaGroup : replicaGroup;
            if (replicas != null && replicas.size() > 1) replicas.allReduce(owned, ReduceOp.SUM);
            Kernels.of(owned.device()).elementwise().scale(inverseDataRanks, owned, owned);
            s.piece().setGrad(owned.rows(0, s.end() - s.start()));
        }
        release();
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

    /** Scales every owned gradient piece. */
    void scaleGradients(float scale) {
        for (Shard s : shards) {
            Tensor g = s.piece().grad();
            if (g != null && g.numel() > 0) Kernels.of(g.device()).elementwise().scale(scale, g, g);
        }
    }

    /**
     * Whole (EP-local) tensors from per-piece values such as optimizer moments, by name: a collective over
     * each parameter's shard group.
     */
    Map<String, Tensor> unshard(Map<String, Tensor> byPiece) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Shard s : shards) {
            Tensor value = byPiece.get(s.name());
            Tensor full = Tensor.zeros(value.device(), s.shape());
            try (MemoryScope scope = MemoryScope.open()) {
                Tensor mine = value.copy();
                s.group().allGather(full.view(s.numel()), mine);
            }
            out.put(s.name(), full);
        }
        return out;
    }

    /** Zero whole-size tensors, by name, to load into before {@link #reshard}. */
    Map<String, Tensor> fullSized() {
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Shard s : shards) out.put(s.name(), Tensor.zeros(s.piece().device(), s.shape()));
        return out;
    }

    /** Copies this rank's piece of each whole tensor into the per-piece value of the same name. */
    void reshard(Map<String, Tensor> full, Map<String, Tensor> byPiece) {
        for (Shard s : shards) {
            byPiece.get(s.name()).copyFrom(full.get(s.name()).view(s.numel()).rows(s.start(), s.end()));
        }
    }

    /**
     * Bytes this rank sends to other ranks for one step's all-gather and reduce-scatter (float32), not
     * counting the all-reduce over {@code dp_replicate}, whose traffic depends on the backend's algorithm.
     */
    long bytesSentPerStep() {
        long bytes = 0;
        for (Shard s : shards) {
            long others = s.group().size() - 1;
            bytes += others * s.pieceLength() * Float.BYTES; // reduce-scatter: one padded piece to each other rank
            bytes += others * (s.end() - s.start()) * Float.BYTES; // all-gather: my piece to each other rank
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
