package moe4j.kernels;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
import moe4j.tensor.DType;
import moe4j.tensor.Device;

/**
 * Where one rank's kernels run: its device and, on the CPU, how many threads one kernel call may use
 * (GEMM, attention); on an accelerator, the backend keeps the rank's stream here. A rank thread enters
 * its context once, at the start of its work, and closes it at the end; a thread that entered none runs
 * on the CPU with one thread.
 *
 * <p>Nothing here is process-wide: two ranks in one JVM may use different thread counts or devices, and
 * each context owns its own resources (the GEMM worker pool, a stream), released by {@link #close}.
 */
public final class ExecutionContext implements AutoCloseable {
    private static final ThreadLocal<Deque<ExecutionContext>> STACK = ThreadLocal.withInitial(ArrayDeque::new);
    private static final ExecutionContext DEFAULT = new ExecutionContext(Device.CPU, 1, DType.F32, null);

    private final Device device;
    private final int cpuThreads;
    private final DType productInputs;
    private final Thread owner;
    private final Map<Object, Object> resources = new LinkedHashMap<>();
    private boolean closed;

    private ExecutionContext(Device device, int cpuThreads, DType productInputs, Thread owner) {
        this.device = device;
        this.cpuThreads = cpuThreads;
        this.productInputs = productInputs;
        this.owner = owner;
    }

    /**
     * Makes a context for {@code device} current on this thread until {@link #close()} (contexts nest).
     * For a non-CPU device its backend is installed first, so tensors can be allocated there.
     *
     * @param cpuThreads threads one CPU kernel call may use, the caller included (&gt;= 1)
     */
    public static ExecutionContext enter(Device device, int cpuThreads) {
        return enter(device, cpuThreads, DType.F32);
    }

    /**
     * {@link #enter(Device, int)} with the type the matrix products of this context take their operands
     * in: {@link DType#F32} (exact float32, TF32 off), or {@link DType#BF16} (mixed precision: each
     * product rounds its float32 operands to bfloat16 on the way in and accumulates and stores in
     * float32, so parameters, activations and gradients stay float32). BF16 needs a device with
     * bfloat16 tensor cores; the CPU refuses it.
     */
    public static ExecutionContext enter(Device device, int cpuThreads, DType productInputs) {
        if (cpuThreads < 1) {
            throw new IllegalArgumentException("ExecutionContext: cpu thread count " + cpuThreads + ", expected >= 1");
        }
        if (productInputs != DType.F32 && productInputs != DType.BF16) {
            throw new IllegalArgumentException("ExecutionContext: matrix products take F32 or BF16 operands, got " + productInputs);
        }
        if (productInputs == DType.BF16 && device.isCpu()) {
            throw new IllegalArgumentException("ExecutionContext: bf16 products need a GPU; the cpu device computes in f32");
        }
        if (!device.isCpu()) DeviceBackend.find(device.kind());
        ExecutionContext ctx = new ExecutionContext(device, cpuThreads, productInputs, Thread.currentThread());
        STACK.get().push(ctx);
        return ctx;
    }

    /** The context of this thread: the innermost entered and not yet closed, else the CPU with one thread. */
    public static ExecutionContext current() {
        ExecutionContext top = STACK.get().peek();
        return top == null ? DEFAULT : top;
    }

    public Device device() {
        return device;
    }

    /** The type matrix products round their operands to: F32 (none) or BF16 (mixed precision). */
    public DType productInputs() {
        return productInputs;
    }

    /** Threads one CPU kernel call may use, the caller included. */
    public int cpuThreads() {
        return cpuThreads;
    }

    /**
     * A resource of this context, made by {@code factory} on first use and kept until {@link #close()}
     * (closed then if it is {@link AutoCloseable}): a GEMM worker pool, a stream. The default context's
     * resources live as long as the process.
     */
    public synchronized <T> T resource(Object key, Supplier<T> factory) {
        if (closed) throw new IllegalStateException("ExecutionContext on " + device + " is closed");
        @SuppressWarnings("unchecked")
        T r = (T) resources.computeIfAbsent(key, k -> factory.get());
        return r;
    }

    /** Leaves this context (it must be this thread's innermost) and releases its resources. */
    @Override
    public void close() {
        if (this == DEFAULT || closed) return;
        if (Thread.currentThread() != owner) {
            throw new IllegalStateException("an ExecutionContext must be closed by the thread that entered it ("
                    + owner.getName() + "), not " + Thread.currentThread().getName());
        }
        Deque<ExecutionContext> stack = STACK.get();
        if (stack.peek() != this) throw new IllegalStateException("ExecutionContexts must be closed in reverse order of entering");
        stack.pop();
        List<Object> owned;
        synchronized (this) {
            closed = true;
            owned = new ArrayList<>(resources.values());
            resources.clear();
        }
        RuntimeException failure = null;
        for (Object r : owned.reversed()) {
            if (r instanceof AutoCloseable c) {
                try {
                    c.close();
                } catch (Exception e) {
                    if (failure == null) failure = new IllegalStateException("closing a resource of the context on " + device + " failed", e);
                    else failure.addSuppressed(e);
                }
            }
        }
        if (failure != null) throw failure;
    }

    @Override
    public String toString() {
        return "ExecutionContext(" + device + ", cpu threads " + cpuThreads + ", products in " + productInputs + ")";
    }
}
