package moe4j.nn;

import moe4j.autograd.Profiler;
import moe4j.kernels.RowGather;
import moe4j.ops.Ops;
import moe4j.tensor.Tensor;

/**
 * Every expert on this rank: dispatch sorts the kept (token, slot) entries by expert (stable, so token
 * order is kept within an expert) and gathers their rows; combine weights each result row and
 * scatter-adds it into its token. Nothing leaves the rank.
 */
public final class LocalDispatcher implements TokenDispatcher<Routing> {
    private final int numExperts;

    public LocalDispatcher(int numExperts) {
        if (numExperts < 1) throw new IllegalArgumentException("LocalDispatcher: numExperts must be >= 1, got " + numExperts);
        this.numExperts = numExperts;
    }

    @Override
    public Dispatched<Routing> dispatch(Tensor x_TD, Tensor indices_TK) {
        TokenDispatcher.checkDispatchInputs("LocalDispatcher.dispatch", x_TD, indices_TK);
        try (var p = Profiler.phase("permute")) {
            Routing routing = Routing.sortByExpert(indices_TK, numExperts);
            // all the entries of the group are this rank's: the local expert j is global expert j; the rows
            // are the tokens' rows in expert order, gathered by whoever computes them
            return new Dispatched<>(x_TD, new RowGather(routing.tokenOfRow(), routing.entryOfRow(), indices_TK.dim(1)),
                    routing.rowsPerExpert(), routing.rowCount(), routing);
        }
    }

    @Override
    public Tensor combine(Tensor expertOut_RD, Dispatched<Routing> dispatched, Tensor weights_TK) {
        try (var p = Profiler.phase("unpermute")) {
            return dispatched.combineState().weightAndCombine(expertOut_RD, weights_TK);
        }
    }
}
