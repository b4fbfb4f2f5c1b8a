package moe4j.parallel;

import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.kernels.Kernels;
import moe4j.nn.MoEMLP;
import moe4j.nn.MoETransformer;
import moe4j.nn.Module;
import moe4j.tensor.Tensor;

/**
 * Makes the gradients of a step equal to those of one rank training on the global batch, when every
 * data rank ({@code dp_replicate × dp_shard × ep}) sees its own shard of the batch and normalises its
 * loss over its own tokens:
 * <ul>
 *   <li>replicated (dense) parameters: averaged over all data ranks;</li>
 *   <li>expert parameters: their owner already holds the sum over the EP group of every rank's
 *       contribution (the all-to-all's backward brought them home), so they are summed over the ranks
 *       that hold the same experts and divided by the number of data ranks.</li>
 * </ul>
 * Under tensor parallelism the tp ranks of a data rank share its batch: split parameters have their own
 * complete gradients and the rest is replicated over tp, except the experts, whose tp ranks each computed
 * a slice of the tokens: they are summed over tp too ({@link TensorParallel}).
 * Every rank issues the same reductions in the same order (parameters in registration order).
 *
 * <p>With {@code dp_shard > 1} the parameters, gradients and optimizer state are sharded
 * ({@link ParameterShards}): between steps a rank keeps only its pieces; each module of a transformer
 * all-gathers its whole parameters around its own forward and backward, the same averages are
 * reduce-scattered instead of all-reduced (most during the backward, the rest in {@link #synchronize()}),
 * and the optimizer steps only this rank's pieces ({@link #optimizerParameters()}).
 */
public final class GradientSync {
    private final Module model;
    private final ProcessGroup dataGroup;
    private final ProcessGroup expertReplicaGroup;
    private final Set<Tensor> expertParameters = Collections.newSetFromMap(new IdentityHashMap<>());
    private ParameterShards shards;
    private ProcessGroup tpGroup;
    private final Set<String> tpSplit = new java.util.HashSet<>();
    /** Parameters applied to each tp rank's own slice of the tokens (sequence parallelism): gradients summed over tp. */
    private final Set<String> tpPartial = new java.util.HashSet<>();

    private GradientSync(Module model, ProcessGroup dataGroup, ProcessGroup expertReplicaGroup) {
        this.model = model;
        this.dataGroup = dataGroup;
        this.expertReplicaGroup = expertReplicaGroup;
        for (Module m : model.namedModules().values()) {
            if (m instanceof MoEMLP moe) expertParameters.addAll(moe.expertParameters());
        }
    }

    /** The data ranks of {@code mesh} (all of dp_replicate, dp_shard, ep); null mesh: a single rank. */
    public static GradientSync create(Module model, DeviceMesh mesh) {
        if (mesh == null) return new GradientSync(model, null, null);
        DeviceMesh data = mesh.flatten("data", "dp_replicate", "dp_shard", "ep");
        // under tensor parallelism each tp rank's experts saw only its slice of the tokens: sum over tp too
        DeviceMesh replicas = mesh.flatten("expert_replicas", "dp_replicate", "dp_shard", "tp");
        GradientSync sync = new GradientSync(model, data.group(), replicas.group());
        TensorParallel.Layout tp = TensorParallel.layoutOf(model);
        if (tp != null) {
            sync.tpGroup = tp.group();
            sync.tpSplit.addAll(tp.splits().keySet());
            sync.tpPartial.addAll(tp.sequenceParallel());
        }
        if (mesh.hasDim("dp_shard") && mesh.size("dp_shard") > 1) {
            ProcessGroup denseShards = mesh.flatten("dense_shards", "dp_shard", "ep").group();
            ProcessGroup expertShards = mesh.get("dp_shard").group();
            ProcessGroup replicate = mesh.hasDim("dp_replicate") ? mesh.get("dp_replicate").group() : null;
            ProcessGroup expertReplicas = mesh.flatten("expert_piece_replicas", "dp_replicate", "tp").group();
            Set<String> expertNames = new java.util.HashSet<>();
            model.namedParameters().forEach((name, p) -> {
                if (sync.expertParameters.contains(p)) expertNames.add(name);
            });
            // a tied embedding belongs to the rest (the output uses it too), which its forward, the first, gathers
            String restFirstUsedBy = model instanceof MoETransformer t && t.output() == null ? "tok_embeddings" : null;
            sync.shards = new ParameterShards(model, shardingUnits(model), restFirstUsedBy, expertNames, denseShards, expertShards, replicate, expertReplicas, sync.tpGroup,
                    sync.tpSplit, sync.tpPartial, data.size());
        }
        return sync;
    }

