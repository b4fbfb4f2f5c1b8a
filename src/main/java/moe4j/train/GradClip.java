package moe4j.train;

import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.kernels.Kernels;
import moe4j.nn.Module;
import moe4j.parallel.GradientSync;
import moe4j.tensor.Tensor;

/**
 * Gradient-norm clipping with one global norm, bit-identical on every rank: replicated parameters'
 * gradients (already equal everywhere after {@link GradientSync}) count once; expert gradients, which
 * differ between EP ranks, are summed over all data ranks in rank order and divided by the number of
 * copies of each expert. All ranks therefore scale by the same factor and replicas never drift apart.
 */
public final class GradClip {
    private GradClip() {}

    /** The global L2 norm of all gradients (call after {@link GradientSync#synchronize()}). */
    public static double globalNorm(Module model, GradientSync sync) {
        if (sync.isSharded()) return sync.shardedGradientNorm();
        if (sync.hasTensorParallel()) return sync.tensorParallelGradientNorm();
        double dense = 0;
        double expert = 0;
        for (Tensor p : model.parameters()) {
            Tensor g = p.grad();
            if (g == null) continue;
            double sq = Kernels.of(g.device()).reductions().sumOfSquares(g); // one scalar copied to the host
            if (sync.isExpertParameter(p)) expert += sq;
            else dense += sq;
        }
        ProcessGroup data = sync.dataGroup();
        if (data != null && data.size() > 1) {
            Tensor t = Tensor.of(new float[] {(float) expert});
            data.allReduce(t, ReduceOp.SUM);
            expert = t.item() / sync.expertReplicaGroup().size();
            // the dense part is the same everywhere; the norm is computed in float to stay identical across ranks
        }
        return Math.sqrt((float) dense + (float) expert);
    }

    /** The global gradient norm and the factor clipping applies to every gradient: {@code maxNorm / norm} when larger, else 1. */
    public record Clipping(double norm, float scale) {}

    /**
     * The norm of the gradients and their clipping factor {@code min(1, maxNorm / norm)} (no clipping for
     * maxNorm ≤ 0). The gradients are not changed: the optimizer applies the factor as it reads them
     * ({@link AdamW#step(double, float)}), which saves a pass over every gradient.
     */
    public static Clipping measure(Module model, GradientSync sync, double maxNorm) {
        double norm = globalNorm(model, sync);
        return new Clipping(norm, maxNorm > 0 && norm > maxNorm ? (float) (maxNorm / (norm + 1e-6)) : 1f);
    }
}
