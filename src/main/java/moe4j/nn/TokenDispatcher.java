package moe4j.nn;

import moe4j.tensor.DType;
import moe4j.tensor.Tensor;

/**
 * Moves routed tokens to the experts that compute them, and the results back: two symmetric halves
 * around the layer's own expert compute.
 * <pre>
 *   dispatched = dispatch(x_TD, indices_TK)             rows grouped by local expert
 *   expertOut_RD = the layer's experts on dispatched     (+ gradient scaling)
 *   out_TD = combine(expertOut_RD, dispatched, weights_TK)
 * </pre>
 * {@code out_TD[t] = Σ_k weights_TK[t,k] · expertOut(x_TD[t] at expert indices_TK[t,k])}, summed over the
 * entries whose index is not −1 (−1 marks an entry dropped by the capacity limit: a dispatcher neither
 * sends nor groups it, so it is never computed).
 *
 * <p>The layer owns one dispatcher and never knows which: {@link LocalDispatcher} when every expert is
 * here, an all-to-all dispatcher once expert parallelism has split the experts over ranks. A dispatcher
 * never sees the layer; what it needs to know (expert count, ownership, process group) it is built with.
 * Another strategy (an overlapped exchange, a GPU kernel) is another implementation; what travels between
 * ranks (the wire type, one row per entry or per token and rank) is a setting of the all-to-all dispatcher.
 *
 * @param <M> what {@link #combine} needs to undo its {@link #dispatch}; opaque to the layer
 */
public interface TokenDispatcher<M> {
    /**
     * Groups the kept (token, slot) entries of {@code indices_TK} (T, K) int32, global expert ids, by the
     * local expert that computes them, taking each entry's row of {@code x_TD} (T, D) float32. A dispatcher
     * that exchanges rows between ranks takes part in its collectives here, whatever its own counts.
     */
    Dispatched<M> dispatch(Tensor x_TD, Tensor indices_TK);

    /**
     * The reverse of {@link #dispatch}: {@code expertOut_RD}, one row per row of
     * {@code dispatched.rows_RD()} in the same order, goes back to the token each row came from, weighted by
     * its entry of {@code weights_TK} (T, K) float32 and summed per token into a (T, D) result.
     */
    Tensor combine(Tensor expertOut_RD, Dispatched<M> dispatched, Tensor weights_TK);

    /** What every {@link #dispatch} accepts: {@code x_TD} (T, D) float32 and {@code indices_TK} (T, K) int32, the same T. */
    static void checkDispatchInputs(String op, Tensor x_TD, Tensor indices_TK) {
        x_TD.requireDType(DType.F32, op);
        indices_TK.requireDType(DType.I32, op);
        if (x_TD.rank() != 2 || indices_TK.rank() != 2 || indices_TK.dim(0) != x_TD.dim(0)) {
            throw new IllegalArgumentException(op + ": x must be (T, D) and indices (T, K) for the same T, got "
                    + x_TD.shapeString() + " and " + indices_TK.shapeString());
        }
    }
}
