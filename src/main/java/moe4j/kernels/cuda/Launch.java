package moe4j.kernels.cuda;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.MemorySegment;

/**
 * One kernel launch: geometry and arguments, then {@link #run}. Arguments are collected here as 8-byte
 * words and copied into the stream's reusable slots ({@code kernelParams[i]} points at slot i) only by
 * {@link #run}, which cuLaunchKernel copies before it returns: a launch allocates nothing native, and an
 * argument expression that itself launches a kernel (making a table, converting an operand) cannot
 * overwrite this launch's arguments. Argument types must match the kernel's C signature: {@link #ptr}
 * for pointers, {@link #i32} for int, {@link #i64} for long long, {@link #f32} for float, {@link #f64}
 * for double.
 */
final class Launch {
    /** Threads per block of the element-wise and row kernels. */
    static final int THREADS = 256;

    private final CudaStream stream;
    private final MemorySegment kernel;
    private final String name;
    private int gx = 1, gy = 1, bx = THREADS, shared;
    private final long[] words = new long[CudaStream.MAX_KERNEL_ARGS];
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

    /**
     * The next argument as an 8-byte word. A 4-byte argument's bits are its low half, which is where the
     * driver reads an int or float from its slot (little-endian).
     */
    private Launch word(long bits) {
        if (args == CudaStream.MAX_KERNEL_ARGS) throw new IllegalArgumentException(name + ": more than " + args + " arguments");
        words[args++] = bits;
        return this;
    }

    Launch ptr(long address) {
        return word(address);
    }

    Launch i32(int v) {
        return word(v);
    }

    Launch i64(long v) {
        return word(v);
    }

    Launch f64(double v) {
        return word(Double.doubleToRawLongBits(v));
    }

    Launch f32(float v) {
        return word(Float.floatToRawIntBits(v));
    }

    void run() {
        for (int i = 0; i < args; i++) stream.argValues.set(JAVA_LONG, 8L * i, words[i]);
        stream.begin(name);
        try {
            stream.driver.launch(kernel, name, gx, gy, 1, bx, 1, 1, shared, stream.stream, stream.argPointers);
        } finally {
            stream.end();
        }
    }
}
