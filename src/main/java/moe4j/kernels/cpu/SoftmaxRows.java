package moe4j.kernels.cpu;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vectorised softmax over a prefix of one float32 row, and its backward: the inner loops of causal
 * attention, where row i of an S × S score matrix holds i + 1 valid entries and zeros after them.
 * Offsets and lengths are in elements.
 */
public final class SoftmaxRows {
    private SoftmaxRows() {}

    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final int L = S.length();
    private static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;
    private static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT;

    private static FloatVector load(MemorySegment m, long i) {
        return FloatVector.fromMemorySegment(S, m, i * 4, LE);
    }

    /** Row[0, valid) ← softmax of itself; row[valid, width) ← 0. */
    public static void softmaxPrefix(MemorySegment m, long off, int valid, int width) {
        int bound = valid - valid % L;
        float max = Float.NEGATIVE_INFINITY;
        if (bound > 0) {
            FloatVector vmax = FloatVector.broadcast(S, Float.NEGATIVE_INFINITY);
            for (int j = 0; j < bound; j += L) vmax = vmax.max(load(m, off + j));
            max = vmax.reduceLanes(VectorOperators.MAX);
        }
        for (int j = bound; j < valid; j++) max = Math.max(max, m.getAtIndex(F, off + j));
        FloatVector vsum = FloatVector.zero(S);
        FloatVector shift = FloatVector.broadcast(S, max);
        for (int j = 0; j < bound; j += L) {
            FloatVector e = load(m, off + j).sub(shift);
            e = Elementwise.exp(e);
            e.intoMemorySegment(m, (off + j) * 4, LE);
            vsum = vsum.add(e);
        }
        double sum = Elementwise.sumLanes(vsum);
        for (int j = bound; j < valid; j++) {
            float e = (float) Math.exp(m.getAtIndex(F, off + j) - max);
            m.setAtIndex(F, off + j, e);
            sum += e;
        }
        float inv = (float) (1 / sum);
        for (int j = 0; j < bound; j += L) load(m, off + j).mul(inv).intoMemorySegment(m, (off + j) * 4, LE);
        for (int j = bound; j < valid; j++) m.setAtIndex(F, off + j, m.getAtIndex(F, off + j) * inv);
        if (width > valid) m.asSlice((off + valid) * 4, (long) (width - valid) * 4).fill((byte) 0);
    }

    /**
     * Softmax backward on a row prefix, in place on the upstream gradient:
     * {@code d[j] ← p[j]·(d[j] − Σ_l p[l]·d[l])} for j < valid, and d[valid, width) ← 0.
     */
    public static void softmaxPrefixBackward(MemorySegment p, long pOff, MemorySegment d, long dOff, int valid, int width) {
        int bound = valid - valid % L;
        FloatVector vdot = FloatVector.zero(S);
        for (int j = 0; j < bound; j += L) vdot = load(p, pOff + j).fma(load(d, dOff + j), vdot);
        double dot = Elementwise.sumLanes(vdot);
        for (int j = bound; j < valid; j++) dot += (double) p.getAtIndex(F, pOff + j) * d.getAtIndex(F, dOff + j);
        float c = (float) dot;
        for (int j = 0; j < bound; j += L) {
            load(p, pOff + j).mul(load(d, dOff + j).sub(c)).intoMemorySegment(d, (dOff + j) * 4, LE);
        }
        for (int j = bound; j < valid; j++) {
            d.setAtIndex(F, dOff + j, p.getAtIndex(F, pOff + j) * (d.getAtIndex(F, dOff + j) - c));
        }
        if (width > valid) d.asSlice((dOff + valid) * 4, (long) (width - valid) * 4).fill((byte) 0);
    }
}
