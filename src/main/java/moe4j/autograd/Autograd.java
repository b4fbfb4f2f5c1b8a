package moe4j.autograd;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import moe4j.kernels.Kernels;
import moe4j.tensor.GradFn;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;

/**
 * Reverse-mode differentiation over the graph that {@link GradFn} records link together.
 *
 * <p>The contract that expert parallelism relies on: {@link #backward} runs the backward rule of
 * <em>every</em> node reachable from the root, exactly once, in a deterministic order, even a node
 * whose output received no gradient (it gets zeros). A node that performs a collective in its backward
 * therefore takes part on every rank whose forward recorded it, whatever the routing did, and leaves
 * that were used get a gradient tensor (zero where nothing flowed).
 */
public final class Autograd {
    private Autograd() {}

    private static final ThreadLocal<int[]> NO_GRAD_DEPTH = ThreadLocal.withInitial(() -> new int[1]);

    /** Whether ops on this thread record their backward rules. */
    public static boolean isGradEnabled() {
        return NO_GRAD_DEPTH.get()[0] == 0;
    }

    /** Until closed, ops on this thread record nothing (evaluation, optimizer updates). */
    public static AutoCloseable noGrad() {
        int[] depth = NO_GRAD_DEPTH.get();
        depth[0]++;
        return new AutoCloseable() {
            private boolean closed;

            @Override
            public void close() {
                if (!closed) {
                    closed = true;
                    depth[0]--;
                }
            }
        };
    }

    /** Runs {@code body} without recording. */
    public static <T> T noGrad(java.util.function.Supplier<T> body) {
        int[] depth = NO_GRAD_DEPTH.get();
        depth[0]++;
        try {
            return body.get();
        } finally {
            depth[0]--;
        }
    }

    /**
     * Records {@code rule} as the way {@code output} was computed from {@code inputs}, if recording is on
     * and some input requires a gradient. Returns {@code output}.
     */
    public static Tensor record(Tensor output, String name, Tensor[] inputs, Function<Tensor, Tensor[]> rule) {
        if (!isGradEnabled()) return output;
        boolean any = false;
        for (Tensor t : inputs) {
            if (t != null && t.requiresGrad()) {
                any = true;
                break;
            }
        }
        if (!any) return output;
        return attach(output, name, inputs, rule);
    }

    /**
     * Records {@code rule} whenever recording is on, even if no input requires a gradient. For collectives:
     * their backward must run on every rank that ran their forward, whatever each rank's inputs are.
     */
    public static Tensor recordAlways(Tensor output, String name, Tensor[] inputs, Function<Tensor, Tensor[]> rule) {
        return isGradEnabled() ? attach(output, name, inputs, rule) : output;
    }

    private static Tensor attach(Tensor output, String name, Tensor[] inputs, Function<Tensor, Tensor[]> rule) {
        String phase = Profiler.currentPhase();
        Function<Tensor, Tensor[]> timed = phase == null ? rule : g -> {
            long start = Profiler.clock();
            try {
                return rule.apply(g);
            } finally {
                Profiler.charge(phase, Profiler.clock() - start);
            }
        };
        output.setGradFn(new GradFn() {
            @Override
            public String name() {
                return name;
            }

            @Override
            public Tensor[] inputs() {
                return inputs;
            }

            @Override
            public Tensor[] backward(Tensor gradOutput) {
                return timed.apply(gradOutput);
            }
        });
        return output;
    }

    /**
     * Where a backward rule puts the gradient of {@code input}: {@code tensor ← beta·tensor + gradient}, the
     * rule writing every element (a product with that beta does it for free).
     */
    public record GradientTarget(Tensor tensor, float beta) {}

    /**
     * The target for {@code input}'s gradient: for a leaf (a parameter) its own gradient buffer, overwritten
     * (beta 0) when it was zeroed ({@link Tensor#zeroGrad}) and nothing was added since, added to (beta 1)
     * when it holds gradients already (micro-batches, a weight used twice); accumulation then sees the same
     * tensor and leaves it, so no copy or addition follows. Otherwise a new tensor of unspecified contents, beta 0.
     */
    public static GradientTarget gradientTarget(Tensor input) {
        if (input.isLeaf() && input.requiresGrad()) {
            Tensor own = input.gradToOverwrite();
            if (own != null) return new GradientTarget(own, 0f);
            if (input.grad() != null) return new GradientTarget(input.grad(), 1f);
        }
        return new GradientTarget(Tensor.emptyLike(input), 0f);
    }

