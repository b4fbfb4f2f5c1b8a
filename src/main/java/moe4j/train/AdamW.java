package moe4j.train;

import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import moe4j.kernels.Kernels;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;

/**
 * Adam with decoupled weight decay (Loshchilov and Hutter): for each parameter p with gradient g,
 * {@code m ← β1·m + (1−β1)·g}, {@code v ← β2·v + (1−β2)·g²},
 * {@code p ← p − lr·(m̂ / (√v̂ + ε) + λ·p)} with bias-corrected m̂, v̂. Parameters listed as
 * "no decay" (norm weights; the router's bias is state, not a parameter) get λ = 0.
 */
public final class AdamW {
    private final Map<String, Tensor> params;
    private final Set<Tensor> noDecay;
    private final double beta1;
    private final double beta2;
    private final double eps;
    private final double weightDecay;
    private final Map<String, Tensor> expAvg = new LinkedHashMap<>();
    private final Map<String, Tensor> expAvgSq = new LinkedHashMap<>();
    private long step;

    public AdamW(Map<String, Tensor> params, Set<Tensor> noDecay, double beta1, double beta2, double eps, double weightDecay) {
        if (beta1 < 0 || beta1 >= 1) throw new IllegalArgumentException("AdamW: beta1 must be in [0, 1), got " + beta1);
        if (beta2 < 0 || beta2 >= 1) throw new IllegalArgumentException("AdamW: beta2 must be in [0, 1), got " + beta2);
        if (!(eps > 0)) throw new IllegalArgumentException("AdamW: eps must be > 0, got " + eps);
        if (weightDecay < 0) throw new IllegalArgumentException("AdamW: weight decay must be >= 0, got " + weightDecay);
        this.params = new LinkedHashMap<>(params);
        this.noDecay = Collections.newSetFromMap(new IdentityHashMap<>());
        this.noDecay.addAll(noDecay);
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.eps = eps;
        this.weightDecay = weightDecay;
        params.forEach((name, p) -> {
            expAvg.put(name, MemoryScope.persistent(() -> Tensor.zerosLike(p)));
            expAvgSq.put(name, MemoryScope.persistent(() -> Tensor.zerosLike(p)));
        });
    }

    /** One update of every parameter that has a gradient, at learning rate {@code lr}. */
    public void step(double lr) {
        step(lr, 1f);
    }

    /**
     * {@link #step(double)} with every gradient taken times {@code gradScale} (gradient clipping's factor,
     * {@link GradClip#measure}); the stored gradients are not changed.
     */
    public void step(double lr, float gradScale) {
        step++;
        double c1 = 1 - Math.pow(beta1, step);
        double c2 = 1 - Math.pow(beta2, step);
        params.forEach((name, p) -> {
            Tensor g = p.grad();
            if (g == null) return;
            double decay = noDecay.contains(p) ? 0 : weightDecay;
            Kernels.on("AdamW", p, g).optimizer().adamW(p, g, expAvg.get(name), expAvgSq.get(name),
                    (float) lr, (float) beta1, (float) beta2, (float) eps, (float) decay, (float) c1, (float) c2, gradScale);
        });
    }

    public long stepCount() {
        return step;
    }

    public void setStepCount(long step) {
        this.step = step;
    }

    /** First moments by parameter name (live tensors: checkpoints read and restore them in place). */
    public Map<String, Tensor> expAvg() {
        return Collections.unmodifiableMap(expAvg);
    }

    /** Second moments by parameter name. */
    public Map<String, Tensor> expAvgSq() {
        return Collections.unmodifiableMap(expAvgSq);
    }
}
