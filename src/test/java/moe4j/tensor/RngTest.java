package moe4j.tensor;

import static org.junit.jupiter.api.Assertions.*;

import org.junit.jupiter.api.Test;

class RngTest {
    @Test
    void followsPublishedSplitMix64() {
        // SplitMix64 from seed 0: the first outputs of the reference implementation
        Rng r = new Rng(0);
        assertEquals(0xE220A8397B1DCDAFL, r.nextLong());
        assertEquals(0x6E789E6AA1B965F4L, r.nextLong());
        assertEquals(0x06C45D188009454FL, r.nextLong());
    }

    @Test
    void sameSeedSameSequence() {
        Rng a = new Rng(42);
        Rng b = new Rng(42);
        for (int i = 0; i < 1000; i++) {
            assertEquals(a.nextLong(), b.nextLong());
            assertEquals(a.nextDouble(), b.nextDouble());
            assertEquals(a.nextGaussian(), b.nextGaussian());
            assertEquals(a.nextInt(17), b.nextInt(17));
        }
        assertNotEquals(new Rng(42).nextLong(), new Rng(43).nextLong());
    }

    @Test
    void setStateReplaysTheSequence() {
        Rng r = new Rng(9);
        r.nextGaussian();
        r.nextGaussian(); // no spare Gaussian pending: state() is then the whole state
        long saved = r.state();
        double[] first = {r.nextGaussian(), r.nextGaussian(), r.nextDouble()};
        r.setState(saved);
        assertArrayEquals(first, new double[] {r.nextGaussian(), r.nextGaussian(), r.nextDouble()});
    }

    @Test
    void setStateDropsAPendingSpareGaussian() {
        Rng r = new Rng(9);
        r.nextGaussian(); // leaves the second value of the pair pending
        long saved = r.state();
        Rng fresh = new Rng(0);
        fresh.setState(saved);
        r.setState(saved);
        assertEquals(fresh.nextGaussian(), r.nextGaussian());
    }

    @Test
    void streamsAreReproducibleAndDistinct() {
        assertEquals(Rng.forStream(7, 3).nextLong(), Rng.forStream(7, 3).nextLong());
        assertNotEquals(Rng.forStream(7, 3).nextLong(), Rng.forStream(7, 4).nextLong());
        assertNotEquals(Rng.forStream(7, 3).nextLong(), Rng.forStream(8, 3).nextLong());
    }

    @Test
    void distributionsHaveTheirRangeAndMoments() {
        Rng r = new Rng(1);
        int n = 50000;
        double sum = 0;
        double sumSq = 0;
        int[] counts = new int[5];
        for (int i = 0; i < n; i++) {
            double u = r.nextDouble();
            assertTrue(u >= 0 && u < 1);
            counts[r.nextInt(5)]++;
            double g = r.nextGaussian();
            sum += g;
            sumSq += g * g;
        }
        assertEquals(0, sum / n, 0.02);
        assertEquals(1, sumSq / n, 0.03);
        for (int c : counts) assertEquals(n / 5.0, c, n * 0.02);
        assertThrows(IllegalArgumentException.class, () -> r.nextInt(0));
    }
}
