package moe4j.kernels.cuda;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Device memory for one stream, with scopes: every allocation belongs to the innermost open
 * {@link Scope} (a training step, a benchmark iteration) and is returned when that scope closes;
 * allocations outside any scope live until {@link #free}. The memory itself comes from a
 * stream-ordered allocator ({@code cuMemAllocAsync} on the device's pool, whose release threshold
 * is raised so that freed memory stays in the pool): after the first step every request is served
 * from memory the pool already holds, without a driver allocation.
 *
 * <p>This class keeps the books (bytes and buffers in use, peak) that out-of-memory messages and
 * tests read; it is not thread-safe, like the stream it serves.
 */
public final class DevicePool {
    /** Where the bytes come from: returns 0 when the device is out of memory. */
    interface Allocator {
        long allocate(long bytes);

        void free(long address);

        /** A description of the device side for out-of-memory messages (free/total, reserved). */
        String deviceState();
    }

    /** Allocations are rounded up to this many bytes (cuBLAS and 16-byte vector loads want aligned rows). */
    static final long ALIGNMENT = 256;

    private final String device;
    private final Allocator allocator;
    private final Map<Long, Long> live = new java.util.HashMap<>();
    private final Deque<Scope> scopes = new ArrayDeque<>();
    private long bytesInUse;
    private long peakBytes;
    private long allocations;

    DevicePool(String device, Allocator allocator) {
        this.device = device;
        this.allocator = allocator;
    }

    static long rounded(long bytes) {
        return (bytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    }

    /** {@code bytes} of device memory for {@code what} (named in an out-of-memory error), in the innermost scope. */
    public long allocate(long bytes, String what) {
        long address = allocateUnscoped(bytes, what);
        Scope s = scopes.peek();
        if (s != null) s.owned.add(address);
        return address;
    }

    /**
     * {@code bytes} that outlive every scope (parameters, workspaces), returned only by {@link #free}: made
     * inside a step, they must not go back with it.
     */
    public long allocatePersistent(long bytes, String what) {
        return allocateUnscoped(bytes, what);
    }

    private long allocateUnscoped(long bytes, String what) {
        if (bytes < 0) throw new IllegalArgumentException(device + ": cannot allocate " + bytes + " bytes for " + what);
        long size = rounded(Math.max(bytes, 1));
        long address = allocator.allocate(size);
        if (address == 0) {
            throw new CudaException(String.format(Locale.ROOT,
                    "%s: out of memory allocating %s for %s: moe4j holds %s in %d buffers on this stream (peak %s); %s",
                    device, human(size), what, human(bytesInUse), live.size(), human(peakBytes), allocator.deviceState()));
        }
        live.put(address, size);
        bytesInUse += size;
        peakBytes = Math.max(peakBytes, bytesInUse);
        allocations++;
        return address;
    }

    /** Returns one allocation now (it must not belong to an open scope's list twice: scopes skip freed ones). */
    public void free(long address) {
        Long size = live.remove(address);
        if (size == null) throw new IllegalArgumentException(device + ": address 0x" + Long.toHexString(address) + " is not a live allocation");
        bytesInUse -= size;
        allocator.free(address);
    }

    /** Opens a scope: allocations until its close belong to it. Scopes nest and close in reverse order. */
    public Scope openScope() {
        Scope s = new Scope();
        scopes.push(s);
        return s;
    }

    public long bytesInUse() {
        return bytesInUse;
    }

    public long peakBytes() {
        return peakBytes;
    }

    public int liveBuffers() {
        return live.size();
    }

    /** Allocations served since the pool was made (a steady-state step adds the same number each time). */
    public long allocations() {
        return allocations;
    }

    static String human(long bytes) {
        if (bytes >= 1L << 30) return String.format(Locale.ROOT, "%.2f GiB", bytes / (double) (1L << 30));
        if (bytes >= 1L << 20) return String.format(Locale.ROOT, "%.1f MiB", bytes / (double) (1L << 20));
        if (bytes >= 1L << 10) return String.format(Locale.ROOT, "%.1f KiB", bytes / 1024.0);
        return bytes + " B";
    }

    /** A set of allocations returned together. */
    public final class Scope implements AutoCloseable {
        private final List<Long> owned = new ArrayList<>();
        private boolean closed;

        @Override
        public void close() {
            if (closed) return;
            if (scopes.peek() != this) throw new IllegalStateException(device + ": scopes must close innermost first");
            scopes.pop();
            closed = true;
            for (Long a : owned) {
                if (live.containsKey(a)) free(a);
            }
            owned.clear();
        }
    }
}
