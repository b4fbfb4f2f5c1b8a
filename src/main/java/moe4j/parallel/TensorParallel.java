package moe4j.parallel;

import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.Map;
import java.util.WeakHashMap;
import moe4j.autograd.Autograd;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.nn.Attention;
import moe4j.nn.Embedding;
import moe4j.nn.Expert;
import moe4j.nn.Linear;
import moe4j.nn.MoEMLP;
import moe4j.nn.MoETransformer;
import moe4j.nn.ModelConfig;
import moe4j.nn.Module;
import moe4j.nn.TransformerBlock;
import moe4j.ops.Ops;
import moe4j.tensor.Device;
import moe4j.tensor.Tensor;

/**
 * Tensor parallelism over the mesh's {@code "tp"} dimension, Megatron style, applied to a model built as
 * for one rank (so every rank starts from the same full weights and keeps its block):
 * <ul>
 *   <li>attention by heads: Q, K, V column-parallel (this rank's heads), O row-parallel;</li>
 *   <li>dense SwiGLU MLPs (and an MoE layer's shared expert): gate and up column-parallel, down row-parallel;</li>
 *   <li>token embedding, output projection and cross-entropy vocabulary-parallel;</li>
 *   <li>MoE layers: the router runs on every token (the same on every tp rank), then each tp rank sends
 *       only its slice of the tokens to the experts and the slices are gathered afterwards, so no expert
 *       computes a token twice; experts are not split by tp.</li>
 * </ul>
 * In a transformer's blocks the activations between the parallel regions are split over the tokens
 * (sequence parallelism: each tp rank normalises and adds its own rows; column-parallel regions gather
 * the rows, row-parallel ones reduce-scatter into them); elsewhere they are replicated over tp. The
 * differentiable collectives below keep forward and backward consistent: {@link #copyToTp} (identity,
 * all-reduce of the gradient), {@link #reduceFromTp} (all-reduce, identity gradient), {@link #sliceRows}
 * (keep my rows, all-gather the gradient), {@link #gatherRows} (all-gather, keep my rows of the gradient),
 * {@link #gatherRowsSummingGradients} (all-gather, reduce-scatter of the gradient) and
 * {@link #reduceScatterRows} (reduce-scatter, all-gather of the gradient).
 */
public final class TensorParallel {
    private TensorParallel() {}

    /** How one parameter is split: along dim 0 (rows) or dim 1 (columns), and its full shape. */
    record Split(int dim, int[] fullShape) {}

    /**
     * The tp group and the split parameters (by qualified name) of a model that tensor parallelism was applied
     * to, and the parameters each tp rank applies to its own slice of the tokens (the norms under sequence
     * parallelism), whose gradients are partial sums over tp.
     */
    record Layout(ProcessGroup group, Map<String, Split> splits, java.util.Set<String> sequenceParallel) {}

    /**
     * The shape of the current forward's activations (B, S), set by the first block: under sequence
     * parallelism each tp rank holds its {@link #rowStart} block of the B·S token rows between the parallel
     * regions, as a (1, rows, D) tensor.
     */
    private static final class SequenceRows {
        int batch;
        int sequence;

        int tokens() {
            return batch * sequence;
        }
    }

    private static final Map<Module, Layout> LAYOUTS = Collections.synchronizedMap(new WeakHashMap<>());

    /** The tensor-parallel layout of {@code model}, or null when tp = 1. */
    static Layout layoutOf(Module model) {
        return LAYOUTS.get(model);
    }

