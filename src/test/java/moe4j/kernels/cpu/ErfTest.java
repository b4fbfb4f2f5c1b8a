package moe4j.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class ErfTest {
    /** erf by composite Simpson integration of 2/√π·e^(−t²) over [0, x] (independent of Erf's series). */
    static double erfByIntegration(double x) {
        int steps = 4000;
        double h = x / steps;
        double s = 1 + Math.exp(-x * x);
        for (int i = 1; i < steps; i++) {
            double t = i * h;
            s += (i % 2 == 1 ? 4 : 2) * Math.exp(-t * t);
        }
        return 2 / Math.sqrt(Math.PI) * s * h / 3;
    }

    @Test
    void erfMatchesIndependentIntegrationOverItsWholeRange() {
        for (double x = -6; x <= 6; x += 0.0625) {
            assertEquals(erfByIntegration(x), Erf.erf(x), 1e-13, "erf(" + x + ")");
        }
        assertEquals(1.0, Erf.erf(30));
        assertEquals(-1.0, Erf.erf(Double.NEGATIVE_INFINITY));
        assertTrue(Double.isNaN(Erf.erf(Double.NaN)));
    }
}