    /** Back-propagates from a one-element {@code root} (seed gradient 1). */
    public static void backward(Tensor root) {
        if (root.numel() != 1) {
            throw new IllegalArgumentException("backward: root of shape " + root.shapeString()
                    + " is not a scalar; pass its gradient explicitly");
        }
        Tensor seed = Tensor.zerosLike(root); // on the root's device
        seed.fill(1f);
        backward(root, seed);
    }

    /** Back-propagates {@code seed}, the gradient of some loss with respect to {@code root}. */
    public static void backward(Tensor root, Tensor seed) {
        if (!root.sameShape(seed)) {
            throw new IllegalArgumentException("backward: seed gradient " + seed.shapeString()
                    + " does not match root " + root.shapeString());
        }
        if (!root.requiresGrad()) {
            throw new IllegalArgumentException("backward: root " + root + " does not require a gradient");
        }
        if (root.isLeaf()) {
            accumulateLeaf(root, seed);
            return;
        }
        List<Tensor> order = topologicalOrder(root);
        Map<Tensor, Tensor> pending = new IdentityHashMap<>();
        pending.put(root, seed);
        try (AutoCloseable ignored = noGrad()) {
            for (int i = order.size() - 1; i >= 0; i--) {
                Tensor node = order.get(i);
                Tensor grad = pending.remove(node);
                if (grad == null) grad = Tensor.zerosLike(node);
                GradFn fn = node.gradFn();
                Tensor[] inputs = fn.inputs();
                Tensor[] inputGrads = fn.backward(grad);
                if (inputGrads.length != inputs.length) {
                    throw new IllegalStateException(fn.name() + ": backward returned " + inputGrads.length
                            + " gradients for " + inputs.length + " inputs");
                }
                for (int k = 0; k < inputs.length; k++) {
                    Tensor in = inputs[k];
                    Tensor g = inputGrads[k];
                    if (in == null || g == null || !in.requiresGrad()) continue;
                    if (!g.sameShape(in)) {
                        throw new IllegalStateException(fn.name() + ": gradient of input " + k + " has shape "
                                + g.shapeString() + ", input has " + in.shapeString());
                    }
                    if (in.isLeaf()) {
                        accumulateLeaf(in, g);
                    } else {
                        Tensor prev = pending.get(in);
                        // never add in place: a rule may hand the same tensor to several inputs
                        pending.put(in, prev == null ? g : sum(prev, g));
                    }
                }
            }
        } catch (RuntimeException e) {
            throw e;
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    /** Post-order of the non-leaf tensors reachable from root (root last); iterative, graphs can be deep. */
    private static List<Tensor> topologicalOrder(Tensor root) {
        List<Tensor> order = new ArrayList<>();
        Map<Tensor, Boolean> visited = new IdentityHashMap<>();
        Deque<Object[]> stack = new ArrayDeque<>();
        stack.push(new Object[] {root, 0});
        visited.put(root, Boolean.TRUE);
        while (!stack.isEmpty()) {
            Object[] frame = stack.peek();
            Tensor t = (Tensor) frame[0];
            int next = (Integer) frame[1];
            Tensor[] inputs = t.gradFn().inputs();
            if (next < inputs.length) {
                frame[1] = next + 1;
                Tensor in = inputs[next];
                if (in != null && in.requiresGrad() && !in.isLeaf() && visited.put(in, Boolean.TRUE) == null) {
                    stack.push(new Object[] {in, 0});
                }
            } else {
                stack.pop();
                order.add(t);
            }
        }
        return order;
    }

    private static void accumulateLeaf(Tensor leaf, Tensor g) {
        // (first: reading grad() would fill the zeros that the copy makes unnecessary)
        Tensor zeroed = leaf.gradToOverwrite();
        if (zeroed != null) {
            if (zeroed != g) zeroed.copyFrom(g); // the first gradient since zeroGrad: 0 + g is g
            return;
        }
        if (g == leaf.grad()) return; // written in place by its rule (gradientTarget)
        Tensor existing = leaf.grad();
        if (existing == null) {
            // Gradients of leaves (parameters) outlive the step's scope.
            Tensor fresh = MemoryScope.persistent(() -> Tensor.zerosLike(leaf));
            fresh.copyFrom(g);
            leaf.setGrad(fresh);
        } else {
            addInto(existing, g);
        }
    }

    private static void addInto(Tensor acc, Tensor g) {
        Kernels.on("backward", acc, g).elementwise().axpy(1f, g, acc);
    }

    private static Tensor sum(Tensor a, Tensor b) {
        Tensor out = a.copy();
        addInto(out, b);
        return out;
    }
}