    /**
     * Splits {@code model} over the mesh's "tp" dimension; no-op without one (or tp = 1). Must come first
     * of the model transformations, once.
     */
    public static void apply(Module model, DeviceMesh mesh) {
        if (mesh == null || !mesh.hasDim("tp") || mesh.size("tp") == 1) return;
        ParallelPlan.of(model).require(ParallelPlan.Stage.TENSOR_PARALLEL);
        ProcessGroup tp = mesh.get("tp").group();
        int n = tp.size();
        int r = tp.rank();
        Map<Tensor, Split> byTensor = new IdentityHashMap<>();
        checkDivisible(model, n);
        // sequence parallelism in a transformer's blocks: between the parallel regions each tp rank keeps
        // its slice of the tokens (norms and residual adds on the slice only); a column-parallel region
        // all-gathers the slices first, a row-parallel one reduce-scatters into them instead of all-reducing
        SequenceRows rows = model instanceof MoETransformer t && !t.layers().isEmpty() ? new SequenceRows() : null;
        for (Module m : model.namedModules().values()) {
            switch (m) {
                case Attention a -> {
                    columnParallel(a.wq(), n, r, byTensor);
                    columnParallel(a.wk(), n, r, byTensor);
                    columnParallel(a.wv(), n, r, byTensor);
                    rowParallel(a.wo(), n, r, byTensor);
                    if (rows == null) {
                        a.wrapForward((x, body) -> reduceFromTp(body.apply(copyToTp(x, tp)), tp));
                    } else {
                        a.wrapForward((x, body) -> {
                            Tensor all = gatherRowsSummingGradients(Ops.reshape(x, x.dim(1), x.dim(2)), rows.tokens(), tp);
                            Tensor out = body.apply(Ops.reshape(all, rows.batch, rows.sequence, x.dim(2)));
                            return Ops.reshape(reduceScatterRows(Ops.reshape(out, rows.tokens(), x.dim(2)), tp), x.shape());
                        });
                    }
                }
                case TransformerBlock block when block.mlp() != null -> splitMlp(block.mlp(), tp, byTensor, rows);
                case MoEMLP moe -> {
                    if (moe.sharedExpert() != null) splitMlp(moe.sharedExpert(), tp, byTensor, null);
                    moe.setDispatcher(SequenceParallelDispatcher.around(moe.dispatcher(), tp));
                    if (rows != null) {
                        // the router sees every token (the same on every tp rank), as without sequence parallelism;
                        // its dispatcher sends this rank's slice to the experts; this rank keeps its slice of the result
                        moe.wrapForward((x, body) -> {
                            Tensor all = gatherRows(Ops.reshape(x, x.dim(1), x.dim(2)), rows.tokens(), tp);
                            return Ops.reshape(sliceRows(body.apply(all), tp), x.shape());
                        });
                    }
                }
                default -> {}
            }
        }
        java.util.Set<Tensor> partial = java.util.Collections.newSetFromMap(new IdentityHashMap<>());
        if (model instanceof MoETransformer transformer) {
            splitVocabulary(transformer, tp, byTensor);
            if (rows != null) sliceBetweenBlocks(transformer, rows, tp, partial);
        }
        Map<String, Split> splits = new java.util.LinkedHashMap<>();
        java.util.Set<String> sequenceParallel = new java.util.HashSet<>();
        model.namedParameters().forEach((name, p) -> {
            if (byTensor.containsKey(p)) splits.put(name, byTensor.get(p));
            if (partial.contains(p)) sequenceParallel.add(name);
        });
        LAYOUTS.put(model, new Layout(tp, splits, sequenceParallel));
        ParallelPlan.of(model).mark(ParallelPlan.Stage.TENSOR_PARALLEL);
    }

    /**
     * Throws, naming the setting, unless a model of {@code config} can be split over {@code tp} ranks: what a
     * run's configuration is checked against before any rank starts.
     */
    public static void requireSplittable(ModelConfig config, int tp) {
        if (tp == 1) return;
        requireHeads(config.nHeads(), config.nKvHeads(), tp);
        if (config.tieEmbeddings()) throw new IllegalArgumentException(TIED);
        requireVocabulary(config.vocabSize(), tp);
        if (config.numMoeLayers() < config.nLayers()) requireHidden(config.ffnHidden(), tp);
        if (config.numMoeLayers() > 0 && config.moeSharedExperts() > 0) requireHidden(config.expertHidden(), tp);
        if (config.numMoeLayers() > 0 && config.moeGradientScale()) throw new IllegalArgumentException(GRADIENT_SCALE);
    }

    private static final String TIED = "tensor parallelism needs untied embeddings (tie_embeddings = false)";
    private static final String GRADIENT_SCALE = "gradient scaling (moe_gradient_scale) with tp > 1 is not supported:"
            + " its expert loads would count one tp rank's tokens only; use tp = 1";

