package moe4j.nn;

import moe4j.ops.Ops;
import moe4j.tensor.Tensor;

/**
 * The dense SwiGLU feed-forward {@code down_proj(silu(gate_proj(x)) · up_proj(x))}, bias-free linears
 * stored (out, in). The names are the experts' ({@link Expert}), so a dense and an MoE layer's
 * projections read alike in a checkpoint.
 */
public final class DenseMLP extends Module {
    private final int dim;
    private final Linear gate;
    private final Linear up;
    private final Linear down;

    public DenseMLP(int dim, int hidden) {
        this.dim = dim;
        this.gate = registerModule("gate_proj", new Linear(dim, hidden));
        this.up = registerModule("up_proj", new Linear(dim, hidden));
        this.down = registerModule("down_proj", new Linear(hidden, dim));
    }

    public Linear gateProj() {
        return gate;
    }

    public Linear upProj() {
        return up;
    }

    public Linear downProj() {
        return down;
    }

    /** {@code x} (..., dim) → the same shape. */
    public Tensor forward(Tensor x) {
        if (x.rank() < 1 || x.dim(-1) != dim) {
            throw new IllegalArgumentException("DenseMLP: input must be (..., " + dim + "), got " + x.shapeString());
        }
        Tensor flat = x.rank() == 2 ? x : Ops.reshape(x, -1, dim);
        Tensor out = down.forward(Ops.swiglu(gate.forward(flat), up.forward(flat)));
        return x.rank() == 2 ? out : Ops.reshape(out, x.shape());
    }
}
