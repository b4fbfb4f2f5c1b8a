package moe4j.parallel;

import java.util.LinkedHashMap;
import java.util.Map;
import moe4j.distributed.ProcessGroup;
import moe4j.nn.ExpertProjection;
import moe4j.nn.MoEMLP;
import moe4j.nn.Module;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Tensor;

/**
 * Tensors keyed by <em>global</em> parameter names, whatever the EP size: what a checkpoint stores, so
 * that one written at one EP size loads at another (docs/EXPERT_PARALLELISM.md). List-layout experts already carry global
 * names ({@code experts.{g}.up_proj.weight}); packed expert tensors hold this rank's rows of the global
 * {@code (E, ...)} tensor. Replicated tensors are the same on every rank and taken as they are.
 */
public final class GlobalStateDict {
    private GlobalStateDict() {}

    /**
     * Assembles the global view of {@code local} (values keyed by this rank's parameter names: the
     * parameters themselves, or optimizer moments). A collective over each MoE layer's EP group: every
     * rank calls it, with the same model structure.
     */
    public static Map<String, Tensor> gather(Module model, Map<String, Tensor> local) {
        return gather(model, local, true);
    }

    /**
     * {@link #gather}, where only ranks with {@code keep} hold on to the result (e.g. the rank that writes a
     * checkpoint): the others take part in each exchange with one tensor's worth of memory, freed at once,
     * and get an empty map.
     */
    public static Map<String, Tensor> gather(Module model, Map<String, Tensor> local, boolean keep) {
        if (keep) return gatherAll(model, local);
        Map<String, MoEMLP> layers = moeLayers(model);
        for (var entry : local.entrySet()) {
            MoEMLP owner = ownerOfExpertTensor(layers, entry.getKey());
            if (owner == null || owner.epSize() == 1) continue;
            try (MemoryScope scope = MemoryScope.open()) {
                Tensor value = entry.getValue();
                int[] shape = value.shape();
                shape[0] *= owner.epGroup().size();
                owner.epGroup().allGather(Tensor.zeros(value.device(), value.dtype(), shape), value);
            }
        }
        return Map.of();
    }

