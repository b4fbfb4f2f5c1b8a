package moe4j.nn;

import java.math.BigDecimal;

/**
 * Typed values of configuration keys as a TOML reader hands them over (Long, Double, BigInteger,
 * BigDecimal, or a string): a fraction for an integer key and a value beyond the key's type are
 * errors that name the key, never silently rounded or wrapped.
 */
public final class ConfigValues {
    private ConfigValues() {}

    /** {@code v} as a long: an integer, or a number with no fractional part. */
    public static long toLong(String key, Object v) {
        BigDecimal d = decimal(key, v, "an integer");
        if (d.signum() != 0 && d.stripTrailingZeros().scale() > 0) {
            throw new IllegalArgumentException(key + " must be an integer, got " + v);
        }
        try {
            return d.longValueExact();
        } catch (ArithmeticException e) {
            throw new IllegalArgumentException(key + " = " + v + " is out of range: the largest value is " + Long.MAX_VALUE);
        }
    }

    /** {@code v} as an int (see {@link #toLong}). */
    public static int toInt(String key, Object v) {
        long l = toLong(key, v);
        if (l != (int) l) {
            throw new IllegalArgumentException(key + " = " + v + " is out of range: the largest value is " + Integer.MAX_VALUE);
        }
        return (int) l;
    }

    /** {@code v} as a double; TOML's inf and nan are allowed here, the config's checks decide on them. */
    public static double toDouble(String key, Object v) {
        if (v instanceof Number n) return n.doubleValue();
        try {
            return Double.parseDouble(v.toString().trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(key + " must be a number, got '" + v + "'");
        }
    }

    private static BigDecimal decimal(String key, Object v, String expected) {
        if (v instanceof Double || v instanceof Float) {
            double d = ((Number) v).doubleValue();
            if (!Double.isFinite(d)) throw new IllegalArgumentException(key + " must be " + expected + ", got " + v);
            return new BigDecimal(d);
        }
        try {
            return new BigDecimal(v.toString().trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(key + " must be " + expected + ", got '" + v + "'");
        }
    }
}
