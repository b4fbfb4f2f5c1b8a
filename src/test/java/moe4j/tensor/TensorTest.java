package moe4j.tensor;

import static org.junit.jupiter.api.Assertions.*;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

@ExtendWith(ScopePerTest.class)
class TensorTest {

    static Tensor iota(int... shape) {
        Tensor t = Tensor.zeros(shape);
        for (long i = 0; i < t.numel(); i++) t.set(i, i);
        return t;
    }

    @Test
    void viewInfersMinusOneAndSharesStorage() {
        Tensor t = iota(4, 6);
        Tensor v = t.view(3, -1);
        assertArrayEquals(new int[] {3, 8}, v.shape());
        assertEquals(8, v.rowWidth());
        assertEquals(9f, v.get(1, 1));
        v.set(1, 1, -1f);
        assertEquals(-1f, t.get(1, 3), "a write through the view reaches the original");
        assertArrayEquals(new int[] {24}, t.view(-1).shape());
        assertArrayEquals(new int[] {2, 3, 4}, t.view(2, -1, 4).shape());
        assertArrayEquals(new int[] {}, Tensor.zeros(1).view().shape());
    }

    @Test
    void viewRefusesImpossibleShapes() {
        Tensor t = iota(4, 6);
        var e = assertThrows(IllegalArgumentException.class, () -> t.view(-1, -1));
        assertTrue(e.getMessage().contains("view") && e.getMessage().contains("[-1, -1]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> t.view(5, -1));
        assertTrue(e.getMessage().contains("[5, -1]") && e.getMessage().contains("[4, 6]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> t.view(5, 5));
        assertTrue(e.getMessage().contains("[5, 5]") && e.getMessage().contains("24"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> t.view(0, -1));
        assertTrue(e.getMessage().contains("[0, -1]"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> t.view(-2, -12));
    }

    @Test
    void rowsAreViewsOfTheirRange() {
        Tensor t = iota(5, 2, 3);
        Tensor r = t.rows(1, 4);
        assertArrayEquals(new int[] {3, 2, 3}, r.shape());
        assertEquals(6f, r.get(0));
        assertEquals(6, r.rowWidth());
        r.set(0, 100f);
        assertEquals(100f, t.get(6), "rows share storage");
        Tensor inner = r.rows(2, 3);
        assertEquals(18f, inner.get(0));
        assertEquals(0, t.rows(5, 5).numel());
        assertArrayEquals(new float[] {12, 13, 14, 15, 16, 17}, t.rows(1, 4).view(3, 6).rows(1, 2).toFloatArray());
    }

    @Test
    void rowsRefusesRangesOutsideTheTensor() {
        Tensor t = iota(5, 2);
        for (int[] bad : new int[][] {{-1, 2}, {2, 6}, {3, 2}}) {
            var e = assertThrows(IllegalArgumentException.class, () -> t.rows(bad[0], bad[1]));
            assertTrue(e.getMessage().contains("rows") && e.getMessage().contains("[" + bad[0] + ", " + bad[1] + ")")
                    && e.getMessage().contains("[5, 2]"), e.getMessage());
        }
        assertThrows(IllegalArgumentException.class, () -> Tensor.scalar(1f).rows(0, 1));
    }

    @Test
    void copyAndDetach() {
        Tensor t = iota(2, 3).requiresGrad(true);
        Tensor c = t.copy();
        Tensor d = t.detach();
        t.set(0, 42f);
        assertEquals(0f, c.get(0), "a copy owns its storage");
        assertEquals(42f, d.get(0), "detach shares storage");
        assertFalse(d.requiresGrad());
        assertFalse(c.requiresGrad());
        var e = assertThrows(IllegalArgumentException.class, () -> c.copyFrom(iota(3, 3)));
        assertTrue(e.getMessage().contains("copyFrom") && e.getMessage().contains("[3, 3]"), e.getMessage());
    }

    @Test
    void creationChecksValueCountsAndShapes() {
        var e = assertThrows(IllegalArgumentException.class, () -> Tensor.of(new float[7], 2, 3));
        assertTrue(e.getMessage().contains("7") && e.getMessage().contains("[2, 3]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Tensor.ofInts(new int[5], 2, 3));
        assertTrue(e.getMessage().contains("5") && e.getMessage().contains("[2, 3]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Tensor.zeros(2, -3));
        assertTrue(e.getMessage().contains("[2, -3]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Tensor.zeros(1 << 30, 1 << 30, 1 << 30));
        assertTrue(e.getMessage().contains("[1073741824, 1073741824, 1073741824]"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Tensor.zeros(DType.I32, 2).requiresGrad(true));
        assertThrows(IllegalArgumentException.class, () -> Tensor.zeros(DType.I32, 2).toFloatArray());
        assertThrows(IllegalArgumentException.class, () -> Tensor.zeros(2, 2).item());
    }

    @Test
    void elementAccessAndShapeQueries() {
        Tensor t = iota(2, 3, 4);
        assertEquals(3, t.rank());
        assertEquals(24, t.numel());
        assertEquals(4, t.dim(-1));
        assertEquals(2, t.rowCount());
        assertEquals(12, t.rowWidth());
        assertEquals(13f, t.get(1, 1));
        Tensor s = Tensor.scalar(2.5f);
        assertEquals(0, s.rank());
        assertEquals(1, s.rowCount());
        assertEquals(2.5f, s.item());
        Tensor ints = Tensor.ofInts(new int[] {4, -2}, 2);
        assertEquals(-2, ints.getInt(1));
        assertArrayEquals(new int[] {4, -2}, ints.toIntArray());
    }

    @Test
    void randomTensorsAreReproducible() {
        Tensor a = Tensor.randn(new Rng(5), 0.5, 3, 7);
        Tensor b = Tensor.randn(new Rng(5), 0.5, 3, 7);
        Tensor c = Tensor.randn(new Rng(6), 0.5, 3, 7);
        assertArrayEquals(a.toFloatArray(), b.toFloatArray());
        assertFalse(java.util.Arrays.equals(a.toFloatArray(), c.toFloatArray()));
        Tensor u = Tensor.rand(new Rng(5), -2, 3, 1000);
        for (float v : u.toFloatArray()) assertTrue(v >= -2 && v < 3, "uniform value " + v);
    }

    @Test
    void aReleasableTensorGivesItsMemoryBackAndTakesFreshMemoryKeepingItsIdentity() {
        Tensor t = Tensor.releasable(Device.CPU, 2, 3);
        assertFalse(t.hasStorage());
        assertArrayEquals(new int[] {2, 3}, t.shape());
        assertThrows(IllegalStateException.class, t::toFloatArray);
        t.allocateStorage();
        assertArrayEquals(new float[6], t.toFloatArray());
        t.copyFrom(Tensor.of(new float[] {1, 2, 3, 4, 5, 6}, 2, 3));
        Tensor earlierView = t.rows(1, 2);
        assertEquals(4f, earlierView.get(0));
        t.releaseStorage();
        // every way to the old memory fails: the tensor, a view taken before, a copy into it
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> t.get(0));
        assertTrue(e.getMessage().contains("released"), e.getMessage());
        assertThrows(IllegalStateException.class, () -> earlierView.get(0));
        assertThrows(IllegalStateException.class, () -> t.copyFrom(Tensor.zeros(2, 3)));
        assertThrows(IllegalStateException.class, () -> t.view(6));
        t.allocateStorage();
        assertArrayEquals(new float[6], t.toFloatArray(), "fresh memory is zeroed");
        assertThrows(IllegalStateException.class, t::allocateStorage);
        assertThrows(IllegalStateException.class, () -> Tensor.zeros(2).releaseStorage());
    }
}
