package moe4j.bench;

import java.lang.management.BufferPoolMXBean;
import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.List;
import moe4j.autograd.Autograd;
import moe4j.ops.Ops;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.ProcessMemory;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * Shows that a long training loop keeps its off-heap memory flat: a small MLP
 * {@code x (B, D) → Linear D→H → silu → Linear H→D → mean-square error} trains by plain SGD for many
 * steps, each step inside its own {@link MemoryScope}, parameters persistent, and memory is sampled
 * along the way.
 *
 * <p>Three gauges, because each sees a different leak: bytes held by open scopes (activations of a
 * step that were not freed), bytes of automatic arenas, i.e. persistent tensors (gradients or optimizer
 * state re-created every step and never released), and the resident set size of the process (anything
 * else, native or not).
 *
 * <p>Run: {@code java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED
 * -XX:-TieredCompilation -Xms64m -Xmx64m -XX:+AlwaysPreTouch -cp target/classes moe4j.ops.LeakCheck [steps]}.
 * The fixed, pre-touched heap matters for the RSS gauge: otherwise the first touch of fresh eden pages
 * (no GC may run for thousands of steps) shows up as a slow RSS climb that is not a leak.
 */
public final class LeakCheck {
    private LeakCheck() {}

    /**
     * Memory at the end of one step, after its scope closed; {@code stepBytes} is what the step's scope
     * held just before closing (the step's activations and gradients).
     */
    public record Sample(int step, long stepBytes, long scopedBytes, long persistentBytes, long rssBytes, double loss) {
        @Override
        public String toString() {
            return String.format(java.util.Locale.ROOT, "step %6d  step-scope %7d B  open-scope %3d B  persistent %7d B  RSS %7.1f MiB  loss %.3g",
                    step, stepBytes, scopedBytes, persistentBytes, rssBytes / (1024.0 * 1024), loss);
        }
    }

    /** Shape of the model and of the loop. */
    public record Config(int batch, int dim, int hidden, int steps, int sampleEvery, double learningRate, long seed) {
        public static Config standard(int steps) {
            return new Config(32, 64, 128, steps, Math.max(1, steps / 10), 0.05, 1);
        }
    }

    /** Trains and returns a sample after step 1 and every {@code sampleEvery} steps (the last step included). */
    public static List<Sample> run(Config c) {
        Rng rng = new Rng(c.seed());
        // everything that lives across steps is persistent
        Tensor x = MemoryScope.persistent(() -> Tensor.randn(rng, 1.0, c.batch(), c.dim()));
        Tensor target = MemoryScope.persistent(() -> Tensor.randn(rng, 0.5, c.batch(), c.dim()));
        Tensor w1 = MemoryScope.persistent(() -> Tensor.randn(rng, 1 / Math.sqrt(c.dim()), c.dim(), c.hidden()))
                .requiresGrad(true);
        Tensor w2 = MemoryScope.persistent(() -> Tensor.randn(rng, 1 / Math.sqrt(c.hidden()), c.hidden(), c.dim()))
                .requiresGrad(true);
        List<Tensor> params = List.of(w1, w2);

        List<Sample> samples = new ArrayList<>();
        long outside = MemoryScope.scopedBytes();
        for (int step = 1; step <= c.steps(); step++) {
            double loss;
            long stepBytes;
            try (MemoryScope s = MemoryScope.open()) {
                Tensor h = Ops.silu(Ops.matmul(x, w1));
                Tensor err = Ops.sub(Ops.matmul(h, w2), target);
                Tensor l = Ops.mean(Ops.square(err));
                loss = l.item();
                Autograd.backward(l);
                sgd(params, c.learningRate());
                stepBytes = MemoryScope.scopedBytes() - outside;
            }
            if (step == 1 || step % c.sampleEvery() == 0 || step == c.steps()) {
                samples.add(new Sample(step, stepBytes, MemoryScope.scopedBytes() - outside, persistentBytes(), ProcessMemory.residentBytes(), loss));
            }
        }
        return samples;
    }

    /** p ← p − lr · ∇p, then ∇p ← 0 in place (the gradient buffers are kept, not re-created). */
    private static void sgd(List<Tensor> params, double lr) {
        try (AutoCloseable ignored = Autograd.noGrad()) {
            for (Tensor p : params) {
                p.copyFrom(Ops.sub(p, Ops.scale(p.grad(), lr)));
                p.grad().fill(0f);
            }
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    /** Bytes of automatic arenas, where persistent tensors live (the JDK counts them in the "direct" pool). */
    public static long persistentBytes() {
        for (BufferPoolMXBean pool : ManagementFactory.getPlatformMXBeans(BufferPoolMXBean.class)) {
            if (pool.getName().equals("direct")) return pool.getMemoryUsed();
        }
        return -1;
    }

    public static void main(String[] args) {
        int steps = args.length > 0 ? Integer.parseInt(args[0]) : 10_000;
        Config c = Config.standard(steps);
        System.out.printf(java.util.Locale.ROOT, "LeakCheck: MLP %d×%d → %d → silu → %d, %d SGD steps, one MemoryScope per step%n",
                c.batch(), c.dim(), c.hidden(), c.dim(), steps);
        long t0 = System.nanoTime();
        List<Sample> samples = run(c);
        double seconds = (System.nanoTime() - t0) / 1e9;
        samples.forEach(System.out::println);
        Sample warm = samples.get(Math.min(1, samples.size() - 1));
        Sample last = samples.get(samples.size() - 1);
        System.out.printf(java.util.Locale.ROOT, "%d steps × %d B of step memory = %.2f GB allocated and freed by scopes%n",
                steps, last.stepBytes(), (double) steps * last.stepBytes() / 1e9);
        System.out.printf(java.util.Locale.ROOT, "from step %d to %d: open-scope %+d B, persistent %+d B, RSS %+.2f MiB (%.1f s)%n",
                warm.step(), last.step(), last.scopedBytes() - warm.scopedBytes(),
                last.persistentBytes() - warm.persistentBytes(),
                (last.rssBytes() - warm.rssBytes()) / (1024.0 * 1024), seconds);
    }
}