    private static void requireHeads(int heads, int kvHeads, int tp) {
        if (heads % tp != 0 || kvHeads % tp != 0) {
            throw new IllegalArgumentException("n_heads (" + heads + ") and n_kv_heads (" + kvHeads + ") must be divisible by tp (" + tp + ")");
        }
    }

    private static void requireHidden(int hidden, int tp) {
        if (hidden % tp != 0) {
            throw new IllegalArgumentException("the hidden size of a dense MLP or shared expert (" + hidden + ") must be divisible by tp ("
                    + tp + ")");
        }
    }

    private static void requireVocabulary(int vocab, int tp) {
        if (vocab % tp != 0) throw new IllegalArgumentException("vocab_size (" + vocab + ") must be divisible by tp (" + tp + ")");
    }

    private static void checkDivisible(Module model, int n) {
        for (Module m : model.namedModules().values()) {
            if (m instanceof Attention a) {
                requireHeads(a.nHeads(), a.nKvHeads(), n);
                if (a.options().qkNorm() == moe4j.nn.QkNorm.ALL_HEADS) {
                    throw new IllegalArgumentException("QK-norm over all heads (qk_norm = all_heads) with tp > 1 is not supported:"
                            + " it normalises across the heads tp splits; use tp = 1");
                }
            }
            if (m instanceof TransformerBlock block && block.mlp() != null) requireHidden(block.mlp().upProj().outFeatures(), n);
            if (m instanceof MoEMLP moe) {
                if (moe.sharedExpert() != null) requireHidden(moe.sharedExpert().upProj().outFeatures(), n);
                if (moe.config().gradientScale()) throw new IllegalArgumentException(GRADIENT_SCALE);
            }
        }
        if (model instanceof MoETransformer t) {
            if (t.output() == null) throw new IllegalArgumentException(TIED);
            requireVocabulary(t.config().vocabSize(), n);
        }
    }

    /** {@code rows} null: the MLP's input is replicated over tp; else it is this rank's slice of the tokens (T_r, D). */
    private static void splitMlp(Expert mlp, ProcessGroup tp, Map<Tensor, Split> splits, SequenceRows rows) {
        int n = tp.size();
        int r = tp.rank();
        if (mlp.gateProj() != null) columnParallel(mlp.gateProj(), n, r, splits);
        columnParallel(mlp.upProj(), n, r, splits);
        rowParallel(mlp.downProj(), n, r, splits);
        if (rows == null) {
            mlp.wrapForward((x, body) -> reduceFromTp(body.apply(copyToTp(x, tp)), tp));
        } else {
            mlp.wrapForward((x, body) -> reduceScatterRows(body.apply(gatherRowsSummingGradients(x, rows.tokens(), tp)), tp));
        }
    }

    /**
     * The first block takes this rank's slice of the (replicated) embedded tokens, the last one gathers the
     * slices for the final norm and the vocabulary-parallel output; the blocks' norms, applied to slices, get
     * partial gradients ({@code partial}).
     */
    private static void sliceBetweenBlocks(MoETransformer model, SequenceRows rows, ProcessGroup tp, java.util.Set<Tensor> partial) {
        java.util.List<TransformerBlock> blocks = model.layers();
        blocks.get(0).wrapForward((x, body) -> {
            rows.batch = x.dim(0);
            rows.sequence = x.dim(1);
            Tensor mine = sliceRows(Ops.reshape(x, rows.tokens(), x.dim(2)), tp);
            return body.apply(Ops.reshape(mine, 1, mine.dim(0), x.dim(2)));
        });
        blocks.get(blocks.size() - 1).wrapForward((x, body) -> {
            Tensor out = body.apply(x);
            Tensor all = gatherRows(Ops.reshape(out, out.dim(1), out.dim(2)), rows.tokens(), tp);
            return Ops.reshape(all, rows.batch, rows.sequence, out.dim(2));
        });
        for (TransformerBlock block : blocks) {
            partial.add(block.attentionNorm().weight());
            partial.add(block.ffnNorm().weight());
        }
    }

