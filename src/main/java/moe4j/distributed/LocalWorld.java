package moe4j.distributed;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.stream.IntStream;

/**
 * The in-JVM world: every group created among its ranks (the world group and all groups split off
 * it) and every rank handle, so that a failing or finishing rank can be announced to all of them
 * and its background threads stopped.
 */
final class LocalWorld {
    private final int size;
    private final Duration timeout;
    private final List<Rendezvous> groups = new CopyOnWriteArrayList<>();
    private final List<LocalProcessGroup> handles = new CopyOnWriteArrayList<>();

    LocalWorld(int size, Duration timeout) {
        if (size < 1) throw new IllegalArgumentException("world size must be >= 1, got " + size);
        if (timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("collective timeout must be positive, got " + timeout);
        }
        this.size = size;
        this.timeout = timeout;
    }

    int size() {
        return size;
    }

    Duration timeout() {
        return timeout;
    }

    /** One world-group handle per rank, all sharing one rendezvous. */
    List<ProcessGroup> worldGroups() {
        Rendezvous world = register(new Rendezvous("world", IntStream.range(0, size).toArray(), timeout));
        return IntStream.range(0, size).<ProcessGroup>mapToObj(r -> new LocalProcessGroup(world, r, this)).toList();
    }

    Rendezvous register(Rendezvous group) {
        groups.add(group);
        return group;
    }

    void register(LocalProcessGroup handle) {
        handles.add(handle);
    }

    /** Breaks every group: the job cannot complete once a rank failed. */
    void abortAll(String reason) {
        for (Rendezvous g : groups) g.abort(reason);
    }

    /** World rank {@code worldRank} has ended its work: stop its background threads, tell its groups. */
    void rankEnded(int worldRank) {
        for (LocalProcessGroup h : handles) {
            if (h.worldRank() == worldRank) h.shutdown();
        }
        for (Rendezvous g : groups) {
            int r = g.groupRankOf(worldRank);
            if (r >= 0) g.depart(r);
        }
    }
}
