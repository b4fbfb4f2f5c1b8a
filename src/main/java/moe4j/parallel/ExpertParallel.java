package moe4j.parallel;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import moe4j.autograd.Autograd;
import moe4j.autograd.Profiler;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.ProcessGroup;
import moe4j.nn.MoEMLP;
import moe4j.nn.Module;
import moe4j.nn.Routing;
import moe4j.nn.TokenDispatcher;
import moe4j.ops.Ops;
import moe4j.tensor.Tensor;

/**
 * Expert parallelism: the experts of every MoE layer are split over the ranks of the mesh's {@code "ep"}
 * dimension, and tokens travel to the rank that owns their expert and back by two all-to-alls.
 *
 * <p>Rank r of an EP group of size P owns the contiguous block of global experts
 * {@code [r·E_l, (r+1)·E_l)}, {@code E_l = E / P}; the owner of expert g is {@code g / E_l}.
 *
 * <p>The collective contract: every rank of the group issues the same collectives in the same order,
 * forward and backward, whatever its counts (splits of 0 are legal, a rank with no tokens still takes
 * part). The all-to-alls are recorded for backward whenever recording is on, and the autograd engine runs
 * every recorded node, so backward exchanges happen on every rank by construction. Ranks also exchange
 * the layer's shape (E, D, K, layer index) with the counts, so a rank running a different layer fails
 * with a clear error on every rank instead of exchanging garbage.
 */
public final class ExpertParallel {
    private ExpertParallel() {}

    private static final System.Logger LOG = System.getLogger(ExpertParallel.class.getName());

    /** Values each rank appends to its count chunk for every peer: its total of kept entries, then E, D, K, layer. */
    private static final int TRAILER = 5;

    /**
     * Partitions every {@link MoEMLP} of {@code model} (the root included) over the mesh's {@code "ep"}
     * dimension: this rank keeps its block of experts, and the layers dispatch through all-to-alls.
     * No-op without a mesh, without an "ep" dimension or with ep = 1. Must come after tensor parallelism
     * and before FSDP-style sharding, and only once.
     */
    public static void apply(Module model, DeviceMesh mesh) {
        if (mesh == null || !mesh.hasDim("ep") || mesh.size("ep") == 1) return;
        ParallelPlan.of(model).require(ParallelPlan.Stage.EXPERT_PARALLEL);
        DeviceMesh ep = mesh.get("ep");
        int p = ep.size();
        int r = ep.localRank();
        List<MoEMLP> layers = new ArrayList<>();
        for (Module m : model.namedModules().values()) {
            if (m instanceof MoEMLP moe) layers.add(moe);
        }
        for (MoEMLP moe : layers) {
            int e = moe.numExperts();
            if (e % p != 0) throw new IllegalArgumentException("num_experts (" + e + ") must be divisible by ep (" + p + ")");
        }
        for (int i = 0; i < layers.size(); i++) {
            MoEMLP moe = layers.get(i);
            int local = moe.numExperts() / p;
            moe.keepExperts(r * local, local);
            moe.setExpertParallel(DISPATCHER, ep.group(), p, i);
        }
        ParallelPlan.of(model).mark(ParallelPlan.Stage.EXPERT_PARALLEL);
        LOG.log(System.Logger.Level.INFO, "Applied expert parallelism: ep_size={0}, ep_rank={1}, layers={2}", p, r, layers.size());
    }

    /** The dispatcher {@link #apply} installs: the layer's EP metadata feed {@link #dispatchAndCompute}. */
    private static final TokenDispatcher DISPATCHER = (x, weights, indices, moe, gradientScale) ->
            dispatchAndCompute(x, weights, indices, moe, moe.epGroup(), moe.localExpertStart(), moe.numLocalExperts(),
                    moe.epWorldSize(), gradientScale);

