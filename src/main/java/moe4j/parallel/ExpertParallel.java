package moe4j.parallel;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import moe4j.autograd.Autograd;
import moe4j.autograd.Profiler;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.ProcessGroup;
import moe4j.kernels.ElementwiseKernels;
import moe4j.kernels.ExecutionContext;
import moe4j.kernels.Kernels;
import moe4j.kernels.RowGather;
import moe4j.nn.Dispatched;
import moe4j.nn.MoEMLP;
import moe4j.nn.Module;
import moe4j.nn.Routing;
import moe4j.nn.TokenDispatcher;
import moe4j.nn.WireType;
import moe4j.ops.Ops;
import moe4j.tensor.DType;
import moe4j.tensor.Tensor;

/**
 * Expert parallelism: the experts of every MoE layer are split over the ranks of the mesh's {@code "ep"}
 * dimension, and tokens travel to the rank that owns their expert and back by two all-to-alls.
 *
 * <p>Rank r of an EP group of size P owns the contiguous block of global experts
 * {@code [r·E_l, (r+1)·E_l)}, {@code E_l = E / P}; the owner of expert g is {@code g / E_l}.
 *
 * <p>{@link #dispatchAndCompute} is the whole algorithm, dispatch → the layer's experts → combine, with
 * its steps numbered as in docs/EXPERT_PARALLELISM.md: steps 1–5a are {@link AllToAllDispatcher#dispatch},
 * steps 5b–6 the layer's own {@link MoEMLP#computeExperts}, steps 5c–8 {@link AllToAllDispatcher#combine}.
 * The layer runs the same three calls in its forward once {@link #apply} has installed the dispatcher.
 * Tensor names carry their shapes: T tokens, K slots per token, D model dim, S the rows this rank sends
 * (its kept entries, sorted by expert), R the rows it receives and its experts compute.
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

    /**
     * Values each rank appends to its count chunk for every peer: its total of kept entries, then E, D, K,
     * layer, then the rows its dispatch sends that peer when it deduplicates them (one per token), −1 when it
     * sends one row per entry.
     */
    private static final int TRAILER = 6;

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
            moe.partitionExperts(ep.group());
            AllToAllDispatcher allToAll = new AllToAllDispatcher(ep.group(), moe.numExperts(), moe.localExpertStart(),
                    moe.numLocalExperts(), moe.epSize(), i, moe.config().wire(), moe.config().dedup());
            // under tensor parallelism each tp rank sends its slice of the tokens through the all-to-all
            moe.setDispatcher(moe.dispatcher() instanceof SequenceParallelDispatcher<?> sp ? sp.withInner(allToAll) : allToAll);
        }
        ParallelPlan.of(model).mark(ParallelPlan.Stage.EXPERT_PARALLEL);
        LOG.log(System.Logger.Level.INFO, "Applied expert parallelism: ep_size={0}, ep_rank={1}, layers={2}", p, ep.localRank(),
                layers.size());
    }

    /**
     * The expert-parallel MoE computation for this rank's tokens {@code x_TD}, routed by
     * {@code weights_TK} and global expert {@code indices_TK} (−1 = dropped by capacity: never sent).
     * Returns {@code out_TD}, each token's weighted sum of its experts' outputs, wherever they ran.
     * The exchange carries the layer's position among its model's MoE layers when {@link #apply} set one
     * up (0 for a layer on its own), so that ranks running different layers fail instead of mixing them.
     */
    public static Tensor dispatchAndCompute(Tensor x_TD, Tensor weights_TK, Tensor indices_TK, MoEMLP moe, ProcessGroup epGroup,
                                            int localExpertStart, int numLocalExperts, int epWorldSize, boolean gradientScale) {
        // Checked before the first collective: a bad input fails here and breaks the group, so the peers
        // fail too instead of waiting for a count exchange that never comes.
        moe.checkRoutingInputs("ExpertParallel.dispatchAndCompute", x_TD, weights_TK, indices_TK);
        int layer = moe.dispatcher() instanceof AllToAllDispatcher installed ? installed.layer : 0;
        AllToAllDispatcher dispatcher = new AllToAllDispatcher(epGroup, moe.numExperts(), localExpertStart, numLocalExperts,
                epWorldSize, layer, moe.config().wire(), moe.config().dedup());

        // 1-5a. Sort the kept entries by expert, exchange counts and rows, regroup by local expert.
        Dispatched<AllToAllDispatcher.Exchange> dispatched = dispatcher.dispatch(x_TD, indices_TK);
        // 5b-6. This rank's experts on the rows it received, scaled by the group-wide load when enabled.
        Tensor expertOut_RD = moe.computeExperts(dispatched, gradientScale);
        // 5c-8. Send every result row home, weight it and sum it into its token.
        return dispatcher.combine(expertOut_RD, dispatched, weights_TK);
    }

    /**
     * The dispatcher {@link #apply} installs: one per MoE layer, over the EP group, for the block of
     * experts this rank owns. {@code layer} is the layer's position among the model's MoE layers; ranks
     * check they agree on it (and on E, D, K) in every count exchange. {@code wire} is the type the rows
     * travel in, forward and backward ({@link WireType}: with a bf16 wire every dispatched row, every
     * expert output and both their gradients are rounded to bf16 on the way out, whichever rank they go to,
     * so the layer computes the same function on every rank layout). With {@code dedup} a token travels
     * once per rank that owns one of its experts: see {@link #dispatch} and {@link #combine}.
     */
    public static final class AllToAllDispatcher implements TokenDispatcher<AllToAllDispatcher.Exchange> {
        private final ProcessGroup group;
        private final int numExperts;
        private final int localExpertStart;
        private final int numLocalExperts;
        private final int epSize;
        private final int layer;
        private final WireType wire;
        private final boolean dedup;

        /**
         * What combine needs to send the rows home: the order the rows left in ({@code routing}: this rank's
         * kept entries by expert, or when deduplicating its (token, rank) pairs by rank), the row counts sent to
         * and received from each peer, the order that regrouped the received rows by expert (null with one
         * rank, where they arrive grouped, and when deduplicating), the type the rows travelled in, and when
         * deduplicating the owner's expansion of the received rows ({@code received}: their entries grouped by
         * local expert, {@code tokenOfRow} the received row of each; null otherwise).
         */
        public record Exchange(Routing routing, int[] sendSplits, int[] recvSplits, Tensor regroup, DType wire, Routing received) {}

        public AllToAllDispatcher(ProcessGroup group, int numExperts, int localExpertStart, int numLocalExperts, int epSize,
                                  int layer, WireType wire, boolean dedup) {
            if (group.size() != epSize || numLocalExperts * epSize != numExperts || localExpertStart != group.rank() * numLocalExperts) {
                throw new IllegalArgumentException("dispatchAndCompute: inconsistent EP metadata: group of " + group.size()
                        + " ranks (this is rank " + group.rank() + "), epWorldSize=" + epSize + ", experts ["
                        + localExpertStart + ", " + (localExpertStart + numLocalExperts) + ") of " + numExperts);
            }
            this.group = group;
            this.numExperts = numExperts;
            this.localExpertStart = localExpertStart;
            this.numLocalExperts = numLocalExperts;
            this.epSize = epSize;
            this.layer = layer;
            this.wire = java.util.Objects.requireNonNull(wire, "wire");
            this.dedup = dedup;
        }

        /** The same dispatcher over another view of the same group (one that counts its traffic, say). */
        AllToAllDispatcher over(ProcessGroup sameRanks) {
            return new AllToAllDispatcher(sameRanks, numExperts, localExpertStart, numLocalExperts, epSize, layer, wire, dedup);
        }

        ProcessGroup group() {
            return group;
        }

        @Override
        public Dispatched<Exchange> dispatch(Tensor x_TD, Tensor indices_TK) {
            TokenDispatcher.checkDispatchInputs("ExpertParallel.dispatch", x_TD, indices_TK);
            if (dedup) return dispatchOncePerRank(x_TD, indices_TK);
            int d = x_TD.dim(1);
            int k = indices_TK.dim(1);

            // 1-2. Expand the kept (token, slot) entries and sort them stably by global expert id, which also
            //      groups them by destination rank (the owner of expert g is g / E_l).
            Routing routing;
            Tensor send_SD;
            int[] sendSplits = new int[epSize];
            try (var p = Profiler.phase("permute")) {
                routing = Routing.sortByExpert(indices_TK, numExperts);
                for (int g = 0; g < numExperts; g++) sendSplits[g / numLocalExperts] += routing.rowsPerExpert()[g];
                send_SD = Ops.indexSelect(x_TD, routing.tokenOfRow());
            }

            // 3. Exchange counts: to every peer, how many rows of each of its experts follow, then my total of
            //    kept entries and this layer's shape, which every receiver checks. No expert id travels.
            Counts counts = exchangeCounts(routing.rowsPerExpert(), routing.rowCount(), null, d, k);
            int[] recvSplits = counts.recvSplits();
            int[] rowsPerLocalExpert = counts.rowsPerLocalExpert();
            long groupEntries = counts.groupEntries();

            // 4. Dispatch: each row to the rank that owns its expert, in the wire type (decided once per step, from
            //    the rank's products, and kept for combine and both backward exchanges).
            DType rowsWire = wire.resolve(ExecutionContext.current().productInputs());
            Tensor recv_RD;
            try (var p = Profiler.phase("dispatch all-to-all")) {
                recv_RD = allToAll(send_SD, recvSplits, sendSplits, group, "dispatch", rowsWire);
            }

            // 5a. Regroup the received rows by local expert: they arrive by source rank, then expert, and the
            //     grouped GEMM wants each expert's rows from every source together.
            //     The layer's experts gather them (Dispatched.rows_RD or a device's fused experts).
            Tensor regroup = null;
            if (epSize > 1) {
                try (var p = Profiler.phase("permute")) {
                    // built from the host counts, then copied once to the rows' device
                    // a permutation of the received rows, built here: no range check on the device
                    regroup = regroupByExpert(counts.fromPeer()).to(recv_RD.device()).markIndicesBelow(recv_RD.dim(0));
                }
            }
            // 5b-6 happen in the layer: its grouped GEMM over rows_RD, then gradient scaling, where n_e counts the
            // whole group's entries for expert e (what its owner received) and avg is groupEntries / E, so P
            // ranks compute what one rank would on all their tokens.
            return new Dispatched<>(recv_RD, regroup == null ? null : RowGather.once(regroup), rowsPerLocalExpert, groupEntries,
                    new Exchange(routing, sendSplits, recvSplits, regroup, rowsWire, null));
        }

        /**
         * The deduplicating dispatch: each token travels once to every rank that owns at least one of its
         * experts, with its row of expert ids; the owner expands the rows it received into one row per
         * (token, local expert) entry, grouped by local expert in the order the per-entry dispatch gives
         * (local expert, then source rank, then token), so its experts compute exactly the same rows.
         */
        private Dispatched<Exchange> dispatchOncePerRank(Tensor x_TD, Tensor indices_TK) {
            int d = x_TD.dim(1);
            int k = indices_TK.dim(1);
            Kernels kernels = Kernels.of(x_TD.device());

            // 1-2. Sort the kept entries by expert (for the counts the owners' grouped GEMMs need) and list the
            //      (token, rank) pairs by rank: the rows that travel. One copy to the host holds both counts.
            Routing byExpert;
            Routing pairs;
            Tensor send_UD;
            Tensor sendIds_UK;
            int[] sendSplits;
            try (var p = Profiler.phase("permute")) {
                Routing.ByExpertAndRank sorted = Routing.sortByExpertAndRank(indices_TK, numExperts, epSize);
                byExpert = sorted.byExpert();
                pairs = sorted.byRank();
                sendSplits = pairs.rowsPerExpert();
                send_UD = Ops.indexSelect(x_TD, pairs.tokenOfRow());
                // each pair's row of expert ids: the owner picks its own experts out of it
                sendIds_UK = Tensor.zeros(indices_TK.device(), DType.I32, pairs.rowCount(), k);
                kernels.indexing().gatherRows(indices_TK, pairs.tokenOfRow(), sendIds_UK);
            }

            // 3. Exchange counts: per peer its experts' entry counts (the grouped GEMM's sizes), the trailer, and
            //    the rows that follow.
            Counts counts = exchangeCounts(byExpert.rowsPerExpert(), byExpert.rowCount(), sendSplits, d, k);
            int[] recvSplits = counts.recvSplits();
            int[] rowsPerLocalExpert = counts.rowsPerLocalExpert();
            long groupEntries = counts.groupEntries();
            int receivedRows = 0;
            for (int n : recvSplits) receivedRows += n;

            // 4. Dispatch: one row per (token, rank) pair, and its expert ids (ints, exact on any wire).
            DType rowsWire = wire.resolve(ExecutionContext.current().productInputs());
            Tensor recv_UD;
            Tensor recvIds_UK;
            try (var p = Profiler.phase("dispatch all-to-all")) {
                recvIds_UK = exchange(sendIds_UK, recvSplits, sendSplits, group, DType.I32);
                recv_UD = allToAll(send_UD, recvSplits, sendSplits, group, "dispatch", rowsWire);
            }

            // 5a. Expand: the received rows' entries on this rank's experts, grouped by local expert (stable, so
            //     by source rank and token within an expert), each taking its received row. The group sizes are
            //     the exchanged counts: nothing more comes to the host.
            //     The layer's experts gather the rows (Dispatched.rows_RD or a device's fused experts).
            Routing expansion;
            try (var p = Profiler.phase("permute")) {
                Tensor local_UK = Tensor.zeros(recvIds_UK.device(), DType.I32, receivedRows, k);
                kernels.routing().localExperts(recvIds_UK, localExpertStart, numLocalExperts, local_UK);
                expansion = Routing.groupWithKnownCounts(local_UK, numLocalExperts, rowsPerLocalExpert);
            }
            return new Dispatched<>(recv_UD, new RowGather(expansion.tokenOfRow(), expansion.entryOfRow(), k), rowsPerLocalExpert, groupEntries,
                    new Exchange(pairs, sendSplits, recvSplits, null, rowsWire, expansion));
        }

        @Override
        public Tensor combine(Tensor expertOut_RD, Dispatched<Exchange> dispatched, Tensor weights_TK) {
            Exchange exchange = dispatched.combineState();
            if (exchange.received() != null) return combineOncePerRank(expertOut_RD, exchange, weights_TK);
            // 5c. Restore the received order, so the rows go back in the runs they came in.
            Tensor back_RD = expertOut_RD;
            if (exchange.regroup() != null) {
                try (var p = Profiler.phase("unpermute")) {
                    back_RD = Ops.indexAdd(expertOut_RD.dim(0), exchange.regroup(), expertOut_RD);
                }
            }

            // 7. Combine: the reverse all-to-all returns every row to the rank it came from.
            Tensor home_SD;
            try (var p = Profiler.phase("combine all-to-all")) {
                home_SD = allToAll(back_RD, exchange.sendSplits(), exchange.recvSplits(), group, "combine", exchange.wire());
            }

            // 8. Un-sort, weight and scatter-add by token. Routing weights never travel: the router's gradient stays local.
            try (var p = Profiler.phase("unpermute")) {
                return exchange.routing().weightAndCombine(home_SD, weights_TK);
            }
        }

        /**
         * The deduplicating combine: the routing weights of every pair's token go to its owner, which weights
         * the outputs of each received row's experts and sums them into one row per received row; that row
         * goes back, and the source sums the rows of each of its tokens. The router's gradient comes back
         * through the weights' exchange.
         */
        private Tensor combineOncePerRank(Tensor expertOut_RD, Exchange exchange, Tensor weights_TK) {
            Routing pairs = exchange.routing();
            Routing expansion = exchange.received();
            Tensor home_UD;
            try (var p = Profiler.phase("combine all-to-all")) {
                // the weights stay float32 whatever the rows' wire: they scale every expert output
                Tensor recvWeights_UK = allToAll(Ops.indexSelect(weights_TK, pairs.tokenOfRow()), exchange.recvSplits(),
                        exchange.sendSplits(), group, "combine weights", DType.F32);
                Tensor partial_UD;
                try (var u = Profiler.phase("unpermute")) {
                    partial_UD = expansion.weightAndCombine(expertOut_RD, recvWeights_UK);
                }
                home_UD = allToAll(partial_UD, exchange.sendSplits(), exchange.recvSplits(), group, "combine", exchange.wire());
            }
            try (var p = Profiler.phase("unpermute")) {
                return Ops.indexAdd(weights_TK.dim(0), pairs.tokenOfRow(), home_UD);
            }
        }

        /** The received rows' indices in (local expert, source rank) order: row i of the grouped layout is received row regroup[i]. */
        private Tensor regroupByExpert(int[] fromPeer) {
            int[] blockStart = new int[epSize * numLocalExperts];
            int total = 0;
            for (int src = 0; src < epSize; src++) {
                for (int j = 0; j < numLocalExperts; j++) {
                    blockStart[src * numLocalExperts + j] = total;
                    total += fromPeer[src * numLocalExperts + j];
                }
            }
            int[] order = new int[total];
            int i = 0;
            for (int j = 0; j < numLocalExperts; j++) {
                for (int src = 0; src < epSize; src++) {
                    int start = blockStart[src * numLocalExperts + j];
                    int n = fromPeer[src * numLocalExperts + j];
                    for (int r = 0; r < n; r++) order[i++] = start + r;
                }
            }
            return Tensor.ofInts(order, total);
        }

        /**
         * What the count exchange tells this rank: rows from each peer, rows per local expert, the group's kept
         * entries, and each peer's entries per local expert ({@code fromPeer[src·E_l + j]}).
         */
        private record Counts(int[] recvSplits, int[] rowsPerLocalExpert, long groupEntries, int[] fromPeer) {}

        /**
         * Step 3 of both dispatches: to every peer, this rank's entry count for each of that peer's experts,
         * then the trailer: its total of kept entries, this layer's shape (every receiver checks it) and the
         * rows that follow, {@code rowsToPeer[peer]}, or -1 when one row travels per entry ({@code rowsToPeer}
         * null: the rows from a peer are then the sum of its counts).
         */
        private Counts exchangeCounts(int[] rowsPerExpert, int keptEntries, int[] rowsToPeer, int d, int k) {
            int chunk = numLocalExperts + TRAILER;
            int[] send = new int[epSize * chunk];
            for (int peer = 0; peer < epSize; peer++) {
                System.arraycopy(rowsPerExpert, peer * numLocalExperts, send, peer * chunk, numLocalExperts);
                int t = peer * chunk + numLocalExperts;
                send[t] = keptEntries;
                send[t + 1] = numExperts;
                send[t + 2] = d;
                send[t + 3] = k;
                send[t + 4] = layer;
                send[t + 5] = rowsToPeer == null ? -1 : rowsToPeer[peer];
            }
            int[] received;
            try (var p = Profiler.phase("count exchange")) {
                received = group.allToAll(send, chunk);
            }
            int[] recvSplits = new int[epSize];
            int[] rowsPerLocalExpert = new int[numLocalExperts];
            int[] fromPeer = new int[epSize * numLocalExperts];
            long groupEntries = 0;
            for (int src = 0; src < epSize; src++) {
                int t = src * chunk + numLocalExperts;
                checkSameLayer(received, t, src, d, k, rowsToPeer != null);
                groupEntries += received[t];
                System.arraycopy(received, src * chunk, fromPeer, src * numLocalExperts, numLocalExperts);
                for (int j = 0; j < numLocalExperts; j++) {
                    if (rowsToPeer == null) recvSplits[src] += received[src * chunk + j];
                    rowsPerLocalExpert[j] += received[src * chunk + j];
                }
                if (rowsToPeer != null) recvSplits[src] = received[t + 5];
            }
            return new Counts(recvSplits, rowsPerLocalExpert, groupEntries, fromPeer);
        }

        private void checkSameLayer(int[] received, int at, int src, int d, int k, boolean deduplicating) {
            if (deduplicating != received[at + 5] >= 0) {
                throw new IllegalStateException("expert parallelism: rank " + group.rank() + " of group '" + group.name() + "' "
                        + (deduplicating ? "deduplicates" : "does not deduplicate") + " the dispatch of MoE layer " + layer
                        + " but rank " + src + (deduplicating ? " does not" : " does") + ": every EP rank must use the same moe_dedup");
            }
            int[] mine = {numExperts, d, k, layer};
            int[] theirs = Arrays.copyOfRange(received, at + 1, at + 5);
            if (!Arrays.equals(mine, theirs)) {
                throw new IllegalStateException("expert parallelism: rank " + group.rank() + " of group '" + group.name()
                        + "' runs MoE layer " + layer + " with E=" + numExperts + ", D=" + d + ", K=" + k + " but rank " + src
                        + " runs layer " + theirs[3] + " with E=" + theirs[0] + ", D=" + theirs[1] + ", K=" + theirs[2]
                        + ": every EP rank must run the same layers in the same order");
            }
        }
    }

    /**
     * Counts the all-to-all traffic of {@code moe}'s dispatcher from now on: reinstalls it over a counting
     * view of its group. Null (nothing to count) when the layer dispatches locally.
     */
    public static TrafficCountingGroup countTraffic(MoEMLP moe) {
        var current = moe.dispatcher();
        SequenceParallelDispatcher<?> sp = current instanceof SequenceParallelDispatcher<?> wrapper ? wrapper : null;
        if (sp != null) current = sp.inner();
        if (!(current instanceof AllToAllDispatcher installed)) return null;
        TrafficCountingGroup traffic = new TrafficCountingGroup(installed.group());
        moe.setDispatcher(sp != null ? sp.withInner(installed.over(traffic)) : installed.over(traffic));
        return traffic;
    }

    /**
     * The differentiable variable-split all-to-all of rows: {@code in}'s rows go out in consecutive runs of
     * {@code inSplits[peer]}, {@code outSplits[src]} rows arrive from each source in rank order, travelling
     * as {@code wire} and arriving in {@code in}'s type. Its backward is the same exchange with the splits
     * swapped (the gradient travels as {@code wire} too), and it is recorded whenever recording is on, so
     * every rank takes part in it whatever its own inputs. The rows stay on their device (a GPU's rows go
     * GPU to GPU when the group is an NCCL one).
     */
    static Tensor allToAll(Tensor in, int[] outSplits, int[] inSplits, ProcessGroup group, String what, DType wire) {
        Tensor out = exchange(in, outSplits, inSplits, group, wire);
        // the backward rule is charged to the phase open now (the caller's) by the profiler
        return Autograd.recordAlways(out, what + " all-to-all", new Tensor[] {in},
                g -> new Tensor[] {exchange(g, inSplits, outSplits, group, wire)});
    }

    /**
     * One all-to-all of {@code rows}, converted to {@code wire} before it leaves and back to the rows' type on arrival.
     * Every buffer here is written in full before it is read (the exchange fills all {@code sum(outSplits)} rows it
     * receives into), so none is zero-filled first: on a GPU a fill is a pass over the exchanged bytes on the
     * exchange's own stream.
     */
    private static Tensor exchange(Tensor rows, int[] outSplits, int[] inSplits, ProcessGroup group, DType wire) {
        int received = 0;
        for (int s : outSplits) received += s;
        int width = rows.dim(1);
        if (wire == rows.dtype()) {
            Tensor out = Tensor.empty(rows.device(), rows.dtype(), received, width);
            group.allToAllSingle(out, rows, outSplits, inSplits);
            return out;
        }
        ElementwiseKernels convert = Kernels.of(rows.device()).elementwise();
        Tensor sent = Tensor.empty(rows.device(), wire, rows.shape());
        convert.convert(rows, sent);
        Tensor arrived = Tensor.empty(rows.device(), wire, received, width);
        group.allToAllSingle(arrived, sent, outSplits, inSplits);
        Tensor out = Tensor.empty(rows.device(), rows.dtype(), received, width);
        convert.convert(arrived, out);
        return out;
    }
}
