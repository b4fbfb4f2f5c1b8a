package moe4j.parallel;

import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.time.Duration;
import java.util.concurrent.atomic.AtomicReferenceArray;
import moe4j.distributed.Distributed;
import moe4j.distributed.RankFunction;

/**
 * Runs {@code body} on in-JVM ranks that are expected to fail together: the run must throw, and every
 * rank must end with an exception of its own (none left waiting). Returns what the run threw and what
 * each rank ended with, for the caller's checks of the messages.
 */
record EveryRankFails(RuntimeException run, Throwable[] ranks) {
    static EveryRankFails of(int worldSize, Duration collectiveTimeout, RankFunction<?> body) {
        AtomicReferenceArray<Throwable> seen = new AtomicReferenceArray<>(worldSize);
        RuntimeException run = assertThrows(RuntimeException.class, () -> Distributed.run(worldSize, collectiveTimeout, world -> {
            try {
                return body.run(world);
            } catch (Throwable t) {
                seen.set(world.rank(), t);
                throw t;
            }
        }));
        Throwable[] ranks = new Throwable[worldSize];
        for (int r = 0; r < worldSize; r++) {
            ranks[r] = seen.get(r);
            assertNotNull(ranks[r], "rank " + r + " must end with an exception");
        }
        return new EveryRankFails(run, ranks);
    }
}