    /**
     * The modules whose parameters sharding gathers and frees together, in forward order: the token
     * embedding (unless the output reuses it), every block, the output projection. Another kind of model is
     * gathered whole for each step.
     */
    private static List<String> shardingUnits(Module model) {
        List<String> units = new ArrayList<>();
        if (!(model instanceof MoETransformer transformer)) return units;
        if (transformer.output() != null) units.add("tok_embeddings");
        for (int i = 0; i < transformer.layers().size(); i++) units.add("layers." + i);
        if (transformer.output() != null) units.add("output");
        return units;
    }

    /**
     * The global gradient norm when tensor parallelism split some parameters (unsharded run): their squares
     * are summed over tp, the rest counted as {@code GradClip} counts them. The same value on every rank.
     */
    public double tensorParallelGradientNorm() {
        double split = 0;
        double dense = 0;
        double expert = 0;
        for (var entry : model.namedParameters().entrySet()) {
            Tensor p = entry.getValue();
            Tensor g = p.grad();
            if (g == null) continue;
            double sq = Kernels.of(g.device()).reductions().sumOfSquares(g);
            if (tpSplit.contains(entry.getKey())) split += sq;
            else if (expertParameters.contains(p)) expert += sq;
            else dense += sq;
        }
        Tensor t = Tensor.of(new float[] {(float) split});
        tpGroup.allReduce(t, ReduceOp.SUM);
        split = t.item();
        if (dataGroup != null && dataGroup.size() > 1) {
            Tensor e = Tensor.of(new float[] {(float) expert});
            dataGroup.allReduce(e, ReduceOp.SUM);
            // the expert replicas of the data ranks (dp_replicate × dp_shard) hold the same gradients
            expert = e.item() / (expertReplicaGroup.size() / tpGroup.size());
        }
        return Math.sqrt((float) split + (float) dense + (float) expert);
    }

    /** Whether tensor parallelism split some of the model's parameters. */
    public boolean hasTensorParallel() {
        return tpGroup != null;
    }

    /** Whether gradients, optimizer state and updates are sharded over {@code dp_shard}. */
    public boolean isSharded() {
        return shards != null;
    }

    /**
     * What the optimizer updates, by parameter name: the parameters themselves, or (sharded) this rank's
     * piece of each, a flat view into the parameter that carries the piece's gradient.
     */
    public Map<String, Tensor> optimizerParameters() {
        return shards == null ? model.namedParameters() : shards.pieces();
    }

    /**
     * Sharded: all-gathers every rank's pieces into whole parameters at once (before a published model's
     * weights are loaded into them; and before each forward of a model that is not an
     * {@link MoETransformer}, which has no per-module gathering); they are released again by
     * {@link #synchronize()} or {@link #releaseParameters()}. A transformer's forward needs no call: each
     * module gathers its own parameters. Unsharded (or already gathered): nothing to do.
     */
    public void gatherParameters() {
        if (shards != null) shards.gather();
    }

    /** Sharded: drops the whole parameters, keeping only this rank's pieces. */
    public void releaseParameters() {
        if (shards != null) shards.release();
    }

    /** Sharded: takes this rank's pieces from the whole parameters (after a checkpoint was loaded into them). */
    public void takePiecesFromParameters() {
        if (shards != null) shards.takePiecesFromWhole();
    }

