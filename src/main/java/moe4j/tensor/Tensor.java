package moe4j.tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.ref.Cleaner;
import java.util.Arrays;

/**
 * A dense, contiguous, row-major tensor on a {@link Device}: off-heap host memory on the CPU, device
 * memory from the device's {@link DeviceAllocator} elsewhere.
 *
 * <p>Only a CPU tensor's elements can be read or written from Java ({@link #get}, {@link #set},
 * {@link #data()}, ...); on any other device those throw {@link IllegalStateException}, because the
 * device may still be computing them. Data crosses between devices only by an explicit copy:
 * {@link #to(Device)}, or {@link #item()} for one scalar.
 *
 * <p>Compute is float32; int32 tensors carry indices; bf16/f16/i64 are storage and wire types
 * ({@link #to(DType)} converts). Memory comes from the current {@link MemoryScope}. Views
 * ({@link #view(int...)}, {@link #rows(int, int)}) share storage and cost nothing.
 *
 * <p>The autograd fields ({@link #requiresGrad()}, {@link #grad()}, {@link #gradFn()}) are plain
 * state here; {@code moe4j.autograd} gives them meaning.
 */
public final class Tensor {
    static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT;
    static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT;
    static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT;
    static final ValueLayout.OfLong I64 = ValueLayout.JAVA_LONG;

    /** Host memory of a CPU tensor; null on other devices. Replaced only for a {@link #releasable} tensor. */
    private MemorySegment data;
    /** Device memory of a non-CPU tensor; null on the CPU (and while a releasable one is released). */
    private DeviceMemory memory;
    private final Device device;
    /**
     * For persistent device memory: the object whose unreachability frees the block (shared by all
     * views of it, so a view keeps its storage alive). Null otherwise.
     */
    private final Object storageOwner;
    /**
     * A {@link #releasable} tensor: its own host arena (closed on release, so any access to the old memory,
     * through this tensor or a view taken earlier, throws), and whether its storage is released now.
     */
    private final boolean releasable;
    private Arena ownArena;
    private boolean released;
    private final DType dtype;
    private final int[] shape;
    private final long numel;

    private boolean requiresGrad;
    /** -1, or a bound every element of this int32 tensor is known to lie below (see {@link #markIndicesBelow}). */
    private int indicesBelow = -1;
    private Tensor grad;
    private boolean gradZeroPending; // see zeroGrad
    private GradFn gradFn;

    private Tensor(MemorySegment data, DType dtype, int[] shape) {
        this.data = data;
        this.memory = null;
        this.device = Device.CPU;
        this.storageOwner = null;
        this.releasable = false;
        this.dtype = dtype;
        this.shape = shape;
        this.numel = checkedNumel(shape);
        if (data.byteSize() != numel * dtype.byteSize) {
            throw new IllegalArgumentException("segment of " + data.byteSize() + " bytes does not hold a "
                    + dtype + " tensor of shape " + Arrays.toString(shape) + " (" + numel * dtype.byteSize + " bytes)");
        }
    }

    private Tensor(DeviceMemory memory, Object storageOwner, DType dtype, int[] shape) {
        this.data = null;
        this.memory = memory;
        this.device = memory.device();
        this.storageOwner = storageOwner;
        this.releasable = false;
        this.dtype = dtype;
        this.shape = shape;
        this.numel = checkedNumel(shape);
        if (memory.byteSize() != numel * dtype.byteSize) {
            throw new IllegalArgumentException("device block of " + memory.byteSize() + " bytes does not hold a "
                    + dtype + " tensor of shape " + Arrays.toString(shape) + " (" + numel * dtype.byteSize + " bytes)");
        }
    }

    /** Frees persistent device memory once no tensor refers to its storage any more. */
    private static final Cleaner DEVICE_MEMORY_CLEANER = Cleaner.create();