    private static void columnParallel(Linear linear, int n, int r, Map<Tensor, Split> splits) {
        int[] full = linear.weight().shape();
        int[] fullBias = linear.bias() == null ? null : linear.bias().shape();
        int block = full[0] / n;
        linear.keepOutputs(r * block, (r + 1) * block);
        splits.put(linear.weight(), new Split(0, full));
        if (fullBias != null) splits.put(linear.bias(), new Split(0, fullBias));
    }

    private static void rowParallel(Linear linear, int n, int r, Map<Tensor, Split> splits) {
        int[] full = linear.weight().shape();
        int block = full[1] / n;
        linear.keepInputs(r * block, (r + 1) * block);
        splits.put(linear.weight(), new Split(1, full));
    }

    private static void splitVocabulary(MoETransformer model, ProcessGroup tp, Map<Tensor, Split> splits) {
        int n = tp.size();
        int r = tp.rank();
        int block = model.config().vocabSize() / n;
        int start = r * block;
        int end = start + block;
        Embedding embedding = model.tokEmbeddings();
        int[] full = embedding.weight().shape();
        embedding.keepRows(start, end);
        splits.put(embedding.weight(), new Split(0, full));
        // ids outside my block look up row 0 and are zeroed; the sum over tp holds every id's row once
        embedding.wrapForward((ids, body) -> {
            int[] id = ids.to(Device.CPU).toIntArray();
            int[] local = new int[id.length];
            float[] mine = new float[id.length];
            for (int i = 0; i < id.length; i++) {
                boolean here = id[i] >= start && id[i] < end;
                local[i] = here ? id[i] - start : 0;
                mine[i] = here ? 1f : 0f;
            }
            Tensor rows = body.apply(Tensor.ofInts(local, local.length).to(ids.device()));
            return reduceFromTp(Ops.mulRows(rows, Tensor.of(mine, mine.length).to(rows.device())), tp);
        });
        columnParallel(model.output(), n, r, splits);
        model.output().wrapForward((x, body) -> body.apply(copyToTp(x, tp)));
        model.setCrossEntropy((logits, targets) -> vocabParallelCrossEntropy(logits, targets, start, tp));
    }

    /**
     * Mean cross-entropy of logits split by vocabulary columns ({@code logits} (N, V/tp) holds columns
     * {@code [start, start + V/tp)}) against int32 targets (N), −1 ignored; the same value on every tp rank.
     * {@code log Σ_v exp} combines the ranks' row-wise log-sum-exps, the target's logit comes from the rank
     * that holds its column; no rank ever holds a full row of logits.
     */
    static Tensor vocabParallelCrossEntropy(Tensor logits, Tensor targets, int start, ProcessGroup tp) {
        int n = logits.dim(0);
        int v = logits.dim(1);
        int[] target = targets.to(Device.CPU).toIntArray();
        int[] column = new int[n];
        float[] mine = new float[n];
        float[] valid = new float[n];
        int counted = 0;
        for (int i = 0; i < n; i++) {
            boolean here = target[i] >= start && target[i] < start + v;
            column[i] = here ? target[i] - start : 0;
            mine[i] = here ? 1f : 0f;
            valid[i] = target[i] == -1 ? 0f : 1f;
            if (target[i] != -1) counted++;
        }
        Device device = logits.device();
        // (tp, N): row r holds rank r's log Σ exp over its columns; its transpose's rows are combined per token
        Tensor partialLse = gatherRows(Ops.reshape(Ops.logSumExp(logits), 1, n), tp.size(), tp);
        Tensor lse = Ops.logSumExp(Ops.matmul(partialLse, true, identity(tp.size(), device), false));
        Tensor picked = Ops.reshape(Ops.gatherColumns(logits, Tensor.ofInts(column, n, 1).to(device)), n);
        Tensor myTargets = Ops.mul(picked, Tensor.of(mine, n).to(device));
        Tensor targetLogit = Ops.sum(gatherRows(Ops.reshape(myTargets, 1, n), tp.size(), tp), 0);
        Tensor perToken = Ops.mul(Ops.sub(lse, targetLogit), Tensor.of(valid, n).to(device));
        return Ops.scale(Ops.sum(perToken), 1.0 / Math.max(counted, 1));
    }