    /** The global gradient norm of a sharded run, from the pieces (use {@link #isSharded()} first). */
    public double shardedGradientNorm() {
        return requireSharded().gradientNorm();
    }

    /**
     * The global names and shapes of what {@link #forEachGlobalTensor} hands out for values keyed like
     * {@link #optimizerParameters()}, in that order, without collectives: experts by global index, whole
     * tensors whatever tp and the sharding split.
     */
    public Map<String, int[]> globalShapes() {
        Map<String, int[]> local = new LinkedHashMap<>();
        if (shards != null) {
            local.putAll(shards.wholeShapes());
        } else {
            model.namedParameters().forEach((name, p) -> local.put(name, p.shape()));
        }
        TensorParallel.Layout tp = TensorParallel.layoutOf(model);
        if (tp != null) {
            tp.splits().forEach((name, split) -> {
                if (local.containsKey(name)) local.put(name, split.fullShape().clone());
            });
        }
        return GlobalStateDict.globalShapes(model, local);
    }

    /**
     * Assembles the global tensors of {@code byKey} (values keyed like {@link #optimizerParameters()}: the
     * parameters, their pieces, or optimizer moments) one parameter at a time, and hands each to {@code sink}
     * on a rank with {@code keep} (the one writing a checkpoint): the pieces are all-gathered over the shard
     * group, the tensor-parallel blocks over tp, the experts over their EP group. What one parameter needs
     * lives in a scope of its own, closed before the next parameter's: no rank ever holds more than one
     * parameter's assembled copies. Every rank calls it, in the same order. {@code perParameter}, if not
     * null, receives the host bytes each parameter's copies took.
     */
    public void forEachGlobalTensor(Map<String, Tensor> byKey, boolean keep, java.util.function.BiConsumer<String, Tensor> sink,
                                    java.util.function.LongConsumer perParameter) {
        for (var entry : byKey.entrySet()) {
            try (moe4j.tensor.MemoryScope scope = moe4j.tensor.MemoryScope.open()) {
                String name = entry.getKey();
                Tensor whole = shards == null ? entry.getValue() : shards.unshard(name, entry.getValue());
                Tensor unsplit = TensorParallel.unsplit(model, Map.of(name, whole)).get(name);
                GlobalStateDict.gather(model, Map.of(name, unsplit), keep).forEach(sink);
                if (perParameter != null) perParameter.accept(scope.allocatedBytes());
            }
        }
    }

    /**
     * Fills {@code byKey} (values keyed like {@link #optimizerParameters()}: the parameters, their pieces, or
     * optimizer moments) from the global tensors {@code global} gives by global name (a checkpoint's, already
     * checked against {@link #globalShapes()}): each rank takes its experts, its tp block and its piece of
     * each, one parameter at a time in a scope of its own. No collectives: every rank reads for itself.
     */
    public void loadGlobal(java.util.function.Function<String, Tensor> global, Map<String, Tensor> byKey, String source) {
        TensorParallel.Layout tp = TensorParallel.layoutOf(model);
        for (var entry : byKey.entrySet()) {
            String name = entry.getKey();
            Tensor target = entry.getValue();
            try (moe4j.tensor.MemoryScope scope = moe4j.tensor.MemoryScope.open()) {
                int[] local = shards != null ? shards.wholeShapes().get(name) : target.shape();
                TensorParallel.Split split = tp == null ? null : tp.splits().get(name);
                Tensor unsplit = Tensor.zeros(target.device(), split != null ? split.fullShape() : local);
                // a local name is a global one (list experts carry their global index); packed experts take their rows
                GlobalStateDict.prepareScatter(model, Map.of(name, global.apply(name)), Map.of(name, unsplit), source).run();
                Tensor whole = unsplit;
                if (split != null) {
                    whole = Tensor.zeros(target.device(), local);
                    TensorParallel.splitInto(model, Map.of(name, unsplit), Map.of(name, whole));
                }
                if (shards != null) shards.takePiece(name, whole, target);
                else target.copyFrom(whole);
            }
        }
    }

