package moe4j.parallel;

import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.Set;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.kernels.Kernels;
import moe4j.nn.MoEMLP;
import moe4j.nn.Module;
import moe4j.tensor.Tensor;

/**
 * Makes the gradients of a step equal to those of one rank training on the global batch, when every
 * data rank ({@code dp_replicate × dp_shard × ep}) sees its own shard of the batch and normalises its
 * loss over its own tokens:
 * <ul>
 *   <li>replicated (dense) parameters: averaged over all data ranks;</li>
 *   <li>expert parameters: their owner already holds the sum over the EP group of every rank's
 *       contribution (the all-to-all's backward brought them home), so they are summed over the ranks
 *       that hold the same experts and divided by the number of data ranks.</li>
 * </ul>
 * Every rank issues the same reductions in the same order (parameters in registration order).
 */
public final class GradientSync {
    private final Module model;
    private final ProcessGroup dataGroup;
    private final ProcessGroup expertReplicaGroup;
    private final Set<Tensor> expertParameters = Collections.newSetFromMap(new IdentityHashMap<>());

    private GradientSync(Module model, ProcessGroup dataGroup, ProcessGroup expertReplicaGroup) {
        this.model = model;
        this.dataGroup = dataGroup;
        this.expertReplicaGroup = expertReplicaGroup;
        for (Module m : model.namedModules().values()) {
            if (m instanceof MoEMLP moe) expertParameters.addAll(moe.expertParameters());
        }
    }

    /** The data ranks of {@code mesh} (all of dp_replicate, dp_shard, ep); null mesh: a single rank. */
    public static GradientSync create(Module model, DeviceMesh mesh) {
        if (mesh == null) return new GradientSync(model, null, null);
        DeviceMesh data = mesh.flatten("data", "dp_replicate", "dp_shard", "ep");
        DeviceMesh replicas = mesh.flatten("expert_replicas", "dp_replicate", "dp_shard");
        return new GradientSync(model, data.group(), replicas.group());
    }

    /** The group over which a global quantity (loss, token count, gradient norm of dense parts) is reduced. */
    public ProcessGroup dataGroup() {
        return dataGroup;
    }

    public ProcessGroup expertReplicaGroup() {
        return expertReplicaGroup;
    }

    public boolean isExpertParameter(Tensor p) {
        return expertParameters.contains(p);
    }

    /** Reduces every parameter's gradient in place (see the class comment). Parameters without a gradient get zeros. */
    public void synchronize() {
        if (dataGroup == null || dataGroup.size() == 1) return;
        float inverseDataRanks = 1f / dataGroup.size();
        for (Tensor p : model.parameters()) {
            if (p.grad() == null) p.setGrad(Module.persistentZerosLike(p));
            Tensor g = p.grad();
            if (expertParameters.contains(p)) {
                if (expertReplicaGroup.size() > 1) expertReplicaGroup.allReduce(g, ReduceOp.SUM);
                Kernels.of(g.device()).elementwise().scale(inverseDataRanks, g, g);
            } else {
                dataGroup.allReduce(g, ReduceOp.AVG);
            }
        }
    }
}
