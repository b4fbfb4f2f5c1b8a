package moe4j.parallel;

import moe4j.distributed.DeviceMesh;
import moe4j.nn.MoEMLP;
import moe4j.nn.Module;

/**
 * The one place that turns an ordinary model into a parallel one, in the only order that composes:
 * tensor parallelism → expert parallelism → (low precision) → (activation checkpointing) → data
 * parallelism (sharded over {@code dp_shard} when it is > 1, see {@link GradientSync}). Each step is a
 * transformation of the model built as for one rank.
 */
public final class Parallelize {
    private Parallelize() {}

    /** Applies every parallelism {@code mesh} asks for; returns the gradient synchroniser of the data ranks. */
    public static GradientSync apply(Module model, DeviceMesh mesh) {
        TensorParallel.apply(model, mesh);
        ExpertParallel.apply(model, mesh);
        GradientSync sync = GradientSync.create(model, mesh);
        // load-balance statistics over the whole data-parallel batch, so the aux loss matches one rank's
        for (var m : model.namedModules().values()) {
            if (m instanceof MoEMLP moe) moe.router().setStatisticsGroup(sync.dataGroup());
        }
        ParallelPlan.of(model).mark(ParallelPlan.Stage.DATA_PARALLEL_SHARDING);
        return sync;
    }
}
