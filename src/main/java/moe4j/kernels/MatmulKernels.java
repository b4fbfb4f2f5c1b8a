package moe4j.kernels;

import moe4j.tensor.Tensor;

/**
 * Matrix products on float32 tensors of one device. Offsets and leading dimensions are in elements, so
 * a call may address a sub-matrix of a tensor (one head of an attention activation, say); the tensors'
 * shapes are not consulted beyond their sizes.
 */
public interface MatmulKernels {
    /**
     * {@code C = alpha·op(A)·op(B) + beta·C}, op(X) = X or Xᵀ; op(A) is m×k, op(B) k×n, C m×n, row-major
     * with row strides lda, ldb, ldc. beta = 0 never reads C. Results do not depend on how many threads
     * or blocks compute them.
     */
    void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
              Tensor a, long aOff, int lda, Tensor b, long bOff, int ldb,
              float beta, Tensor c, long cOff, int ldc);

    /**
     * Ragged grouped product: group g is rows {@code [offsets[g], offsets[g+1])} of X (width k) and of
     * Y (width n); {@code Y_g = X_g·op(W_g) + beta·Y_g}, W_g at element {@code wOff[g]} of {@code w[g]},
     * stored (k, n), or (n, k) and used transposed when {@code transW}. Empty groups cost nothing. The
     * offsets are host values: the group sizes are known on the host before the product is issued.
     */
    void groupedGemm(int[] offsets, int k, int n, Tensor x, Tensor[] w, long[] wOff, boolean transW,
                     Tensor y, float beta);

    /**
     * Weight gradients of a grouped product: {@code dW_g = beta·dW_g + X_gᵀ·dY_g} (k×n at element
     * {@code dwOff[g]} of {@code dw[g]}); an empty group only scales its dW_g by beta.
     */
    void groupedWeightGrad(int[] offsets, int k, int n, Tensor x, Tensor dy, Tensor[] dw, long[] dwOff, float beta);

    /**
     * Until closed, the products the calling thread issues may keep the operand copies they make of the
     * tensors {@code which} accepts (a device converts float32 operands for bf16 products, into a padded
     * layout for small groups) and use them again, instead of converting the same operand for each product
     * that reads it: a weight in every forward and backward product of a step, the rows two projections
     * share, a gradient that both the input and the weight gradient read. The caller promises that those
     * tensors do not change inside. Devices that convert nothing keep nothing. Scopes nest.
     */
    default Reuse reuseCopies(java.util.function.Predicate<Tensor> which) {
        return () -> {};
    }

    /**
     * Parameters whose copies may be kept for a step: leaf tensors that require a gradient (what an optimizer
     * step changes, and nothing else does), except releasable ones: a sharded parameter's whole is freed after
     * its module runs, and a kept copy would hold it (the whole model, over a step) all the same.
     */
    static boolean isParameter(Tensor t) {
        return t.isLeaf() && t.requiresGrad() && !t.isReleasable();
    }

    /**
     * Whether {@link #gatedExperts} runs for the calling thread's precision on this device. Where it does
     * not, the layer composes the same function from {@link #groupedGemm} and the activation.
     */
    default boolean fusesGatedExperts() {
        return false;
    }

    /**
     * The gated (SwiGLU) experts of an MoE layer as one computation: for each group g of the R rows,
     * {@code out_g = (silu(x_g·gateW[g]) ⊙ x_g·upW[g])·downW[g]} with packed weights gateW, upW (G, D, H)
     * and downW (G, H, D), written into {@code out} (R, D). The rows are those of {@code x} (R, D), or with
     * {@code gather} rows {@code x[rowIndex[i]]} of an (N, D) {@code x}, gathered on the way in.
     * A device fuses it to keep the hidden activations in its own layout between the products (only where
     * {@link #fusesGatedExperts}). Returns the backward, which holds what it needs of this forward.
     */
    default GatedExpertsBackward gatedExperts(int[] offsets, Tensor x, RowGather gather, Tensor gateW, Tensor upW, Tensor downW,
                                              Tensor out) {
        throw new UnsupportedOperationException("gatedExperts: this device composes the experts from grouped products");
    }

    /** The backward of one {@link #gatedExperts} call. */
    interface GatedExpertsBackward {
        /**
         * From {@code gOut} (R, D): {@code gx ← dL/dx} (x's shape, written in full; null: not wanted; through a
         * gather each row of x gets the sum over the rows taken from it) and each weight's gradient
         * {@code g ← beta·g + dL/dW} (null: not wanted).
         */
        void run(Tensor gOut, Tensor gx, Tensor gGate, float betaGate, Tensor gUp, float betaUp, Tensor gDown, float betaDown);
    }

    /** The scope of {@link #reuseCopies}: closing it frees what was kept. */
    interface Reuse extends AutoCloseable {
        @Override
        void close();
    }
}
