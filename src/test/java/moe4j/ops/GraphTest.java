package moe4j.ops;

import static org.junit.jupiter.api.Assertions.*;

import java.util.List;
import moe4j.autograd.Autograd;
import moe4j.autograd.GradCheck;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.ScopePerTest;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** How ops compose into graphs: sharing, depth, accumulation, recording switched off. */
@ExtendWith(ScopePerTest.class)
class GraphTest {

    @Test
    void diamondSumsBothPaths() {
        Tensor x = Tensor.of(new float[] {0.5f, -2f}, 2).requiresGrad(true);
        Tensor h = Ops.square(x); // used twice below
        Tensor loss = Ops.sum(Ops.add(Ops.scale(h, 3), Ops.mul(h, x))); // 3x² + x³ → 6x + 3x²
        Autograd.backward(loss);
        assertArrayEquals(new float[] {6 * 0.5f + 3 * 0.25f, -12f + 12f}, x.grad().toFloatArray(), 1e-6f);
    }

    @Test
    void deepChainDoesNotOverflowTheStack() {
        Tensor x = Tensor.of(new float[] {1f}, 1).requiresGrad(true);
        Tensor y = x;
        for (int i = 0; i < 20_000; i++) y = Ops.addScalar(y, 1e-4);
        Autograd.backward(Ops.sum(y));
        assertEquals(1f, x.grad().get(0));
    }

    @Test
    void secondBackwardAccumulatesIntoLeafGradients() {
        Tensor x = Tensor.of(new float[] {1, 2, 3}, 3).requiresGrad(true);
        Autograd.backward(Ops.sum(Ops.scale(x, 2)));
        Autograd.backward(Ops.sum(Ops.scale(x, 5)));
        assertArrayEquals(new float[] {7, 7, 7}, x.grad().toFloatArray());
    }

    @Test
    void explicitSeedIsTheOutputGradient() {
        Tensor x = Tensor.of(new float[] {1, 2, 3, 4}, 2, 2).requiresGrad(true);
        Tensor y = Ops.scale(x, -1);
        Autograd.backward(y, Tensor.of(new float[] {1, 10, 100, 1000}, 2, 2));
        assertArrayEquals(new float[] {-1, -10, -100, -1000}, x.grad().toFloatArray());
    }

    @Test
    void gradientsOfLeavesOutliveTheStepScope() {
        Tensor w = MemoryScope.persistent(() -> Tensor.of(new float[] {1, 2}, 2)).requiresGrad(true);
        try (MemoryScope step = MemoryScope.open()) {
            Autograd.backward(Ops.sum(Ops.square(w)));
        }
        assertArrayEquals(new float[] {2, 4}, w.grad().toFloatArray());
    }

    @Test
    void inputsThatNeedNoGradientGetNone() {
        Tensor x = Tensor.of(new float[] {1, 2}, 2).requiresGrad(true);
        Tensor c = Tensor.of(new float[] {3, 4}, 2);
        Autograd.backward(Ops.sum(Ops.mul(x, c)));
        assertNull(c.grad());
        assertArrayEquals(new float[] {3, 4}, x.grad().toFloatArray());
    }

    @Test
    void noGradNestsAndRestoresAfterAnException() throws Exception {
        Tensor x = Tensor.of(new float[] {1}, 1).requiresGrad(true);
        try (AutoCloseable outer = Autograd.noGrad()) {
            try (AutoCloseable inner = Autograd.noGrad()) {
                assertFalse(Autograd.isGradEnabled());
            }
            assertFalse(Autograd.isGradEnabled(), "still inside the outer noGrad");
            assertTrue(Ops.relu(x).isLeaf());
        }
        assertTrue(Autograd.isGradEnabled());
        assertThrows(IllegalStateException.class, () -> Autograd.noGrad(() -> {
            throw new IllegalStateException("boom");
        }));
        assertTrue(Autograd.isGradEnabled(), "an exception inside noGrad(body) restores recording");
    }

    @Test
    void splitThenConcatIsTheIdentityForGradients() {
        Tensor x = Tensor.of(new float[] {1, 2, 3, 4, 5, 6}, 3, 2).requiresGrad(true);
        List<Tensor> parts = Ops.splitRows(x, 1, 2);
        Tensor back = Ops.concatRows(parts);
        assertArrayEquals(x.toFloatArray(), back.toFloatArray());
        Autograd.backward(back, Tensor.of(new float[] {1, 2, 3, 4, 5, 6}, 3, 2));
        assertArrayEquals(new float[] {1, 2, 3, 4, 5, 6}, x.grad().toFloatArray());
    }

    @Test
    void gradCheckCatchesAWrongBackwardRule() {
        Tensor x = Tensor.of(new float[] {0.3f, -1.2f, 2f}, 3).requiresGrad(true);
        // square with the rule of x ↦ x² but a gradient of x instead of 2x
        GradCheck.Result wrong = GradCheck.check(in -> {
            Tensor a = in.get(0);
            Tensor out = Autograd.noGrad(() -> Ops.square(a));
            return Autograd.record(out, "wrongSquare", new Tensor[] {a}, g -> new Tensor[] {Ops.mul(g, a)});
        }, List.of(x), 1e-2, 3);
        assertTrue(wrong.maxRelativeError() > 0.4, "error " + wrong.maxRelativeError());
        GradCheck.Result right = GradCheck.check(in -> Ops.square(in.get(0)), List.of(x), 1e-2, 3);
        assertTrue(right.maxRelativeError() < 1e-3, "error " + right.maxRelativeError());
    }

    @Test
    void emptyDimensionsGiveEmptyOrZeroResults() {
        Tensor a = Tensor.zeros(3, 0).requiresGrad(true);
        Tensor b = Tensor.zeros(0, 2).requiresGrad(true);
        Tensor c = Ops.matmul(a, b);
        assertArrayEquals(new int[] {3, 2}, c.shape());
        assertArrayEquals(new float[6], c.toFloatArray());
        Autograd.backward(Ops.sum(c));
        assertEquals(0, a.grad().numel());
        assertArrayEquals(new int[] {0, 2}, Ops.indexSelect(Tensor.zeros(4, 2), Tensor.ofInts(new int[0], 0)).shape());
    }

    @Test
    void softmaxOfMaskedEntriesIsZero() {
        float ninf = Float.NEGATIVE_INFINITY;
        Tensor a = Tensor.of(new float[] {0, ninf, 0, ninf}, 1, 4);
        assertArrayEquals(new float[] {0.5f, 0, 0.5f, 0}, Ops.softmax(a).toFloatArray());
        assertEquals((float) Math.log(2), Ops.logSumExp(a).get(0), 1e-7f);
        assertArrayEquals(new int[] {}, Ops.logSumExp(Tensor.zeros(5)).shape(), "a vector reduces to a scalar");
    }
}
