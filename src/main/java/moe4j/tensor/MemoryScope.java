package moe4j.tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The lifetime of off-heap tensor memory.
 *
 * <p>Parameters and optimizer state live as long as they are reachable (the persistent arena, freed by
 * the GC). The activations of one training step are short-lived: a step opens a scope, every tensor
 * allocated on that thread while the scope is open lives in it, and closing the scope frees all of them
 * at once, without waiting for the GC. Using a tensor of a closed scope throws
 * {@link IllegalStateException} instead of reading freed memory.
 *
 * <p>Scope memory is shared between threads (an in-JVM rank may read straight from a peer's buffer
 * during a collective). Scopes nest; {@link #persistent(java.util.function.Supplier)} escapes to the
 * persistent lifetime, e.g. to create a parameter's gradient inside a step.
 */
public final class MemoryScope implements AutoCloseable {
    /**
     * Every persistent allocation gets an automatic arena of its own. One shared automatic arena would
     * free nothing while the arena itself is reachable (its memory goes back only when the whole arena
     * is unreachable), and a static field keeps it reachable forever: every dropped gradient or
     * optimizer buffer would leak.
     */
    private static final Arena PERSISTENT = new Arena() {
        @Override
        public MemorySegment allocate(long byteSize, long byteAlignment) {
            return Arena.ofAuto().allocate(byteSize, byteAlignment);
        }

        /** A fresh automatic scope: whatever is attached to it (a file mapping, say) goes with its segment. */
        @Override
        public MemorySegment.Scope scope() {
            return Arena.ofAuto().scope();
        }

        @Override
        public void close() {
            throw new UnsupportedOperationException("the persistent arena is never closed: its memory is freed by the GC");
        }
    };
    private static final ThreadLocal<Deque<Arena>> STACK = ThreadLocal.withInitial(ArrayDeque::new);
    /** Bytes allocated in scopes that are still open, all threads together (for leak checks). */
    private static final AtomicLong SCOPED_BYTES = new AtomicLong();

    private final Arena arena;
    private final Thread owner;
    private boolean closed;

    private MemoryScope() {
        this.arena = new PooledArena(Arena.ofShared());
        this.owner = Thread.currentThread();
        STACK.get().push(arena);
    }

    /** Bytes currently allocated in open scopes of all threads; persistent memory is not counted. */
    public static long scopedBytes() {
        return SCOPED_BYTES.get();
    }

    /** Opens a scope on this thread: tensors allocated until {@link #close()} are freed by it. */
    public static MemoryScope open() {
        return new MemoryScope();
    }

    /** The arena new tensors of this thread are allocated in. */
    public static Arena current() {
        Arena top = STACK.get().peek();
        return top == null ? PERSISTENT : top;
    }

    /** The arena of memory that lives as long as it is reachable. */
    public static Arena persistentArena() {
        return PERSISTENT;
    }

    /**
     * Hands {@code release} to the scope open on this thread, to run when it closes (device memory of
     * the scope's tensors); false, with nothing registered, when no scope is open or allocations
     * currently go to the persistent arena.
     */
    static boolean releaseWithCurrentScope(Runnable release) {
        if (!(current() instanceof PooledArena scoped)) return false;
        scoped.releaseOnClose(release);
        return true;
    }

    /** Runs {@code body} with allocations going to the persistent arena, whatever scope is open. */
    public static <T> T persistent(java.util.function.Supplier<T> body) {
        Deque<Arena> stack = STACK.get();
        stack.push(PERSISTENT);
        try {
            return body.get();
        } finally {
            stack.pop();
        }
    }

    /**
     * Host bytes allocated in this scope so far, not counting scopes nested in it: since nothing in a scope
     * is freed before it closes, the most a piece of work run in the scope held at once.
     */
    public long allocatedBytes() {
        return ((PooledArena) arena).allocatedBytes();
    }

    @Override
    public void close() {
        if (closed) return;
        if (Thread.currentThread() != owner) {
            throw new IllegalStateException("a MemoryScope must be closed by the thread that opened it ("
                    + owner.getName() + "), not " + Thread.currentThread().getName());
        }
        Deque<Arena> stack = STACK.get();
        if (stack.peek() != arena) {
            throw new IllegalStateException("MemoryScopes must be closed in reverse order of opening");
        }
        stack.pop();
        closed = true;
        arena.close();
    }

    /**
     * A scope's arena. Memory comes from a process-wide pool of blocks in size classes (steps one
     * quarter-octave apart), and closing the scope returns its blocks to the pool: a training step
     * reuses the previous step's pages instead of mapping fresh ones and page-faulting them in, which
     * for large activations costs more than the arithmetic around them. Each tensor still gets a
     * segment bound to this scope's own arena, so a tensor used after its scope closed throws
     * {@link IllegalStateException} rather than reading a block another step now owns. Keeps
     * {@link #SCOPED_BYTES} up to date.
     */
    private static final class PooledArena implements Arena {
        /** A pooled block and the arena that can free it. */
        private record Block(MemorySegment segment, Arena owner) {}

        private static final java.util.concurrent.ConcurrentHashMap<Long, java.util.concurrent.ConcurrentLinkedQueue<Block>> POOL =
                new java.util.concurrent.ConcurrentHashMap<>();
        private static final long ALIGNMENT = 64;
        /** Bytes of blocks lent to open scopes, its high-water mark, and bytes waiting in the pool. */
        private static final AtomicLong LENT = new AtomicLong();
        private static final AtomicLong LENT_PEAK = new AtomicLong();
        private static final AtomicLong IDLE = new AtomicLong();
        /** The pool keeps at most this many idle bytes beyond twice the peak a step ever needed. */
        private static final long IDLE_SLACK = 64L << 20;

        private final Arena inner;
        private final java.util.List<Block> blocks = new java.util.ArrayList<>();
        /** Device memory of this scope, freed with it (in allocation order). */
        private final java.util.List<Runnable> releases = new java.util.ArrayList<>();
        private long bytes;

        synchronized long allocatedBytes() {
            return bytes;
        }

        synchronized void releaseOnClose(Runnable release) {
            releases.add(release);
        }

        PooledArena(Arena inner) {
            this.inner = inner;
        }

        /** The block size for a request: 64 bytes up to 4 KiB as powers of two, then quarter octaves. */
        static long sizeClass(long size) {
            long min = Math.max(size, ALIGNMENT);
            long pow = Long.highestOneBit(min);
            if (pow == min) return min;
            if (min <= 4096) return pow << 1;
            long quarter = pow >> 2;
            return (min + quarter - 1) / quarter * quarter;
        }

        @Override
        public MemorySegment allocate(long byteSize, long byteAlignment) {
            if (byteAlignment > ALIGNMENT) return inner.allocate(byteSize, byteAlignment);
            long size = sizeClass(byteSize);
            var free = POOL.computeIfAbsent(size, k -> new java.util.concurrent.ConcurrentLinkedQueue<>());
            Block block = free.poll();
            if (block != null) {
                IDLE.addAndGet(-size);
            } else {
                Arena owner = Arena.ofShared();
                block = new Block(owner.allocate(size, ALIGNMENT), owner);
            }
            LENT_PEAK.accumulateAndGet(LENT.addAndGet(size), Math::max);
            synchronized (this) {
                blocks.add(block);
                bytes += byteSize;
            }
            SCOPED_BYTES.addAndGet(byteSize);
            // a view with this scope's lifetime; zeroed, as Arena.allocate promises
            MemorySegment view = block.segment().reinterpret(byteSize, inner, null);
            view.fill((byte) 0);
            return view;
        }

        @Override
        public MemorySegment.Scope scope() {
            return inner.scope();
        }

        @Override
        public void close() {
            java.util.List<Runnable> deviceBlocks;
            synchronized (this) {
                deviceBlocks = new java.util.ArrayList<>(releases);
                releases.clear();
            }
            for (Runnable release : deviceBlocks) release.run();
            inner.close(); // every view dies first; only then may the blocks serve another scope
            synchronized (this) {
                for (Block block : blocks) {
                    long size = block.segment().byteSize();
                    POOL.get(size).add(block);
                    IDLE.addAndGet(size);
                    LENT.addAndGet(-size);
                }
                blocks.clear();
                SCOPED_BYTES.addAndGet(-bytes);
                bytes = 0;
            }
            trim();
        }

        /**
         * Frees idle blocks beyond twice the largest amount ever lent at once (plus some slack): routing
         * changes the sizes a step asks for, and size classes no step uses any more must not pin memory.
         */
        private static void trim() {
            long limit = 2 * LENT_PEAK.get() + IDLE_SLACK;
            if (IDLE.get() <= limit) return;
            synchronized (POOL) {
                for (var free : POOL.values()) {
                    Block block;
                    while (IDLE.get() > limit && (block = free.poll()) != null) {
                        IDLE.addAndGet(-block.segment().byteSize());
                        block.owner().close();
                    }
                    if (IDLE.get() <= limit) return;
                }
            }
        }
    }
}
