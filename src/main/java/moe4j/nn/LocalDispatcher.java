package moe4j.nn;

import moe4j.autograd.Profiler;
import moe4j.ops.Ops;
import moe4j.tensor.Tensor;

/**
 * All experts on this rank: group the (token, slot) entries by expert (stable, so token order is kept
 * within an expert), run the experts as one ragged grouped GEMM, weight each row and scatter-add rows
 * back by token.
 */
public final class LocalDispatcher implements TokenDispatcher {
    public static final LocalDispatcher INSTANCE = new LocalDispatcher();

    private LocalDispatcher() {}

    @Override
    public Tensor dispatchAndCompute(Tensor x, Tensor weights, Tensor indices, MoEMLP moe, boolean gradientScale) {
        moe.checkRoutingInputs("LocalDispatcher.dispatchAndCompute", x, weights, indices);
        Routing routing;
        Tensor rows;
        try (var p = Profiler.phase("permute")) {
            routing = Routing.sortByExpert(indices, moe.numExperts());
            rows = Ops.indexSelect(x, routing.tokenOfRow());
        }
        Tensor expertOut = moe.computeLocalExperts(rows, routing.rowsPerExpert());
        try (var p = Profiler.phase("unpermute")) {
            if (gradientScale) {
                expertOut = Ops.mulRows(expertOut,
                        MoEMLP.gradientScaleRows(routing.rowsPerExpert(), routing.rowCount(), moe.numExperts()));
            }
            return routing.weightAndCombine(expertOut, weights, x.dim(0));
        }
    }
}
