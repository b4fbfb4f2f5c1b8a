package moe4j.kernels.cpu;

import java.util.Locale;

/**
 * The choices {@link GemmBlocked} makes per CPU: the register tile of the micro-kernel and the cache
 * blocking around it. They come from what {@link CpuFacts} detects, never from timing, so one machine
 * always makes the same choice and a run's bits do not depend on how busy the machine was when it started.
 * {@code -Dmoe4j.gemm.tile=8x3|12x2} overrides the tile (for measuring one against the other).
 *
 * @param tile           the register tile
 * @param kc             reduction slab: the MR×KC A micro-panel stays in L1 while B panels stream past it
 * @param mc             row slab of packed A, a whole number of MR strips
 * @param nc             column slab: the packed KC×NC block of B, sized to three quarters of the L2 cache
 * @param directBMaxRows products with at most this many rows read an untransposed B in place instead of
 *                       packing it: 320 with the 8x3 tile (measured on AMD Zen 4, M×1024·1024×2816: 1.4x
 *                       faster at 16–32 rows, about 10% at 128–256; at 512 rows packing wins again), 0 (never)
 *                       with the 12x2 tile (measured on Intel Ice Lake: grouped forward 0.56 of OpenBLAS in
 *                       place, 0.84–0.93 packed)
 * @param why            how the tile was chosen, for reports
 */
public record GemmTuning(Tile tile, int kc, int mc, int nc, int directBMaxRows, String why) {

    /** A register tile: MR rows of C by a number of whole vectors of columns. */
    public enum Tile {
        ROWS8_BY_3_VECTORS(8, 3, "8x3"),
        ROWS12_BY_2_VECTORS(12, 2, "12x2");

        final int mr, vectors;
        private final String label;

        Tile(int mr, int vectors, String label) {
            this.mr = mr;
            this.vectors = vectors;
            this.label = label;
        }

        /** "8x3": rows × vectors. */
        public String label() {
            return label;
        }

        static Tile byLabel(String label) {
            for (Tile t : values()) if (t.label.equals(label)) return t;
            throw new IllegalArgumentException("moe4j.gemm.tile is '" + label + "', expected 8x3 or 12x2");
        }
    }

    /** The reduction slab of every tuning: K splits at the same places everywhere. */
    static final int KC = 256;
    /** Assumed when the L2 size cannot be read: the smallest of the machines measured. */
    private static final long DEFAULT_L2 = 1 << 20;

    /** The tuning for this machine (the override property first). */
    static GemmTuning forThisMachine() {
        String override = System.getProperty("moe4j.gemm.tile");
        CpuFacts cpu = CpuFacts.thisMachine();
        if (override != null) return of(Tile.byLabel(override), cpu.l2Bytes(), "set by -Dmoe4j.gemm.tile");
        return forCpu(cpu, GemmBlocked.L);
    }

    /** The tuning detected facts call for, with {@code lanes} floats per vector. */
    static GemmTuning forCpu(CpuFacts cpu, int lanes) {
        if (lanes < 16) {
            return of(Tile.ROWS8_BY_3_VECTORS, cpu.l2Bytes(), lanes + "-lane vectors: the long-standing tile");
        }
        if (cpu.isAmd() && cpu.family() == 25) {
            // Zen 4 issues one 512-bit FMA per cycle (two 256-bit halves): the 8x3 tile's one spilled
            // accumulator hides behind the FMAs, and 8x3 is the tile measured best there
            return of(Tile.ROWS8_BY_3_VECTORS, cpu.l2Bytes(), "AMD family 25 (Zen 4): 512-bit FMA on 256-bit units");
        }
        // two 512-bit FMAs per cycle (Intel with AVX-512, AMD Zen 5): the tile with no spilled accumulator
        // (measured on Intel Ice Lake; Zen 5 by the same reasoning, not measured)
        return of(Tile.ROWS12_BY_2_VECTORS, cpu.l2Bytes(),
                (cpu.vendor().isEmpty() ? "unknown CPU" : cpu.vendor() + " family " + cpu.family())
                        + ": full-width 512-bit FMA, a tile with no spilled accumulator");
    }

    /** The blocking for {@code tile} on a core with {@code l2Bytes} of L2 (0: unknown). */
    static GemmTuning of(Tile tile, long l2Bytes, String why) {
        int nr = tile.vectors * GemmBlocked.L;
        // at least 512 rows in whole strips: a 512-row product (the expert shapes) is one row block
        int mc = tile.mr * ((512 + tile.mr - 1) / tile.mr);
        long l2 = l2Bytes > 0 ? l2Bytes : DEFAULT_L2;
        long stripBytes = (long) KC * nr * Float.BYTES;
        int strips = (int) Math.clamp(l2 * 3 / 4 / stripBytes, 4, 64);
        // reading B in place pays only with the 8x3 tile (see MicroKernels)
        int directBMaxRows = tile == Tile.ROWS8_BY_3_VECTORS ? Math.min(320, mc) : 0;
        return new GemmTuning(tile, KC, mc, strips * nr, directBMaxRows, why);
    }

    public int mr() {
        return tile.mr;
    }

    public int nr() {
        return tile.vectors * GemmBlocked.L;
    }

    /** One line for reports. */
    public String describe() {
        return String.format(Locale.ROOT, "tile %s (%d×%d), KC %d, MC %d, NC %d; %s", tile.label, mr(), nr(), kc, mc, nc, why);
    }
}
