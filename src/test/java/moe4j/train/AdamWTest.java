package moe4j.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

/** AdamW with a gradient factor (how clipping reaches the update) against the update on pre-scaled gradients. */
class AdamWTest {
    @Test
    void aGradientFactorIsTheUpdateOnGradientsScaledInPlaceBitForBit() {
        float scale = 0.3719f;
        Rng rng = new Rng(5);
        // 1037 elements: the vector loop and its scalar tail both run
        Tensor p1 = Tensor.randn(rng, 1.0, 1037), g = Tensor.randn(rng, 1.0, 1037);
        Tensor p2 = p1.copy();
        Tensor scaled = g.copy();
        for (long i = 0; i < scaled.numel(); i++) scaled.set(i, scaled.get(i) * scale);
        AdamW withFactor = optimizer(p1, g.copy());
        AdamW preScaled = optimizer(p2, scaled);
        for (int step = 0; step < 3; step++) {
            withFactor.step(1e-2, scale);
            preScaled.step(1e-2);
        }
        assertArrayEquals(p2.toFloatArray(), p1.toFloatArray());
        assertFalse(Arrays.equals(p1.toFloatArray(), optimizerRun(g, 1f)), "the factor must change the update");
        assertArrayEquals(g.toFloatArray(), p1.grad().toFloatArray(), "the stored gradient is left as it is");
    }

    private static float[] optimizerRun(Tensor g, float scale) {
        Rng rng = new Rng(5);
        Tensor p = Tensor.randn(rng, 1.0, 1037);
        AdamW opt = optimizer(p, g.copy());
        for (int step = 0; step < 3; step++) opt.step(1e-2, scale);
        return p.toFloatArray();
    }

    private static AdamW optimizer(Tensor p, Tensor grad) {
        p.requiresGrad(true);
        p.setGrad(grad);
        Map<String, Tensor> params = new LinkedHashMap<>();
        params.put("w", p);
        return new AdamW(params, Set.of(), 0.9, 0.95, 1e-8, 0.1);
    }
}
