package moe4j.nn;

import moe4j.ops.Ops;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * One expert MLP in the list layout: SwiGLU {@code down(silu(gate(x)) · up(x))} or standard
 * {@code down(act(up(x)))}, bias-free linears stored (out, in). Also the shared expert.
 */
public final class Expert extends Module {
    private final Activation activation;
    private final Linear gate;
    private final Linear up;
    private final Linear down;

    public Expert(int dim, int hidden, Activation activation) {
        this.activation = activation;
        this.gate = activation.gated() ? registerModule("gate_proj", new Linear(dim, hidden)) : null;
        this.up = registerModule("up_proj", new Linear(dim, hidden));
        this.down = registerModule("down_proj", new Linear(hidden, dim));
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

    public Tensor forward(Tensor x) {
        Tensor hidden = activation.gated()
                ? Ops.swiglu(gate.forward(x), up.forward(x))
                : activation.apply(up.forward(x));
        return down.forward(hidden);
    }
}
