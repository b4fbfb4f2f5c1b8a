package moe4j.kernels.cuda;

import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.MemorySegment;

/**
 * One kernel launch: geometry and arguments, then {@link #run}. Arguments are packed into the stream's
 * reusable slots (8 bytes each; {@code kernelParams[i]} points at slot i), which cuLaunchKernel copies
 * before it returns, so a launch allocates nothing native. Argument types must match the kernel's C
 * signature: {@link #ptr} for pointers, {@link #i32} for int, {@link #i64} for long long, {@link #f32}
 * for float.
 */
final class Launch {
    /** Threads per block of the element-wise and row kernels. */
    static final int THREADS = 256;

    private final CudaStream stream;
    private final MemorySegment kernel;
    private final String name;
    private int gx = 1, gy = 1, bx = THREADS, shared;
    private int args;

    Launch(CudaStream stream, MemorySegment kernel, String name) {
        this.stream = stream;
        this.kernel = kernel;
        this.name = name;
    }

    /**
     * Blocks for a grid-stride loop over {@code n} items at {@code threads} per block: enough to cover
     * {@code n} once, capped at {@code maxBlocks} (the loop does the rest), at least 1.
     */
    static int blocksFor(long n, int threads, int maxBlocks) {
        if (n < 0) throw new IllegalArgumentException("launch over " + n + " items");
        if (threads <= 0 || threads > 1024) throw new IllegalArgumentException("threads per block must be in [1, 1024], got " + threads);
        long blocks = (n + threads - 1) / threads;
        return (int) Math.max(1, Math.min(blocks, maxBlocks));
    }

    /** Most blocks a grid-stride kernel gets: a few waves of the GPU's multiprocessors. */
    static int maxBlocks(int multiprocessors) {
        return multiprocessors * 16;
    }

    Launch grid(int x) {
        return grid(x, 1);
    }

    Launch grid(int x, int y) {
        if (x < 1 || y < 1 || y > 65535) throw new IllegalArgumentException(name + ": grid " + x + "x" + y + " out of range");
        gx = x;
        gy = y;
        return this;
    }

    /** A grid-stride launch over {@code n} items. */
    Launch over(long n) {
        return grid(blocksFor(n, bx, maxBlocks(stream.gpu.multiprocessors)));
    }

    Launch block(int x) {
        if (x < 1 || x > 1024) throw new IllegalArgumentException(name + ": block of " + x + " threads (1..1024)");
        bx = x;
        return this;
    }

    Launch shared(int bytes) {
        shared = bytes;
        return this;
    }

    private long slot() {
        if (args == CudaStream.MAX_KERNEL_ARGS) throw new IllegalArgumentException(name + ": more than " + args + " arguments");
        return 8L * args++;
    }

    Launch ptr(long address) {
        stream.argValues.set(JAVA_LONG, slot(), address);
        return this;
    }

    Launch i32(int v) {
        stream.argValues.set(JAVA_INT, slot(), v);
        return this;
    }

    Launch i64(long v) {
        stream.argValues.set(JAVA_LONG, slot(), v);
        return this;
    }

    Launch f64(double v) {
        stream.argValues.set(java.lang.foreign.ValueLayout.JAVA_DOUBLE, slot(), v);
        return this;
    }

    Launch f32(float v) {
        stream.argValues.set(JAVA_FLOAT, slot(), v);
        return this;
    }

    void run() {
        stream.begin(name);
        try {
            stream.driver.launch(kernel, name, gx, gy, 1, bx, 1, 1, shared, stream.stream, stream.argPointers);
        } finally {
            stream.end();
        }
    }
}