    /**
     * The expert-parallel MoE computation for this rank's tokens {@code x_TD}, routed by
     * {@code weights_TK} and global expert {@code indices_TK} (−1 = dropped by capacity: never sent).
     * Returns {@code out_TD}, each token's weighted sum of its experts' outputs, wherever they ran.
     */
    public static Tensor dispatchAndCompute(Tensor x, Tensor weights, Tensor indices, MoEMLP moe, ProcessGroup epGroup,
                                            int localExpertStart, int numLocalExperts, int epWorldSize, boolean gradientScale) {
        // Checked before the first collective: a bad input fails here and breaks the group, so the peers
        // fail too instead of waiting for a count exchange that never comes.
        moe.checkRoutingInputs("ExpertParallel.dispatchAndCompute", x, weights, indices);
        int numExperts = moe.numExperts();
        int d = x.dim(1);
        int k = indices.dim(1);
        if (epGroup.size() != epWorldSize || numLocalExperts * epWorldSize != numExperts
                || localExpertStart != epGroup.rank() * numLocalExperts) {
            throw new IllegalArgumentException("dispatchAndCompute: inconsistent EP metadata: group of " + epGroup.size()
                    + " ranks (this is rank " + epGroup.rank() + "), epWorldSize=" + epWorldSize + ", experts ["
                    + localExpertStart + ", " + (localExpertStart + numLocalExperts) + ") of " + numExperts);
        }

        // 1-2. Expand the kept (token, slot) entries and sort them stably by global expert id, which also
        //      groups them by destination rank (the owner of expert g is g / E_l).
        Routing routing;
        Tensor sendRows;
        int[] sendSplits = new int[epWorldSize];
        try (var p = Profiler.phase("permute")) {
            routing = Routing.sortByExpert(indices, numExperts);
            for (int g = 0; g < numExperts; g++) sendSplits[g / numLocalExperts] += routing.rowsPerExpert()[g];
            sendRows = Ops.indexSelect(x, routing.tokenOfRow());
        }

        // 3. Exchange counts: to every peer, how many rows of each of its experts follow, then my total of
        //    kept entries and this layer's shape, which every receiver checks. No expert id travels.
        int chunk = numLocalExperts + TRAILER;
        int[] send = new int[epWorldSize * chunk];
        for (int peer = 0; peer < epWorldSize; peer++) {
            System.arraycopy(routing.rowsPerExpert(), peer * numLocalExperts, send, peer * chunk, numLocalExperts);
            int t = peer * chunk + numLocalExperts;
            send[t] = routing.rowCount();
            send[t + 1] = numExperts;
            send[t + 2] = d;
            send[t + 3] = k;
            send[t + 4] = moe.layerIndex();
        }
        int[] received;
        try (var p = Profiler.phase("count exchange")) {
            received = epGroup.allToAll(send, chunk);
        }
        int[] recvSplits = new int[epWorldSize];
        int[] rowsPerLocalExpert = new int[numLocalExperts];
        long globalEntries = 0;
        for (int src = 0; src < epWorldSize; src++) {
            int t = src * chunk + numLocalExperts;
            checkSameLayer(received, t, src, epGroup, numExperts, d, k, moe.layerIndex());
            globalEntries += received[t];
            for (int j = 0; j < numLocalExperts; j++) {
                recvSplits[src] += received[src * chunk + j];
                rowsPerLocalExpert[j] += received[src * chunk + j];
            }
        }

        // 4. Dispatch: each row to the rank that owns its expert.
        Tensor recvRows;
        try (var p = Profiler.phase("dispatch all-to-all")) {
            recvRows = allToAll(sendRows, recvSplits, sendSplits, epGroup, "dispatch");
        }

        // 5. Local compute: regroup the received rows by local expert (they arrive by source rank, then
        //    expert), run the ragged grouped GEMM, restore the received order.
        Tensor byExpert;
        Tensor regroup = null;
        try (var p = Profiler.phase("permute")) {
            if (epWorldSize > 1) {
                // built from the host counts, then copied once to the rows' device
                regroup = regroupByExpert(received, chunk, epWorldSize, numLocalExperts).to(recvRows.device());
                byExpert = Ops.indexSelect(recvRows, regroup);
            } else {
                byExpert = recvRows;
            }
        }
        Tensor expertOut = moe.computeLocalExperts(byExpert, rowsPerLocalExpert);

        // 6. Gradient scaling: n_e counts the whole group's entries for expert e (what its owner received),
        //    avg is the group's total over E, so P ranks compute what one rank would on all their tokens.
        try (var p = Profiler.phase("unpermute")) {
            if (gradientScale) {
                expertOut = Ops.mulRows(expertOut,
                        MoEMLP.gradientScaleRows(rowsPerLocalExpert, globalEntries, numExperts).to(expertOut.device()));
            }
            if (regroup != null) expertOut = Ops.indexAdd(expertOut.dim(0), regroup, expertOut);
        }

        // 7. Combine: the reverse all-to-all returns every row to the rank it came from.
        Tensor back;
        try (var p = Profiler.phase("combine all-to-all")) {
            back = allToAll(expertOut, sendSplits, recvSplits, epGroup, "combine");
        }

        // 8. Un-sort, weight and scatter-add by token. Routing weights never travel: the router's gradient stays local.
        try (var p = Profiler.phase("unpermute")) {
            return routing.weightAndCombine(back, weights, x.dim(0));
        }
    }

