package moe4j.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import moe4j.tensor.Device;
import org.junit.jupiter.api.Test;

class ExecutionContextTest {
    @Test
    void aThreadWithoutContextComputesOnOneCpuThread() {
        assertEquals(Device.CPU, ExecutionContext.current().device());
        assertEquals(1, ExecutionContext.current().cpuThreads());
    }

    @Test
    void contextsNestAndBelongToTheirThread() throws Exception {
        try (ExecutionContext outer = ExecutionContext.enter(Device.CPU, 3)) {
            try (ExecutionContext inner = ExecutionContext.enter(Device.CPU, 2)) {
                assertSame(inner, ExecutionContext.current());
            }
            assertSame(outer, ExecutionContext.current());
            AtomicInteger seenElsewhere = new AtomicInteger();
            Thread other = new Thread(() -> seenElsewhere.set(ExecutionContext.current().cpuThreads()));
            other.start();
            other.join();
            assertEquals(1, seenElsewhere.get(), "another rank thread does not inherit this rank's threads");
        }
        assertEquals(1, ExecutionContext.current().cpuThreads());
    }

    @Test
    void closingReleasesTheContextsResources() {
        AtomicBoolean closed = new AtomicBoolean();
        try (ExecutionContext ctx = ExecutionContext.enter(Device.CPU, 2)) {
            AutoCloseable r = ctx.resource("pool", () -> (AutoCloseable) () -> closed.set(true));
            assertSame(r, ctx.resource("pool", () -> (AutoCloseable) () -> {}), "made once per context");
        }
        assertTrue(closed.get());
    }

    @Test
    void misuseIsAClearError() throws Exception {
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class, () -> ExecutionContext.enter(Device.CPU, 0));
        assertTrue(bad.getMessage().contains("0"), bad.getMessage());
        try (ExecutionContext outer = ExecutionContext.enter(Device.CPU, 2)) {
            ExecutionContext inner = ExecutionContext.enter(Device.CPU, 2);
            assertThrows(IllegalStateException.class, outer::close, "out of order");
            AtomicReference<Throwable> fromOther = new AtomicReference<>();
            Thread other = new Thread(() -> {
                try {
                    inner.close();
                } catch (Throwable t) {
                    fromOther.set(t);
                }
            });
            other.start();
            other.join();
            assertTrue(fromOther.get() instanceof IllegalStateException, String.valueOf(fromOther.get()));
            inner.close();
        }
    }
}
