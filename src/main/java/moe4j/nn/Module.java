package moe4j.nn;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import moe4j.tensor.Device;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;

/**
 * A node of a model: its own parameters and child modules, both named, in registration order.
 * Fully qualified names ({@code layers.0.moe.experts.3.up_proj.weight}) follow the PyTorch convention so
 * that checkpoints interoperate.
 */
public abstract class Module {
    private final Map<String, Tensor> parameters = new LinkedHashMap<>();
    private final Map<String, Module> children = new LinkedHashMap<>();
    private boolean training = true;
    private ForwardWrapper forwardWrapper;

    /**
     * What a parallelism puts around a module's forward (collectives before and after it, a different way
     * to look up ids) without the module knowing: {@code body} is the module's own computation.
     */
    @FunctionalInterface
    public interface ForwardWrapper {
        Tensor apply(Tensor input, java.util.function.UnaryOperator<Tensor> body);
    }

    /**
     * Puts {@code wrapper} around this module's forward (modules that take one tensor and support it say
     * so: {@link Linear}, {@link Embedding}, {@link Attention}, {@link Expert}, {@link MoEMLP},
     * {@link TransformerBlock}),
     * outside any wrapper put there before: transformations applied later see the earlier ones as part of
     * the module (sharding gathers the parameters a tensor-parallel forward then uses).
     */
    public void wrapForward(ForwardWrapper wrapper) {
        java.util.Objects.requireNonNull(wrapper, "wrapper");
        ForwardWrapper inner = forwardWrapper;
        this.forwardWrapper = inner == null ? wrapper : (x, body) -> wrapper.apply(x, y -> inner.apply(y, body));
    }

    /** {@code body(input)}, through the forward wrapper when one is set. */
    protected final Tensor wrapped(Tensor input, java.util.function.UnaryOperator<Tensor> body) {
        return forwardWrapper == null ? body.apply(input) : forwardWrapper.apply(input, body);
    }

    /** Registers a trainable parameter: moved to persistent memory's lifetime by the caller, marked requiresGrad. */
    protected Tensor registerParameter(String name, Tensor value) {
        value.requiresGrad(true);
        parameters.put(name, value);
        return value;
    }

    /** Replaces a parameter registered before (e.g. by a slice of it); the name keeps its position. */
    protected Tensor replaceParameter(String name, Tensor value) {
        if (!parameters.containsKey(name)) throw new IllegalArgumentException("no parameter named '" + name + "' in " + getClass().getSimpleName());
        value.requiresGrad(true);
        parameters.put(name, value);
        return value;
    }

    /**
     * Replaces the parameter of qualified name {@code name} ({@code layers.0.attention.wq.weight}) by
     * {@code value}, keeping its place: for a parallelism that keeps a parameter elsewhere between uses
     * (sharding) and hands the module a whole one when it is needed. Modules read their parameters at each
     * use, never keep them.
     */
    public void setParameter(String name, Tensor value) {
        if (!trySetParameter(name, value)) {
            throw new IllegalArgumentException("no parameter named '" + name + "' in " + getClass().getSimpleName());
        }
    }

    private boolean trySetParameter(String name, Tensor value) {
        if (parameters.containsKey(name)) {
            replaceParameter(name, value);
            return true;
        }
        for (var child : children.entrySet()) {
            if (name.startsWith(child.getKey() + ".") && child.getValue().trySetParameter(name.substring(child.getKey().length() + 1), value)) {
                return true;
            }
        }
        return false;
    }

    /** This module's own parameter {@code name} (not a descendant's), or null. */
    protected Tensor parameter(String name) {
        return parameters.get(name);
    }

    protected void removeParameter(String name) {
        parameters.remove(name);
    }

    protected <M extends Module> M registerModule(String name, M module) {
        children.put(name, module);
        return module;
    }

    protected void removeModule(String name) {
        children.remove(name);
    }

    /** Every parameter of this module and its descendants under its qualified name. */
    public Map<String, Tensor> namedParameters() {
        Map<String, Tensor> out = new LinkedHashMap<>();
        collect("", out);
        return out;
    }

    private void collect(String prefix, Map<String, Tensor> out) {
        parameters.forEach((n, t) -> out.put(prefix + n, t));
        children.forEach((n, m) -> m.collect(prefix + n + ".", out));
    }

    public List<Tensor> parameters() {
        return new ArrayList<>(namedParameters().values());
    }

    /** This module and all its descendants, pre-order, under their qualified names ("" for this one). */
    public Map<String, Module> namedModules() {
        Map<String, Module> out = new LinkedHashMap<>();
        collectModules("", out);
        return out;
    }

    private void collectModules(String name, Map<String, Module> out) {
        out.put(name, this);
        children.forEach((n, m) -> m.collectModules(name.isEmpty() ? n : name + "." + n, out));
    }

    public Map<String, Module> children() {
        return Collections.unmodifiableMap(children);
    }

    public boolean isTraining() {
        return training;
    }

    /** Training or evaluation mode, for this module and all descendants. */
    public void train(boolean on) {
        for (Module m : namedModules().values()) m.training = on;
    }

    /**
     * Moves every parameter of this module and its descendants to {@code device}: each is replaced (under
     * its name, in its place) by a copy there that outlives any step scope and requires a gradient; a
     * parameter already there is kept. Gradients are not carried over (move a model before training it).
     * Returns this module.
     */
    public Module to(Device device) {
        for (Module m : namedModules().values()) {
            for (Map.Entry<String, Tensor> e : new ArrayList<>(m.parameters.entrySet())) {
                Tensor t = e.getValue();
                if (t.device().equals(device)) continue;
                m.replaceParameter(e.getKey(), MemoryScope.persistent(() -> t.to(device)));
            }
        }
        return this;
    }

    public void zeroGrad() {
        for (Tensor p : parameters()) {
            p.zeroGrad();
        }
    }

    /** A zero tensor shaped like {@code t} that outlives any step scope (e.g. a gradient). */
    public static Tensor persistentZerosLike(Tensor t) {
        return MemoryScope.persistent(() -> Tensor.zerosLike(t));
    }

    /** A persistent copy of {@code t} (e.g. the block of a parameter a rank keeps). */
    protected static Tensor persistentCopy(Tensor t) {
        return MemoryScope.persistent(t::copy);
    }

    /** A parameter tensor that outlives any step scope. */
    protected static Tensor persistentZeros(int... shape) {
        return MemoryScope.persistent(() -> Tensor.zeros(shape));
    }

    /** A parameter tensor on {@code device} that outlives any step scope (e.g. a shard of a parameter there). */
    protected static Tensor persistentZerosOn(Device device, int... shape) {
        return MemoryScope.persistent(() -> Tensor.zeros(device, shape));
    }
}