    /** The received rows' indices in (local expert, source rank) order: row i of the grouped layout is received row regroup[i]. */
    private static Tensor regroupByExpert(int[] received, int chunk, int sources, int localExperts) {
        int[] blockStart = new int[sources * localExperts];
        int total = 0;
        for (int src = 0; src < sources; src++) {
            for (int j = 0; j < localExperts; j++) {
                blockStart[src * localExperts + j] = total;
                total += received[src * chunk + j];
            }
        }
        int[] order = new int[total];
        int i = 0;
        for (int j = 0; j < localExperts; j++) {
            for (int src = 0; src < sources; src++) {
                int start = blockStart[src * localExperts + j];
                int n = received[src * chunk + j];
                for (int r = 0; r < n; r++) order[i++] = start + r;
            }
        }
        return Tensor.ofInts(order, total);
    }

    private static void checkSameLayer(int[] received, int at, int src, ProcessGroup group, int e, int d, int k, int layer) {
        int[] mine = {e, d, k, layer};
        int[] theirs = Arrays.copyOfRange(received, at + 1, at + 5);
        if (!Arrays.equals(mine, theirs)) {
            throw new IllegalStateException("expert parallelism: rank " + group.rank() + " of group '" + group.name()
                    + "' runs MoE layer " + layer + " with E=" + e + ", D=" + d + ", K=" + k + " but rank " + src
                    + " runs layer " + theirs[3] + " with E=" + theirs[0] + ", D=" + theirs[1] + ", K=" + theirs[2]
                    + ": every EP rank must run the same layers in the same order");
        }
    }

    /**
     * The differentiable variable-split all-to-all of rows: {@code in}'s rows go out in consecutive runs of
     * {@code inSplits[peer]}, {@code outSplits[src]} rows arrive from each source in rank order. Its backward
     * is the same exchange with the splits swapped, and it is recorded whenever recording is on, so every
     * rank takes part in it whatever its own inputs. The rows stay on their device (a GPU's rows go
     * GPU to GPU when the group is an NCCL one).
     */
    static Tensor allToAll(Tensor in, int[] outSplits, int[] inSplits, ProcessGroup group, String what) {
        int rows = 0;
        for (int s : outSplits) rows += s;
        Tensor out = Tensor.zeros(in.device(), in.dtype(), rows, in.dim(1));
        group.allToAllSingle(out, in, outSplits, inSplits);
        // the backward rule is charged to the phase open now (the caller's) by the profiler
        return Autograd.recordAlways(out, what + " all-to-all", new Tensor[] {in}, g -> {
            Tensor gin = Tensor.zeros(in.device(), in.dtype(), in.shape());
            group.allToAllSingle(gin, g, inSplits, outSplits);
            return new Tensor[] {gin};
        });
    }
}
