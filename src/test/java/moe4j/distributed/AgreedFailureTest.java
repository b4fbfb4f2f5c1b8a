package moe4j.distributed;

import static org.junit.jupiter.api.Assertions.*;

import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;

class AgreedFailureTest {
    @Test
    void everyRankThrowsTheLowestFailingRanksMessage() {
        Map<Integer, AgreedFailure> seen = new ConcurrentHashMap<>();
        // each rank keeps what it caught (a rank that throws would break the others' groups)
        Distributed.run(4, world -> {
            try {
                AgreedFailure.agree(world, () -> {
                    if (world.rank() == 2) throw new IllegalArgumentException("rank two's input is wrong: ünïcode kept");
                    if (world.rank() == 3) throw new IllegalStateException("rank three broke");
                });
            } catch (AgreedFailure e) {
                seen.put(world.rank(), e);
            }
            return null;
        });
        assertEquals(4, seen.size(), "every rank, the ones that did not fail too");
        for (AgreedFailure e : seen.values()) {
            assertEquals("rank two's input is wrong: ünïcode kept", e.getMessage());
            assertTrue(e.userError());
        }
        assertInstanceOf(IllegalArgumentException.class, seen.get(2).getCause(), "the failing rank keeps its cause");
    }

    @Test
    void aRunFailureIsNotAUserErrorAndSuccessPassesThrough() {
        List<Boolean> users = Distributed.run(2, world -> {
            AgreedFailure.agree(world, () -> {}); // nobody fails: nothing thrown
            try {
                AgreedFailure.agree(world, () -> {
                    if (world.rank() == 0) throw new IllegalStateException("disk full");
                });
                return null;
            } catch (AgreedFailure e) {
                assertEquals("disk full", e.getMessage());
                return e.userError();
            }
        });
        assertEquals(List.of(false, false), users);
        var single = assertThrows(AgreedFailure.class, () -> AgreedFailure.agree(null, () -> {
            throw new IllegalArgumentException("alone");
        }));
        assertTrue(single.userError());
    }
}