    private static Tensor identity(int n, Device device) {
        Tensor eye = Tensor.zeros(n, n);
        for (int i = 0; i < n; i++) eye.set(i, i, 1f);
        return eye.to(device);
    }

    // ---------------------------------------------------------------- whole tensors for checkpoints

    /**
     * The whole (tp-unsplit) value of each entry of {@code local}, keyed by parameter name like the model's
     * parameters (the parameters themselves or per-parameter optimizer moments): a collective over tp for
     * each split tensor, in name order. Without tensor parallelism, {@code local} itself.
     */
    static Map<String, Tensor> unsplit(Module model, Map<String, Tensor> local) {
        Layout layout = layoutOf(model);
        if (layout == null) return local;
        Map<String, Tensor> out = new java.util.LinkedHashMap<>();
        ProcessGroup tp = layout.group();
        local.forEach((name, value) -> {
            Split split = layout.splits().get(name);
            if (split == null) {
                out.put(name, value);
                return;
            }
            int[] full = split.fullShape();
            Tensor whole = Tensor.zeros(value.device(), value.dtype(), full);
            if (split.dim() == 0) {
                tp.allGather(whole, value.copy());
            } else {
                // columns travel as rows of each rank's block, then take their places in every row
                int rows = full[0];
                int block = full[1] / tp.size();
                Tensor blocks = Tensor.zeros(value.device(), value.dtype(), tp.size() * rows, block);
                tp.allGather(blocks, value.copy());
                Tensor flat = whole.view(-1);
                for (int c = 0; c < tp.size(); c++) {
                    for (int r = 0; r < rows; r++) {
                        flat.rows(r * full[1] + c * block, r * full[1] + (c + 1) * block).copyFrom(blocks.rows(c * rows + r, c * rows + r + 1));
                    }
                }
            }
            out.put(name, whole);
        });
        return out;
    }

    /** Copies this tp rank's block of each whole tensor in {@code whole} into {@code local}. */
    static void splitInto(Module model, Map<String, Tensor> whole, Map<String, Tensor> local) {
        Layout layout = layoutOf(model);
        if (layout == null) return;
        int n = layout.group().size();
        int rank = layout.group().rank();
        local.forEach((name, target) -> {
            Split split = layout.splits().get(name);
            if (split == null) return;
            int[] full = split.fullShape();
            Tensor src = whole.get(name);
            if (split.dim() == 0) {
                int block = full[0] / n;
                target.copyFrom(src.rows(rank * block, (rank + 1) * block));
            } else {
                int block = full[1] / n;
                Tensor flat = src.view(-1);
                Tensor out = target.view(-1);
                for (int r = 0; r < full[0]; r++) {
                    out.rows(r * block, (r + 1) * block).copyFrom(flat.rows(r * full[1] + rank * block, r * full[1] + (rank + 1) * block));
                }
            }
        });
    }

    // ---------------------------------------------------------------- differentiable collectives over tp

    /** Forward: {@code x} as it is (replicated over tp). Backward: the gradient summed over tp. */
    static Tensor copyToTp(Tensor x, ProcessGroup tp) {
        Tensor out = x.copy();
        return Autograd.recordAlways(out, "tp copy", new Tensor[] {x}, g -> {
            Tensor sum = g.copy();
            tp.allReduce(sum, ReduceOp.SUM);
            return new Tensor[] {sum};
        });
    }

    /** Forward: the partial results of the tp ranks summed. Backward: the (replicated) gradient as it is. */
    static Tensor reduceFromTp(Tensor x, ProcessGroup tp) {
        Tensor out = x.copy();
        tp.allReduce(out, ReduceOp.SUM);
        return Autograd.recordAlways(out, "tp all-reduce", new Tensor[] {x}, g -> new Tensor[] {g});
    }

    /** Rank r's rows of a tensor of {@code total} rows split as evenly as possible (the first ranks one more). */
    static int rowStart(int total, int ranks, int rank) {
        return (int) ((long) total * rank / ranks);
    }

