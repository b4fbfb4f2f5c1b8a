package moe4j.train;

import java.util.Map;
import moe4j.autograd.Autograd;
import moe4j.data.DataLoader;
import moe4j.data.SyntheticTasks;
import moe4j.nn.MoETransformer;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

class DeterminismProbe2Test {
    @Test
    void probe() {
        TrainConfig cfg = TrainerTest.tiny(java.nio.file.Path.of("/tmp/x")).ep(1).build();
        Map<String, float[]> first = null;
        for (int run = 0; run < 3; run++) {
            MoETransformer m = new MoETransformer(cfg.model());
            DataLoader loader = new DataLoader(new SyntheticTasks(0), 8, 16);
            var b = loader.next();
            var loss = m.loss(b.inputs(), b.targets());
            Autograd.backward(loss.total());
            Map<String, float[]> g = new java.util.TreeMap<>();
            m.namedParameters().forEach((n, t) -> g.put(n, t.grad().toFloatArray()));
            if (first == null) { first = g; System.err.println("loss " + loss.total().item()); continue; }
            for (var e : g.entrySet()) {
                if (!java.util.Arrays.equals(e.getValue(), first.get(e.getKey()))) System.err.println("PROBE run " + run + " differs: " + e.getKey());
            }
        }
    }
}
