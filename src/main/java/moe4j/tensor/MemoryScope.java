package moe4j.tensor;

import java.lang.foreign.Arena;
import java.util.ArrayDeque;
import java.util.Deque;

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
    private static final Arena PERSISTENT = Arena.ofAuto();
    private static final ThreadLocal<Deque<Arena>> STACK = ThreadLocal.withInitial(ArrayDeque::new);

    private final Arena arena;
    private final Thread owner;
    private boolean closed;

    private MemoryScope() {
        this.arena = Arena.ofShared();
        this.owner = Thread.currentThread();
        STACK.get().push(arena);
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
}
