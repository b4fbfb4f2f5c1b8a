package moe4j.parallel;

import moe4j.distributed.ProcessGroup;
import moe4j.nn.Dispatched;
import moe4j.nn.TokenDispatcher;
import moe4j.tensor.Tensor;

/**
 * An MoE layer under tensor parallelism: its input is replicated over the tp ranks, and each tp rank
 * dispatches only its block of the tokens ({@link TensorParallel#sliceRows}) through the dispatcher it
 * wraps (local, or expert-parallel over the ranks of its own tp coordinate); {@link #combine} gathers
 * the blocks back into every token's output. So no expert computes a token twice, and the router, which
 * ran on every token, gets its gradient whole on every tp rank.
 */
final class SequenceParallelDispatcher<M> implements TokenDispatcher<SequenceParallelDispatcher.Slice<M>> {
    /** The wrapped dispatcher's record, and the full token count to gather back. */
    record Slice<M>(Dispatched<M> inner, int tokens) {}

    private final TokenDispatcher<M> inner;
    private final ProcessGroup tp;

    private SequenceParallelDispatcher(TokenDispatcher<M> inner, ProcessGroup tp) {
        this.inner = inner;
        this.tp = tp;
    }

    static SequenceParallelDispatcher<?> around(TokenDispatcher<?> inner, ProcessGroup tp) {
        return new SequenceParallelDispatcher<>(inner, tp);
    }

    /** The same slicing around another dispatcher (expert parallelism installs its own after tensor parallelism). */
    SequenceParallelDispatcher<?> withInner(TokenDispatcher<?> replacement) {
        return new SequenceParallelDispatcher<>(replacement, tp);
    }

    TokenDispatcher<M> inner() {
        return inner;
    }

    @Override
    public Dispatched<Slice<M>> dispatch(Tensor x_TD, Tensor indices_TK) {
        TokenDispatcher.checkDispatchInputs("SequenceParallelDispatcher.dispatch", x_TD, indices_TK);
        int t = x_TD.dim(0);
        int start = TensorParallel.rowStart(t, tp.size(), tp.rank());
        int end = TensorParallel.rowStart(t, tp.size(), tp.rank() + 1);
        Tensor mine_TD = TensorParallel.sliceRows(x_TD, tp);
        Dispatched<M> d = inner.dispatch(mine_TD, indices_TK.rows(start, end));
        return new Dispatched<>(d.source(), d.gather(), d.rowsPerLocalExpert(), d.groupEntries(), new Slice<>(d, t));
    }

    @Override
    public Tensor combine(Tensor expertOut_RD, Dispatched<Slice<M>> dispatched, Tensor weights_TK) {
        Slice<M> slice = dispatched.combineState();
        Tensor mine_TD = inner.combine(expertOut_RD, slice.inner(), TensorParallel.sliceRows(weights_TK, tp));
        return TensorParallel.gatherRows(mine_TD, slice.tokens(), tp);
    }
}
