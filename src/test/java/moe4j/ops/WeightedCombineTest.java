package moe4j.ops;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import moe4j.autograd.Autograd;
import moe4j.tensor.Rng;
import moe4j.tensor.ScopePerTest;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * {@link Ops#weightedCombine} against the composition it stands for in a training step (gather each row's
 * weight, scale the rows, index-add them into zeros): the same bits forward and in both gradients, on
 * routings with dropped entries and tokens of no row; and gradients only for the inputs that want one.
 * The float64 reference and finite differences are in {@link OpsTest}'s table.
 */
@ExtendWith(ScopePerTest.class)
class WeightedCombineTest {

    /** A routing of T tokens × K slots over E experts, entries dropped with probability 0.2, every slot of token 1 dropped. */
    record Case(int tokens, int k, int width, int[] entryOfRow) {
        int[] tokenOfRow() {
            int[] t = new int[entryOfRow.length];
            for (int i = 0; i < t.length; i++) t[i] = entryOfRow[i] / k;
            return t;
        }
    }

    static Case routing(Rng rng, int tokens, int k, int experts, int width) {
        List<List<Integer>> byExpert = new ArrayList<>();
        for (int e = 0; e < experts; e++) byExpert.add(new ArrayList<>());
        for (int entry = 0; entry < tokens * k; entry++) {
            if (entry / k == 1 || rng.nextDouble() < 0.2) continue;
            byExpert.get(rng.nextInt(experts)).add(entry); // entries in ascending order within an expert, as a stable sort leaves them
        }
        int[] rows = byExpert.stream().flatMap(List::stream).mapToInt(Integer::intValue).toArray();
        return new Case(tokens, k, width, rows);
    }

    /** Rows with exact zeros of both signs among them (a −0 product must come out as the old code's sum). */
    static Tensor rowsWithSignedZeros(Rng rng, int rows, int width) {
        Tensor x = Tensor.randn(rng, 1.0, rows, width);
        for (long i = 0; i < x.numel(); i += 7) x.set(i, i % 2 == 0 ? -0f : 0f);
        return x.requiresGrad(true);
    }

    static Tensor ints(int[] v) {
        return Tensor.ofInts(v, v.length);
    }

    /** The combine as the gather of each row's weight, the scaling of the rows and their index-add into zeros. */
    static Tensor composed(Tensor rows, Tensor weights, Case c) {
        Tensor rowWeights = Ops.indexSelect(Ops.reshape(weights, -1, 1), ints(c.entryOfRow()));
        return Ops.indexAdd(c.tokens(), ints(c.tokenOfRow()), Ops.mulRows(rows, rowWeights));
    }

    static void assertSameBits(Tensor expected, Tensor actual, String what) {
        assertArrayEquals(expected.shape(), actual.shape(), what + ": shape");
        float[] e = expected.toFloatArray();
        float[] a = actual.toFloatArray();
        for (int i = 0; i < e.length; i++) {
            assertEquals(Float.floatToRawIntBits(e[i]), Float.floatToRawIntBits(a[i]), what + ": element " + i + " (" + e[i] + " vs " + a[i] + ")");
        }
    }

    @Test
    void isTheBitsOfScalingAndIndexAddingForwardAndBackward() {
        Rng rng = new Rng(2026);
        // widths: one under a vector, one with a vector body and a tail; K = 1 and K = 8
        for (int[] shape : new int[][] {{13, 1, 4, 5}, {37, 4, 6, 53}, {20, 8, 16, 32}}) {
            Case c = routing(rng, shape[0], shape[1], shape[2], shape[3]);
            assertTrue(c.entryOfRow().length < c.tokens() * c.k(), "some entries are dropped");
            Tensor rows = rowsWithSignedZeros(rng, c.entryOfRow().length, c.width());
            Tensor weights = Tensor.randn(rng, 1.0, c.tokens(), c.k()).requiresGrad(true);
            Tensor seed = Tensor.randn(rng, 1.0, c.tokens(), c.width());
            String what = "T=" + c.tokens() + " K=" + c.k() + " D=" + c.width();

            Tensor want = composed(rows, weights, c);
            Autograd.backward(want, seed);
            Tensor wantRows = rows.grad().copy();
            Tensor wantWeights = weights.grad().copy();
            rows.zeroGrad();
            weights.zeroGrad();

            Tensor got = Ops.weightedCombine(rows, weights, ints(c.entryOfRow()));
            assertSameBits(want, got, what + " forward");
            Autograd.backward(got, seed);
            assertSameBits(wantRows, rows.grad(), what + " gradient of the rows");
            assertSameBits(wantWeights, weights.grad(), what + " gradient of the weights");
            for (int d = 0; d < c.width(); d++) assertEquals(0f, got.get(c.width() + d), what + ": token 1 has no row");
        }
    }

    @ParameterizedTest(name = "rows want a gradient: {0}")
    @ValueSource(booleans = {true, false})
    void computesOnlyTheGradientsThatAreWanted(boolean rowsWantOne) {
        Rng rng = new Rng(5);
        Case c = routing(rng, 9, 2, 3, 6);
        Tensor seed = Tensor.randn(rng, 1.0, c.tokens(), c.width());
        Tensor rows = Tensor.randn(rng, 1.0, c.entryOfRow().length, c.width()).requiresGrad(rowsWantOne);
        Tensor weights = Tensor.randn(rng, 1.0, c.tokens(), c.k()).requiresGrad(!rowsWantOne);
        Tensor wanting = rowsWantOne ? rows : weights;
        Tensor notWanting = rowsWantOne ? weights : rows;

        Autograd.backward(Ops.weightedCombine(rows, weights, ints(c.entryOfRow())), seed);
        assertNull(notWanting.grad(), "an input that wants no gradient gets none");
        Tensor got = wanting.grad().copy();
        wanting.zeroGrad();
        Autograd.backward(composed(rows, weights, c), seed);
        assertSameBits(wanting.grad(), got, "the gradient alone");
    }

    @Test
    void noRowsAtAllGiveZerosAndZeroWeightGradients() {
        Tensor rows = Tensor.zeros(0, 4).requiresGrad(true);
        Tensor weights = Tensor.of(new float[] {0.5f, 0.25f, 2f, 1f}, 2, 2).requiresGrad(true);
        Tensor out = Ops.weightedCombine(rows, weights, Tensor.ofInts(new int[0], 0));
        assertArrayEquals(new float[8], out.toFloatArray());
        Autograd.backward(Ops.sum(out));
        assertArrayEquals(new float[4], weights.grad().toFloatArray());
    }
}