    private static long checkedNumel(int[] shape) {
        long n = 1;
        for (int d : shape) {
            if (d < 0) throw new IllegalArgumentException("negative dimension in shape " + Arrays.toString(shape));
            try {
                n = Math.multiplyExact(n, d);
            } catch (ArithmeticException e) {
                throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " has more than 2^63 elements");
            }
        }
        return n;
    }

    /** A released float32 tensor of {@code shape} on {@code device}: see {@link #releasable}. */
    private Tensor(Device device, int[] shape) {
        this.device = device;
        this.dtype = DType.F32;
        this.shape = shape;
        this.numel = checkedNumel(shape);
        this.releasable = true;
        this.released = true;
        this.storageOwner = null; // device memory of a releasable tensor is freed by releaseStorage, not by the GC
        // a zero-length placeholder until the first allocation: host() refuses it by the released flag
        this.data = device.isCpu() ? MemorySegment.NULL : null;
    }

    /**
     * A float32 tensor of {@code shape} on {@code device} whose memory can be given back and taken again
     * while the tensor object stays the same (PyTorch's storage resize to 0 and back): what a sharded
     * parameter is between the uses of its module. It starts released: {@link #allocateStorage()} gives it
     * zeroed memory, {@link #releaseStorage()} frees that memory at once. While released, reading or writing
     * it throws {@link IllegalStateException}; on the CPU so does any view taken before the release, so a
     * recorded use of the old memory fails loudly instead of reading freed bytes. Device memory comes from
     * the device's allocator directly, not through a scope.
     */
    public static Tensor releasable(Device device, int... shape) {
        return new Tensor(device, shape.clone());
    }

    /** Gives a released {@link #releasable} tensor fresh zeroed memory. */
    public void allocateStorage() {
        if (!releasable) throw new IllegalStateException("allocateStorage: " + describe() + " is not releasable");
        if (!released) throw new IllegalStateException("allocateStorage: " + describe() + " already has its storage");
        long bytes = numel * dtype.byteSize;
        if (device.isCpu()) {
            ownArena = Arena.ofShared();
            data = ownArena.allocate(Math.max(1, bytes), 64).asSlice(0, bytes);
        } else {
            memory = DeviceAllocator.of(device).allocate(bytes); // zero-filled
        }
        released = false;
    }

    /**
     * Frees the memory of a {@link #releasable} tensor now; the tensor keeps its shape, dtype and autograd
     * state. On the CPU a view taken before throws when used; on a device such a view is not checked (its
     * block is back in the pool), so code that releases must not keep views across a release, as the CPU
     * tests make sure.
     */
    public void releaseStorage() {
        if (!releasable) throw new IllegalStateException("releaseStorage: " + describe() + " is not releasable");
        if (released) return;
        released = true;
        if (device.isCpu()) {
            ownArena.close();
            ownArena = null;
        } else {
            // ordered on the stream like a scope's blocks, so work already queued on it still reads it
            DeviceAllocator.of(device).free(memory);
            memory = null;
        }
    }

    /** Whether this tensor holds memory now: false only for a released {@link #releasable} tensor. */
    public boolean hasStorage() {
        return !released;
    }

    // ---------------------------------------------------------------- creation

    /** A zero-filled tensor in {@code arena}. */
    public static Tensor allocate(Arena arena, DType dtype, int... shape) {
        int[] s = shape.clone();
        long bytes = checkedNumel(s) * dtype.byteSize;
        return new Tensor(arena.allocate(bytes, 64), dtype, s);
    }

    /** A zero-filled float32 tensor in the current scope. */
    public static Tensor zeros(int... shape) {
        return allocate(MemoryScope.current(), DType.F32, shape);
    }

    /** A zero-filled tensor of the given type in the current scope. */
    public static Tensor zeros(DType dtype, int... shape) {
        return allocate(MemoryScope.current(), dtype, shape);
    }

    /**
     * A zero-filled tensor on {@code device}. Its memory lives in the current {@link MemoryScope} (freed
     * when it closes) or, outside any scope, as long as the tensor or a view of it is reachable.
     */
    public static Tensor zeros(Device device, DType dtype, int... shape) {
        return onDevice(device, dtype, shape, true);
    }

    /**
     * A tensor on {@code device} whose contents are unspecified until written: for an op's result that its
     * kernel writes in full (a device skips the zero fill; host memory comes zeroed anyway). Lifetime as
     * {@link #zeros(Device, DType, int...)}.
     */
    public static Tensor empty(Device device, DType dtype, int... shape) {
        return onDevice(device, dtype, shape, false);
    }

    /** {@link #empty} of {@code t}'s type and shape on {@code t}'s device. */
    public static Tensor emptyLike(Tensor t) {
        return empty(t.device, t.dtype, t.shape);
    }

    private static Tensor onDevice(Device device, DType dtype, int[] shape, boolean zeroed) {
        if (device.isCpu()) return zeros(dtype, shape);
        int[] s = shape.clone();
        long bytes = checkedNumel(s) * dtype.byteSize;
        DeviceAllocator allocator = DeviceAllocator.of(device);
        DeviceMemory block = zeroed ? allocator.allocate(bytes) : allocator.allocateUninitialized(bytes);
        if (MemoryScope.releaseWithCurrentScope(() -> allocator.free(block))) {
            return new Tensor(block, null, dtype, s);
        }
        Object owner = new Object();
        DEVICE_MEMORY_CLEANER.register(owner, () -> allocator.free(block));
        return new Tensor(block, owner, dtype, s);
    }

    /** A zero-filled float32 tensor on {@code device} (see {@link #zeros(Device, DType, int...)}). */
    public static Tensor zeros(Device device, int... shape) {
        return zeros(device, DType.F32, shape);
    }

    /** Zeros of {@code t}'s type and shape on {@code t}'s device. */
    public static Tensor zerosLike(Tensor t) {
        return zeros(t.device, t.dtype, t.shape);
    }

    public static Tensor full(float value, int... shape) {
        Tensor t = zeros(shape);
        t.fill(value);
        return t;
    }

    /** A float32 tensor holding {@code values} (copied). */
    public static Tensor of(float[] values, int... shape) {
        Tensor t = zeros(shape);
        if (values.length != t.numel) {
            throw new IllegalArgumentException(values.length + " values do not fill shape " + Arrays.toString(shape));
        }
        MemorySegment.copy(values, 0, t.data, F32, 0, values.length);
        return t;
    }

    /** A float32 tensor from doubles (rounded to float). */
    public static Tensor of(double[] values, int... shape) {
        float[] f = new float[values.length];
        for (int i = 0; i < f.length; i++) f[i] = (float) values[i];
        return of(f, shape);
    }

    /** An int32 tensor holding {@code values} (copied). */
    public static Tensor ofInts(int[] values, int... shape) {
        Tensor t = zeros(DType.I32, shape);
        if (values.length != t.numel) {
            throw new IllegalArgumentException(values.length + " values do not fill shape " + Arrays.toString(shape));
        }
        MemorySegment.copy(values, 0, t.data, I32, 0, values.length);
        return t;
    }

    public static Tensor scalar(float value) {
        return of(new float[] {value});
    }

    /** A tensor over existing memory (no copy); the segment's size must match the shape exactly. */
    public static Tensor wrap(MemorySegment segment, DType dtype, int... shape) {
        return new Tensor(segment, dtype, shape.clone());
    }

    /** Normal(0, std²) float32 values from {@code rng}. */
    public static Tensor randn(Rng rng, double std, int... shape) {
        Tensor t = zeros(shape);
        for (long i = 0; i < t.numel; i++) t.set(i, (float) (rng.nextGaussian() * std));
        return t;
    }

    /** Uniform [lo, hi) float32 values from {@code rng}. */
    public static Tensor rand(Rng rng, double lo, double hi, int... shape) {
        Tensor t = zeros(shape);
        for (long i = 0; i < t.numel; i++) t.set(i, (float) (lo + (hi - lo) * rng.nextDouble()));
        return t;
    }

    // ---------------------------------------------------------------- shape

    public int[] shape() {
        return shape.clone();
    }

    public int rank() {
        return shape.length;
    }

    /** Size of dimension {@code i}; negative {@code i} counts from the end. */
    public int dim(int i) {
        return shape[i < 0 ? shape.length + i : i];
    }

    public long numel() {
        return numel;
    }

    public DType dtype() {
        return dtype;
    }

    /** The device this tensor's memory is on. */
    public Device device() {
        return device;
    }

    /** The host storage of a CPU tensor, exactly its bytes. */
    public MemorySegment data() {
        return host("data");
    }

    /** The device storage of a non-CPU tensor, exactly its bytes: for that device's kernels. */
    public DeviceMemory memory() {
        if (released) throw releasedError("memory");
        if (memory == null) {
            throw new IllegalStateException("memory: " + describe() + " is on the cpu; its storage is data()");
        }
        return memory;
    }

    /** The host segment, or a clear error for a tensor whose bytes are on another device. */
    private MemorySegment host(String op) {
        if (released) throw releasedError(op);
        if (data == null) {
            throw new IllegalStateException(op + ": " + describe() + " is on " + device
                    + ", whose memory the host cannot read; copy it with .to(Device.CPU) first");
        }
        return data;
    }

    private IllegalStateException releasedError(String op) {
        return new IllegalStateException(op + ": the storage of " + describe() + " is released (a sharded parameter used"
                + " outside its module's forward or backward, when only its piece exists)");
    }

    private String describe() {
        return "tensor " + dtype + shapeString();
    }

    /** Number of rows: the first dimension (1 for a scalar). */
    public int rowCount() {
        return shape.length == 0 ? 1 : shape[0];
    }

    /** Elements per row: the product of all dimensions but the first. */
    public int rowWidth() {
        if (shape.length == 0) return 1;
        long w = 1;
        for (int i = 1; i < shape.length; i++) w *= shape[i];
        return Math.toIntExact(w);
    }

    public boolean sameShape(Tensor o) {
        return Arrays.equals(shape, o.shape);
    }

    public String shapeString() {
        return Arrays.toString(shape);
    }

    /** The same storage seen with another shape (one entry may be -1: inferred). Not differentiable. */
    public Tensor view(int... newShape) {
        int[] s = newShape.clone();
        int infer = -1;
        long known = 1;
        for (int i = 0; i < s.length; i++) {
            if (s[i] == -1) {
                if (infer >= 0) throw new IllegalArgumentException("view: more than one -1 in " + Arrays.toString(newShape));
                infer = i;
            } else {
                known *= s[i];
            }
        }
        if (infer >= 0) {
            if (known == 0 || numel % known != 0) {
                throw new IllegalArgumentException("view: cannot infer -1 in " + Arrays.toString(newShape)
                        + " for " + numel + " elements of shape " + shapeString());
            }
            s[infer] = Math.toIntExact(numel / known);
        }
        if (released) throw releasedError("view");
        if (checkedNumel(s) != numel) {
            throw new IllegalArgumentException("view: shape " + Arrays.toString(newShape) + " does not hold the "
                    + numel + " elements of shape " + shapeString());
        }
        return data != null ? new Tensor(data, dtype, s) : new Tensor(memory, storageOwner, dtype, s);
    }

    /** Rows {@code [start, end)} of the first dimension, sharing storage. Not differentiable. */
    public Tensor rows(int start, int end) {
        if (shape.length == 0) throw new IllegalArgumentException("rows: a scalar has no rows");
        if (released) throw releasedError("rows");
        if (start < 0 || end > shape[0] || start > end) {
            throw new IllegalArgumentException("rows: range [" + start + ", " + end + ") outside [0, " + shape[0]
                    + "] of shape " + shapeString());
        }
        long rowBytes = (long) rowWidth() * dtype.byteSize;
        int[] s = shape.clone();
        s[0] = end - start;
        long offset = start * rowBytes;
        long length = (end - start) * rowBytes;
        return data != null ? new Tensor(data.asSlice(offset, length), dtype, s)
                : new Tensor(memory.slice(offset, length), storageOwner, dtype, s);
    }

    // ---------------------------------------------------------------- element access

    public float get(long i) {
        return host("get").getAtIndex(F32, i);
    }

    public void set(long i, float v) {
        host("set").setAtIndex(F32, i, v);
    }

    public float get(int row, int col) {
        return host("get").getAtIndex(F32, (long) row * rowWidth() + col);
    }

    public void set(int row, int col, float v) {
        host("set").setAtIndex(F32, (long) row * rowWidth() + col, v);
    }

    public int getInt(long i) {
        return host("getInt").getAtIndex(I32, i);
    }

    public void setInt(long i, int v) {
        host("setInt").setAtIndex(I32, i, v);
    }

    /**
     * The single value of a one-element float tensor. On a non-CPU device this is an explicit copy to the
     * host that waits for the device's pending work (a loss, a norm): the one sanctioned scalar read.
     */
    public float item() {
        if (numel != 1) throw new IllegalArgumentException("item: tensor of shape " + shapeString() + " is not one element");
        requireDType(DType.F32, "item");
        if (data == null) return to(Device.CPU).get(0);
        return get(0);
    }

    public float[] toFloatArray() {
        requireDType(DType.F32, "toFloatArray");
        return host("toFloatArray").toArray(F32);
    }

    public double[] toDoubleArray() {
        float[] f = toFloatArray();
        double[] d = new double[f.length];
        for (int i = 0; i < f.length; i++) d[i] = f[i];
        return d;
    }

    public int[] toIntArray() {
        requireDType(DType.I32, "toIntArray");
        return host("toIntArray").toArray(I32);
    }

    /** Sets every element to {@code v}; on a non-CPU device a non-zero value is copied from the host. */
    public void fill(float v) {
        requireDType(DType.F32, "fill");
        if (released) throw releasedError("fill");
        if (data == null) {
            DeviceAllocator allocator = DeviceAllocator.of(device);
            if (v == 0f) {
                allocator.zero(memory);
            } else {
                Tensor values = MemoryScope.persistent(() -> Tensor.zeros(DType.F32, shape));
                values.fill(v);
                allocator.copyFromHost(values.data, memory);
            }
        } else if (v == 0f) {
            data.fill((byte) 0);
        } else {
            for (long i = 0; i < numel; i++) set(i, v);
        }
    }

    /**
     * Copies {@code src}'s elements into this tensor (same dtype and element count), between any two
     * devices: this is also the explicit host ↔ device copy.
     */
    public void copyFrom(Tensor src) {
        if (released) throw releasedError("copyFrom");
        if (src.released) throw src.releasedError("copyFrom");
        if (src.dtype != dtype || src.numel != numel) {
            throw new IllegalArgumentException("copyFrom: " + src.dtype + src.shapeString() + " into " + dtype + shapeString());
        }
        if (data != null && src.data != null) {
            MemorySegment.copy(src.data, 0, data, 0, data.byteSize());
        } else if (src.data != null) {
            DeviceAllocator.of(device).copyFromHost(src.data, memory);
        } else if (data != null) {
            DeviceAllocator.of(src.device).copyToHost(src.memory, data);
        } else if (src.device.equals(device)) {
            DeviceAllocator.of(device).copy(src.memory, memory);
        } else {
            // between two accelerators: through the host, which is correct everywhere (a backend with
            // peer access can offer a direct path later)
            Tensor staging = MemoryScope.persistent(() -> Tensor.zeros(dtype, shape));
            staging.copyFrom(src);
            copyFrom(staging);
        }
    }

    /**
     * This tensor on {@code target}: itself when it is already there, else a copy in the current scope
     * (without autograd history). The explicit way data moves between host and device.
     */
    public Tensor to(Device target) {
        if (target.equals(device)) return this;
        Tensor out = zeros(target, dtype, shape);
        out.copyFrom(this);
        return out;
    }

    /** A copy in the current scope, without autograd history. */
    public Tensor copy() {
        Tensor t = zeros(device, dtype, shape);
        t.copyFrom(this);
        return t;
    }

    public void requireDType(DType expected, String op) {
        if (dtype != expected) {
            throw new IllegalArgumentException(op + ": expected a " + expected + " tensor, got " + dtype + shapeString());
        }
    }

    /** This tensor converted to {@code target} (a new tensor; the same one if the type already matches). */
    public Tensor to(DType target) {
        if (target == dtype) return this;
        host("to(" + target + ")");
        Tensor out = zeros(target, shape);
        out.convertFrom(this);
        return out;
    }

    /**
     * Overwrites this host tensor with {@code src}'s elements converted to this tensor's type (floating
     * types into each other, rounding to nearest even into bf16; integer types into each other). Both
     * must be on the CPU and hold as many elements; devices convert through their element-wise kernels.
     */
    public void convertFrom(Tensor src) {
        host("convertFrom");
        src.host("convertFrom");
        if (src.numel != numel) {
            throw new IllegalArgumentException("convertFrom: " + src.dtype + src.shapeString() + " into " + dtype + shapeString()
                    + ": element counts differ");
        }
        DTypeConversion.convert(src, this);
    }

    // ---------------------------------------------------------------- autograd state

    /**
     * Records that every element of this int32 tensor lies in {@code [0, bound)}, as the kernel that wrote
     * it guarantees (the routing kernels' groupings and top-k picks). Operations that index with it then
     * skip their range check, which on an asynchronous device costs a host synchronisation. Only for a
     * tensor whose values no longer change; views do not inherit the mark. Returns this tensor.
     */
    public Tensor markIndicesBelow(int bound) {
        requireDType(DType.I32, "markIndicesBelow");
        if (bound < 0) throw new IllegalArgumentException("markIndicesBelow: bound must be >= 0, got " + bound);
        indicesBelow = bound;
        return this;
    }

    /** Whether every element is known (see {@link #markIndicesBelow}) to lie in {@code [0, bound)}. */
    public boolean indicesKnownBelow(int bound) {
        return indicesBelow >= 0 && indicesBelow <= bound;
    }

    public boolean requiresGrad() {
        return requiresGrad;
    }

    /** Marks this tensor as a leaf whose gradient is accumulated in {@link #grad()}. */
    public Tensor requiresGrad(boolean value) {
        if (value && !dtype.isFloating()) {
            throw new IllegalArgumentException("only floating tensors can require gradients, not " + dtype);
        }
        this.requiresGrad = value;
        return this;
    }

    /** The accumulated gradient (null before the first); zeros after {@link #zeroGrad} until something is added. */
    public Tensor grad() {
        if (gradZeroPending) {
            gradZeroPending = false;
            grad.fill(0f);
        }
        return grad;
    }

    public void setGrad(Tensor grad) {
        if (grad != null && !grad.sameShape(this)) {
            throw new IllegalArgumentException("gradient of shape " + grad.shapeString() + " for tensor of shape " + shapeString());
        }
        this.grad = grad;
        this.gradZeroPending = false;
    }

    /**
     * Makes the gradient zero without writing it: the first accumulation afterwards overwrites the buffer
     * ({@link #gradToOverwrite}) instead of adding to zeros, and a reader before that sees zeros. Saves a
     * fill and a read of every gradient per training step.
     */
    public void zeroGrad() {
        if (grad != null) gradZeroPending = true;
    }

    /**
     * After {@link #zeroGrad} and before anything was added: the gradient's buffer, which now counts as
     * written (the caller fills it); else null (accumulate into {@link #grad()}).
     */
    public Tensor gradToOverwrite() {
        if (!gradZeroPending) return null;
        gradZeroPending = false;
        return grad;
    }

    public GradFn gradFn() {
        return gradFn;
    }

    /** Records how this tensor was computed; it then requires a gradient. Used by the ops. */
    public void setGradFn(GradFn fn) {
        this.gradFn = fn;
        this.requiresGrad = fn != null;
    }

    /** A leaf is a tensor not computed by a recorded op. */
    /** Whether this tensor's storage can be released and given again ({@link #releasable}: a sharded parameter's whole). */
    public boolean isReleasable() {
        return releasable;
    }

    public boolean isLeaf() {
        return gradFn == null;
    }

    /** The same storage without autograd history. */
    public Tensor detach() {
        if (released) throw releasedError("detach");
        return data != null ? new Tensor(data, dtype, shape) : new Tensor(memory, storageOwner, dtype, shape);
    }

    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder("Tensor(").append(dtype).append(shapeString());
        if (data == null) sb.append(", device=").append(device);
        if (gradFn != null) sb.append(", grad_fn=").append(gradFn.name());
        else if (requiresGrad) sb.append(", requires_grad");
        if (released) sb.append(", released");
        else if (data != null && numel <= 16 && dtype == DType.F32) sb.append(", ").append(Arrays.toString(toFloatArray()));
        else if (data != null && numel <= 16 && dtype == DType.I32) sb.append(", ").append(Arrays.toString(toIntArray()));
        return sb.append(')').toString();
    }
}
