package moe4j.kernels.cpu;

/**
 * The error function in double precision, for the exact (erf-based) GELU. The JDK has none.
 * Small arguments use the Maclaurin series (fast convergence below 2.5); larger ones the continued
 * fraction of erfc, accurate to ~1e-15 in both regions.
 */
final class Erf {
    private Erf() {}

    static double erf(double x) {
        if (Double.isNaN(x)) return x;
        double ax = Math.abs(x);
        double r = ax < 2.5 ? series(ax) : 1 - erfcContinuedFraction(ax);
        return x < 0 ? -r : r;
    }

    /** erf(x) = 2/√π · Σ (−1)ⁿ x^(2n+1) / (n! (2n+1)). */
    private static double series(double x) {
        double x2 = x * x;
        double term = x;
        double sum = x;
        for (int n = 1; n < 100; n++) {
            term *= -x2 / n;
            double add = term / (2 * n + 1);
            sum += add;
            if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
        }
        return 2 / Math.sqrt(Math.PI) * sum;
    }

    /** erfc(x) = exp(−x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))), evaluated bottom-up (Lentz not needed for x ≥ 2.5). */
    private static double erfcContinuedFraction(double x) {
        if (x > 27) return 0;
        double f = x;
        for (int k = 60; k >= 1; k--) f = x + (k / 2.0) / f;
        return Math.exp(-x * x) / Math.sqrt(Math.PI) / f;
    }
}
