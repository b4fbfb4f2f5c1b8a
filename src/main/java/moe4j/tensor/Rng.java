package moe4j.tensor;

/**
 * A small seeded generator (SplitMix64) whose sequence is fixed by this code alone, not by the JDK, so
 * that every initialisation and every synthetic data set is reproducible bit for bit.
 */
public final class Rng {
    private long state;

    public Rng(long seed) {
        this.state = seed;
    }

    /** An independent generator for stream {@code id} of this seed, e.g. one per expert or per rank. */
    public static Rng forStream(long seed, long id) {
        Rng r = new Rng(seed ^ mix(id * 0x9E3779B97F4A7C15L + 0x632BE59BD9B4E019L));
        r.nextLong();
        return r;
    }

    public long state() {
        return state;
    }

    /** Restores a {@link #state()}: the sequence continues exactly as it would have (checkpoint resume). */
    public void setState(long state) {
        this.state = state;
    }

    public long nextLong() {
        state += 0x9E3779B97F4A7C15L;
        return mix(state);
    }

    private static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** Uniform in [0, 1). */
    public double nextDouble() {
        return (nextLong() >>> 11) * 0x1.0p-53;
    }

    /** Uniform in [0, bound). */
    public int nextInt(int bound) {
        if (bound <= 0) throw new IllegalArgumentException("bound must be > 0, got " + bound);
        return (int) ((nextLong() >>> 33) % bound);
    }

    /**
     * Standard normal (Box-Muller). The second value of each pair is deliberately not cached, so that
     * {@link #state()} alone captures the generator and a resumed run continues bit for bit.
     */
    public double nextGaussian() {
        double u1 = nextDouble();
        double u2 = nextDouble();
        if (u1 < 1e-300) u1 = 1e-300;
        return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    }
}
