package moe4j.autograd;

import static org.junit.jupiter.api.Assertions.*;

import java.util.List;
import moe4j.ops.Ops;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

class AutogradTest {
    @Test
    void matmulChainMatchesFiniteDifferences() {
        Rng rng = new Rng(1);
        Tensor a = Tensor.randn(rng, 1, 3, 4).requiresGrad(true);
        Tensor b = Tensor.randn(rng, 1, 5, 4).requiresGrad(true);
        var res = GradCheck.check(in -> Ops.silu(Ops.matmul(in.get(0), false, in.get(1), true)), List.of(a, b), 1e-2, 7);
        assertTrue(res.maxRelativeError() < 1e-2, "relative error " + res.maxRelativeError());
    }

    @Test
    void sharedInputAccumulatesFromEveryUse() {
        Tensor x = Tensor.of(new float[] {1, 2, 3}, 3).requiresGrad(true);
        Tensor y = Ops.sum(Ops.add(Ops.mul(x, x), x)); // d/dx = 2x + 1
        Autograd.backward(y);
        assertArrayEquals(new float[] {3, 5, 7}, x.grad().toFloatArray());
    }

    @Test
    void everyReachableNodeRunsEvenWithoutGradient() {
        int[] calls = {0};
        Tensor x = Tensor.of(new float[] {1, 2}, 2).requiresGrad(true);
        Tensor side = Autograd.record(Tensor.zeros(2), "probe", new Tensor[] {x}, g -> {
            calls[0]++;
            return new Tensor[] {g};
        });
        // the probe's output reaches the loss only through a multiplication by a constant zero tensor
        Tensor loss = Ops.sum(Ops.add(Ops.mul(side, Tensor.zeros(2)), x));
        Autograd.backward(loss);
        assertEquals(1, calls[0]);
        assertArrayEquals(new float[] {1, 1}, x.grad().toFloatArray());
    }

    @Test
    void noGradRecordsNothing() throws Exception {
        Tensor x = Tensor.of(new float[] {1, 2}, 2).requiresGrad(true);
        try (var ignored = Autograd.noGrad()) {
            assertTrue(Ops.silu(x).isLeaf());
            assertFalse(Ops.silu(x).requiresGrad());
        }
        assertFalse(Ops.silu(x).isLeaf());
    }
}
