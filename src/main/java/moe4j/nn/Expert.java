package moe4j.nn;

import moe4j.ops.Ops;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * One expert MLP in the list layout: SwiGLU {@code down(silu(gate(x)) · up(x))} or standard
 * {@code down(act(up(x)))}, bias-free linears stored (out, in). The same function serves as the shared
 * expert and as a dense layer's SwiGLU feed-forward, so their checkpoint names read alike.
 */
public final class Expert extends Module {
    private final Activation activation;
    private final Linear gate;
    private final Linear up;
    private final Linear down;

    public Expert(int dim, int hidden, Activation activation) {
        this.activation = activation;
        this.gate = activation.gated() ? registerModule(ExpertProjection.GATE.moduleName(), new Linear(dim, hidden)) : null;
        this.up = registerModule(ExpertProjection.UP.moduleName(), new Linear(dim, hidden));
        this.down = registerModule(ExpertProjection.DOWN.moduleName(), new Linear(hidden, dim));
    }

    /** Initialises the weights from {@code rng} in the fixed order gate, up, down; see {@link ExpertInit}. */
    public Expert init(Rng rng, double std, double downStd) {
        if (gate != null) gate.init(rng, std);
        up.init(rng, std);
        down.init(rng, downStd);
        return this;
    }

    public Activation activation() {
        return activation;
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
        int dim = up.inFeatures();
        if (x.rank() < 1 || x.dim(-1) != dim) {
            throw new IllegalArgumentException("Expert: input must be (..., " + dim + "), got " + x.shapeString());
        }
        if (x.rank() != 2) return Ops.reshape(forward(Ops.reshape(x, -1, dim)), x.shape());
        return wrapped(x, this::mlp);
    }

    private Tensor mlp(Tensor x) {
        Tensor hidden = activation.gated()
                ? Ops.swiglu(gate.forward(x), up.forward(x))
                : activation.apply(up.forward(x));
        return down.forward(hidden);
    }
}
