package moe4j.tensor;

import static org.junit.jupiter.api.Assertions.*;

import java.lang.management.BufferPoolMXBean;
import java.lang.management.ManagementFactory;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;

class MemoryScopeTest {
    @Test
    void tensorOfAClosedScopeThrowsOnAccess() {
        Tensor t;
        try (MemoryScope s = MemoryScope.open()) {
            t = Tensor.full(2f, 3, 4);
            assertEquals(2f, t.get(5));
        }
        assertThrows(IllegalStateException.class, () -> t.get(0));
        assertThrows(IllegalStateException.class, () -> t.set(0, 1f));
        assertThrows(IllegalStateException.class, t::toFloatArray);
    }

    @Test
    void persistentEscapesTheOpenScope() {
        Tensor kept;
        Tensor dropped;
        try (MemoryScope s = MemoryScope.open()) {
            kept = MemoryScope.persistent(() -> Tensor.full(3f, 2));
            dropped = Tensor.zeros(2);
            assertSame(MemoryScope.current(), MemoryScope.current(), "scope is back after persistent()");
            assertNotSame(MemoryScope.persistentArena(), MemoryScope.current());
        }
        assertArrayEquals(new float[] {3, 3}, kept.toFloatArray());
        assertThrows(IllegalStateException.class, () -> dropped.get(0));
    }

    @Test
    void scopesNest() {
        try (MemoryScope outer = MemoryScope.open()) {
            Tensor a = Tensor.full(1f, 2);
            Tensor b;
            try (MemoryScope inner = MemoryScope.open()) {
                b = Tensor.full(2f, 2);
                assertEquals(1f, a.get(0));
            }
            assertThrows(IllegalStateException.class, () -> b.get(0));
            assertEquals(1f, a.get(0), "the outer scope's tensor outlives the inner scope");
            Tensor c = Tensor.full(4f, 2); // allocations go to the outer scope again
            outer.close();
            assertThrows(IllegalStateException.class, () -> c.get(0));
            assertThrows(IllegalStateException.class, () -> a.get(0));
        }
        assertSame(MemoryScope.persistentArena(), MemoryScope.current());
    }

    @Test
    void scopesMustBeClosedInReverseOrder() {
        MemoryScope outer = MemoryScope.open();
        MemoryScope inner = MemoryScope.open();
        var e = assertThrows(IllegalStateException.class, outer::close);
        assertTrue(e.getMessage().contains("reverse order"), e.getMessage());
        inner.close();
        outer.close();
        outer.close(); // a second close does nothing
        assertSame(MemoryScope.persistentArena(), MemoryScope.current());
    }

    @Test
    void onlyTheOpeningThreadMayClose() throws Exception {
        try (MemoryScope s = MemoryScope.open()) {
            Tensor t = Tensor.full(5f, 3);
            AtomicReference<Throwable> failure = new AtomicReference<>();
            AtomicReference<Float> read = new AtomicReference<>();
            Thread other = new Thread(() -> {
                read.set(t.get(2)); // scope memory is readable from other threads
                try {
                    s.close();
                } catch (Throwable e) {
                    failure.set(e);
                }
            });
            other.start();
            other.join();
            assertEquals(5f, read.get());
            assertInstanceOf(IllegalStateException.class, failure.get());
            assertEquals(5f, t.get(0), "the failed close from another thread freed nothing");
        }
    }

    @Test
    void scopedBytesCountsOpenScopesOnly() {
        long before = MemoryScope.scopedBytes();
        try (MemoryScope s = MemoryScope.open()) {
            Tensor.zeros(100);
            try (MemoryScope inner = MemoryScope.open()) {
                Tensor.zeros(DType.BF16, 10);
                assertEquals(before + 400 + 20, MemoryScope.scopedBytes());
            }
            assertEquals(before + 400, MemoryScope.scopedBytes());
            MemoryScope.persistent(() -> Tensor.zeros(1000));
            assertEquals(before + 400, MemoryScope.scopedBytes(), "persistent memory is not scoped");
        }
        assertEquals(before, MemoryScope.scopedBytes());
    }

    static long nativeBytesOfAutomaticArenas() {
        for (BufferPoolMXBean pool : ManagementFactory.getPlatformMXBeans(BufferPoolMXBean.class)) {
            if (pool.getName().equals("direct")) return pool.getMemoryUsed();
        }
        throw new IllegalStateException("no direct buffer pool");
    }

    /**
     * Persistent memory goes back once its tensor is unreachable. (The JDK counts memory of automatic
     * arenas in the "direct" buffer pool.)
     */
    @Test
    void persistentMemoryIsFreedWhenUnreachable() throws InterruptedException {
        long before = nativeBytesOfAutomaticArenas();
        long mib = 1 << 20;
        for (int i = 0; i < 64; i++) MemoryScope.persistent(() -> Tensor.zeros(DType.F32, (int) (mib / 4)));
        long after = Long.MAX_VALUE;
        for (int attempt = 0; attempt < 50 && after > before + 16 * mib; attempt++) {
            System.gc();
            Thread.sleep(50);
            after = nativeBytesOfAutomaticArenas();
        }
        assertTrue(after <= before + 16 * mib, "64 MiB of dropped persistent tensors still held: "
                + (after - before) / mib + " MiB more than before");
    }
}