    /** Forward: this tp rank's block of rows of replicated {@code x}. Backward: the blocks' gradients all-gathered. */
    static Tensor sliceRows(Tensor x, ProcessGroup tp) {
        int total = x.dim(0);
        int start = rowStart(total, tp.size(), tp.rank());
        int end = rowStart(total, tp.size(), tp.rank() + 1);
        Tensor out = x.rows(start, end).copy();
        return Autograd.recordAlways(out, "tp slice", new Tensor[] {x}, g -> {
            Tensor full = Tensor.zeros(g.device(), g.dtype(), x.shape());
            tp.allGather(full, g.copy());
            return new Tensor[] {full};
        });
    }

    /**
     * Forward: every tp rank's block of rows ({@link #rowStart} blocks of {@code total}), concatenated in rank
     * order. Backward: the tp ranks' partial gradients of all rows summed and this rank's block kept (a
     * reduce-scatter): the input of a column-parallel region under sequence parallelism, whose ranks each
     * contribute their heads' or columns' share of the input gradient.
     */
    static Tensor gatherRowsSummingGradients(Tensor x, int total, ProcessGroup tp) {
        Tensor out = allGatherBlocks(x, total, tp);
        return Autograd.recordAlways(out, "tp sequence gather", new Tensor[] {x}, g -> new Tensor[] {reduceScatterBlocks(g, tp)});
    }

    /**
     * Forward: the tp ranks' partial results of all rows summed, this rank's {@link #rowStart} block kept (a
     * reduce-scatter instead of {@link #reduceFromTp}'s all-reduce). Backward: the blocks' gradients
     * all-gathered.
     */
    static Tensor reduceScatterRows(Tensor x, ProcessGroup tp) {
        Tensor out = reduceScatterBlocks(x, tp);
        int total = x.dim(0);
        return Autograd.recordAlways(out, "tp sequence reduce-scatter", new Tensor[] {x}, g -> new Tensor[] {allGatherBlocks(g, total, tp)});
    }

    private static Tensor allGatherBlocks(Tensor x, int total, ProcessGroup tp) {
        int start = rowStart(total, tp.size(), tp.rank());
        int end = rowStart(total, tp.size(), tp.rank() + 1);
        if (x.dim(0) != end - start) {
            throw new IllegalArgumentException("tp gather: rank " + tp.rank() + " holds " + x.dim(0) + " rows, its block of "
                    + total + " is " + (end - start));
        }
        int[] shape = x.shape();
        shape[0] = total;
        Tensor out = Tensor.zeros(x.device(), x.dtype(), shape);
        tp.allGather(out, x.copy());
        return out;
    }

    /** The sum over tp of {@code full}'s rows, this rank's {@link #rowStart} block of them (blocks padded to one size on the wire). */
    private static Tensor reduceScatterBlocks(Tensor full, ProcessGroup tp) {
        int total = full.dim(0);
        int n = tp.size();
        int per = (total + n - 1) / n;
        int[] shape = full.shape();
        shape[0] = per * n;
        Tensor padded = Tensor.zeros(full.device(), full.dtype(), shape);
        for (int q = 0; q < n; q++) {
            int start = rowStart(total, n, q);
            int end = rowStart(total, n, q + 1);
            padded.rows(q * per, q * per + end - start).copyFrom(full.rows(start, end));
        }
        shape[0] = per;
        Tensor out = Tensor.zeros(full.device(), full.dtype(), shape);
        tp.reduceScatter(out, padded, ReduceOp.SUM);
        int mine = rowStart(total, n, tp.rank() + 1) - rowStart(total, n, tp.rank());
        return out.rows(0, mine).copy();
    }

    /**
     * Forward: every tp rank's block of rows ({@link #rowStart} blocks of {@code total} rows), concatenated
     * in rank order. Backward: this rank's block of the (replicated) gradient.
     */
    static Tensor gatherRows(Tensor x, int total, ProcessGroup tp) {
        int start = rowStart(total, tp.size(), tp.rank());
        int end = rowStart(total, tp.size(), tp.rank() + 1);
        Tensor out = allGatherBlocks(x, total, tp);
        return Autograd.recordAlways(out, "tp gather", new Tensor[] {x}, g -> new Tensor[] {g.rows(start, end).copy()});
    }
}
