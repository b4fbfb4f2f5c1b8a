package moe4j.kernels.cpu;

import static org.junit.jupiter.api.Assertions.*;

import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

/** Prefix softmax and its backward against float64 loops, for every prefix length (vector body and tail), 1e-6 absolute. */
class SoftmaxRowsTest {
    @Test
    void prefixSoftmaxAndBackwardMatchFloat64() {
        int width = 37;
        for (int valid = 1; valid <= width; valid++) {
            Tensor x = Tensor.randn(new Rng(valid), 3.0, width + 2);
            Tensor d = Tensor.randn(new Rng(100 + valid), 1.0, width + 2);
            double[] xd = x.toDoubleArray();
            double[] dd = d.toDoubleArray();
            SoftmaxRows.softmaxPrefix(x.data(), 1, valid, width);
            double max = Double.NEGATIVE_INFINITY;
            for (int j = 0; j < valid; j++) max = Math.max(max, xd[1 + j]);
            double z = 0;
            for (int j = 0; j < valid; j++) z += Math.exp(xd[1 + j] - max);
            double[] p = new double[width];
            for (int j = 0; j < valid; j++) p[j] = Math.exp(xd[1 + j] - max) / z;
            for (int j = 0; j < width; j++) assertEquals(p[j], x.get(1 + j), 1e-6, "valid " + valid + " p[" + j + "]");
            assertEquals(xd[0], x.get(0), 0.0, "element before the row untouched");
            assertEquals(xd[width + 1], x.get(width + 1), 0.0, "element after the row untouched");

            SoftmaxRows.softmaxPrefixBackward(x.data(), 1, d.data(), 1, valid, width);
            double dot = 0;
            for (int j = 0; j < valid; j++) dot += x.get(1 + j) * dd[1 + j];
            for (int j = 0; j < width; j++) {
                double expected = j < valid ? x.get(1 + j) * (dd[1 + j] - dot) : 0;
                assertEquals(expected, d.get(1 + j), 1e-6, "valid " + valid + " dS[" + j + "]");
            }
            assertEquals(dd[width + 1], d.get(width + 1), 0.0);
        }
    }
}