    /**
     * Sharded: the most bytes of whole parameters this rank held at once since the last
     * {@link #resetPeakGatheredParameterBytes()} (a counter kept as units are gathered and freed); 0 unsharded.
     */
    public long peakGatheredParameterBytes() {
        return shards == null ? 0 : shards.peakGatheredBytes();
    }

    public void resetPeakGatheredParameterBytes() {
        if (shards != null) shards.resetPeakGatheredBytes();
    }

    /**
     * Sharded: the peak of whole-parameter bytes a training step holds by the gathering schedule (the
     * largest pair of neighbouring modules and the final norm); unsharded, the whole model.
     */
    public long plannedPeakGatheredParameterBytes() {
        return shards == null ? wholeParameterBytes() : shards.plannedPeakGatheredBytes();
    }

    /** Bytes of this rank's whole (tp/ep-local) parameters, float32. */
    public long wholeParameterBytes() {
        if (shards != null) return shards.wholeModelBytes();
        long parameters = 0;
        for (Tensor p : model.parameters()) parameters += p.numel() * Float.BYTES;
        return parameters;
    }

    /** Bytes this rank sends per step for the sharded gradient reduce-scatter and parameter all-gather (0 unsharded). */
    public long shardingBytesPerStep() {
        return shards == null ? 0 : shards.bytesSentPerStep();
    }

    /**
     * Bytes this rank keeps between steps for parameters, gradients and the two AdamW moments (float32):
     * sharded, its pieces of each.
     */
    public long trainingStateBytes() {
        if (shards != null) return shards.stateBytes();
        long parameters = 0;
        for (Tensor p : model.parameters()) parameters += p.numel() * Float.BYTES;
        return 4 * parameters;
    }

    /** {@link #trainingStateBytes()} of the same (tp/ep-local) parameters without sharding. */
    public long unshardedTrainingStateBytes() {
        if (shards != null) return shards.unshardedStateBytes();
        return trainingStateBytes();
    }

    private ParameterShards requireSharded() {
        if (shards == null) throw new IllegalStateException("this run's gradients are not sharded (dp_shard = 1)");
        return shards;
    }

    /** The group over which a global quantity (loss, token count, gradient norm of dense parts) is reduced. */
    public ProcessGroup dataGroup() {
        return dataGroup;
    }

    public ProcessGroup expertReplicaGroup() {
        return expertReplicaGroup;
    }

    public boolean isExpertParameter(Tensor p) {
        return expertParameters.contains(p);
    }

    /** Reduces every parameter's gradient in place (see the class comment). Parameters without a gradient get zeros. */
    public void synchronize() {
        if (shards != null) {
            shards.reduceScatterGradients();
            return;
        }
        for (var entry : model.namedParameters().entrySet()) {
            if (!tpPartial.contains(entry.getKey())) continue;
            Tensor p = entry.getValue();
            if (p.grad() == null) p.setGrad(Module.persistentZerosLike(p));
            tpGroup.allReduce(p.grad(), ReduceOp.SUM);
        }
        boolean dataRanks = dataGroup != null && dataGroup.size() > 1;
        // tp alone (one data rank) still has expert replicas: each tp rank's experts saw only its slice of the tokens
        boolean expertReplicas = expertReplicaGroup != null && expertReplicaGroup.size() > 1;
        if (!dataRanks && !expertReplicas) return;
        float inverseDataRanks = dataRanks ? 1f / dataGroup.size() : 1f;
        for (Tensor p : model.parameters()) {
            boolean expert = expertParameters.contains(p);
            if (!dataRanks && !expert) continue;
            if (p.grad() == null) p.setGrad(Module.persistentZerosLike(p));
            Tensor g = p.grad();
            if (expert) {
                if (expertReplicas) expertReplicaGroup.allReduce(g, ReduceOp.SUM);
                if (dataRanks) Kernels.of(g.device()).elementwise().scale(inverseDataRanks, g, g);
            } else {
                dataGroup.allReduce(g, ReduceOp.AVG);
            }
        }
    }
}