    private static Map<String, Tensor> gatherAll(Module model, Map<String, Tensor> local) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        Map<String, MoEMLP> layers = moeLayers(model);
        for (var entry : local.entrySet()) {
            String name = entry.getKey();
            Tensor value = entry.getValue();
            MoEMLP owner = ownerOfExpertTensor(layers, name);
            if (owner == null || owner.epSize() == 1) {
                out.put(name, value);
                continue;
            }
            ProcessGroup group = owner.epGroup();
            if (owner.packed()) {
                int[] shape = value.shape();
                shape[0] *= group.size();
                Tensor full = Tensor.zeros(value.device(), value.dtype(), shape);
                group.allGather(full, value);
                out.put(name, full);
            } else {
                // experts.{g}.X for local expert g = start + j: gather local expert j of every rank
                String prefix = prefixOf(layers, owner);
                String rest = name.substring(prefix.length() + "experts.".length());
                int g = Integer.parseInt(rest.substring(0, rest.indexOf('.')));
                String suffix = rest.substring(rest.indexOf('.'));
                int j = g - owner.localExpertStart();
                int[] shape = value.shape();
                shape[0] *= group.size();
                Tensor all = Tensor.zeros(value.device(), value.dtype(), shape);
                group.allGather(all, value);
                int rows = value.dim(0);
                for (int r = 0; r < group.size(); r++) {
                    int global = r * owner.numLocalExperts() + j;
                    out.put(prefix + "experts." + global + suffix, all.rows(r * rows, (r + 1) * rows));
                }
            }
        }
        return out;
    }

    /**
     * Copies from {@code global} (global names, full tensors) into {@code local} (this rank's tensors by
     * its parameter names): packed expert tensors take this rank's rows. Every local name must be found
     * with the matching shape; nothing is copied unless all are.
     */
    public static void scatter(Module model, Map<String, Tensor> global, Map<String, Tensor> local, String source) {
        prepareScatter(model, global, local, source).run();
    }

    /**
     * Checks everything {@link #scatter} needs (names, shapes, dtypes, expert counts) and returns the
     * copy, to run once every other check of a load has passed too: a failed load changes nothing.
     */
    public static Runnable prepareScatter(Module model, Map<String, Tensor> global, Map<String, Tensor> local, String source) {
        Map<String, MoEMLP> layers = moeLayers(model);
        java.util.List<Tensor[]> copies = new java.util.ArrayList<>();
        for (var entry : local.entrySet()) {
            String name = entry.getKey();
            Tensor target = entry.getValue();
            Tensor src = global.get(name);
            if (src == null) throw new IllegalArgumentException(source + ": missing tensor '" + name + "'");
            MoEMLP owner = ownerOfExpertTensor(layers, name);
            if (owner != null && owner.packed() && owner.epSize() > 1) {
                if (src.dim(0) != owner.numExperts()) {
                    throw new IllegalArgumentException(source + ": tensor '" + name + "' has " + src.dim(0)
                            + " experts, the model has " + owner.numExperts());
                }
                src = src.rows(owner.localExpertStart(), owner.localExpertStart() + owner.numLocalExperts());
            }
            if (!src.sameShape(target) || src.dtype() != target.dtype()) {
                throw new IllegalArgumentException(source + ": tensor '" + name + "' is " + src.dtype() + src.shapeString()
                        + ", the model expects " + target.dtype() + target.shapeString());
            }
            copies.add(new Tensor[] {target, src});
        }
        return () -> {
            for (Tensor[] c : copies) c[0].copyFrom(c[1]);
        };
    }

    /**
     * The global names and shapes {@link #gather} makes of tensors with these (EP-local) shapes, in the order
     * it makes them, without collectives: what a checkpoint announces before its tensors arrive.
     */
    public static Map<String, int[]> globalShapes(Module model, Map<String, int[]> local) {
        Map<String, MoEMLP> layers = moeLayers(model);
        Map<String, int[]> out = new LinkedHashMap<>();
        local.forEach((name, shape) -> {
            MoEMLP owner = ownerOfExpertTensor(layers, name);
            if (owner == null || owner.epSize() == 1) {
                out.put(name, shape.clone());
            } else if (owner.packed()) {
                int[] global = shape.clone();
                global[0] *= owner.epSize();
                out.put(name, global);
            } else {
                String prefix = prefixOf(layers, owner);
                String rest = name.substring(prefix.length() + "experts.".length());
                int j = Integer.parseInt(rest.substring(0, rest.indexOf('.'))) - owner.localExpertStart();
                String suffix = rest.substring(rest.indexOf('.'));
                for (int r = 0; r < owner.epSize(); r++) out.put(prefix + "experts." + (r * owner.numLocalExperts() + j) + suffix, shape.clone());
            }
        });
        return out;
    }

    private static Map<String, MoEMLP> moeLayers(Module model) {
        Map<String, MoEMLP> out = new LinkedHashMap<>();
        model.namedModules().forEach((name, m) -> {
            if (m instanceof MoEMLP moe) out.put(name.isEmpty() ? "" : name + ".", moe);
        });
        return out;
    }

    private static String prefixOf(Map<String, MoEMLP> layers, MoEMLP moe) {
        for (var e : layers.entrySet()) {
            if (e.getValue() == moe) return e.getKey();
        }
        throw new IllegalStateException("layer not in model");
    }

    /** The MoE layer whose expert tensor {@code name} is, or null for replicated tensors (router, shared expert, the rest). */
    private static MoEMLP ownerOfExpertTensor(Map<String, MoEMLP> layers, String name) {
        for (var e : layers.entrySet()) {
            String prefix = e.getKey();
            if (!name.startsWith(prefix)) continue;
            String rest = name.substring(prefix.length());
            if (rest.startsWith("experts.")) return e.getValue();
            for (ExpertProjection projection : ExpertProjection.values()) {
                if (rest.equals(projection.packedName())) return e.getValue();
            }
        }
        return null;
    }
}
