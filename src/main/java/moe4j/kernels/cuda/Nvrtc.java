package moe4j.kernels.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;
import java.util.List;

/** NVRTC ({@code libnvrtc.so.13}), the run-time CUDA C++ compiler, through the FFM API: source in, cubin out. */
public final class Nvrtc {
    static final String LIBRARY = "nvrtc";

    record Entry(String symbol, FunctionDescriptor descriptor) {}

    static final List<Entry> ENTRIES = List.of(
            new Entry("nvrtcVersion", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS)),
            new Entry("nvrtcGetErrorString", FunctionDescriptor.of(ADDRESS, JAVA_INT)),
            // prog*, src, name, numHeaders, headers, includeNames
            new Entry("nvrtcCreateProgram", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, JAVA_INT, ADDRESS, ADDRESS)),
            new Entry("nvrtcCompileProgram", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS)),
            new Entry("nvrtcGetCUBINSize", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS)),
            new Entry("nvrtcGetCUBIN", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS)),
            new Entry("nvrtcGetProgramLogSize", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS)),
            new Entry("nvrtcGetProgramLog", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS)),
            new Entry("nvrtcDestroyProgram", FunctionDescriptor.of(JAVA_INT, ADDRESS)));

    private static volatile Nvrtc instance;

    private final MethodHandle version, errorString, createProgram, compileProgram, cubinSize, cubin, logSize, log, destroyProgram;
    private final String versionString;

    private Nvrtc() {
        NativeLibrary lib = NativeLibrary.open("NVRTC", NativeLibrary.configured("nvrtc", List.of("libnvrtc.so.13", "libnvrtc.so.12")),
                "Install the CUDA toolkit's NVRTC or point MOE4J_CUDA_NVRTC at libnvrtc.so");
        MethodHandle[] h = new MethodHandle[ENTRIES.size()];
        for (int i = 0; i < h.length; i++) h[i] = lib.function(ENTRIES.get(i).symbol(), ENTRIES.get(i).descriptor());
        version = h[0];
        errorString = h[1];
        createProgram = h[2];
        compileProgram = h[3];
        cubinSize = h[4];
        cubin = h[5];
        logSize = h[6];
        log = h[7];
        destroyProgram = h[8];
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment major = arena.allocate(JAVA_INT);
            MemorySegment minor = arena.allocate(JAVA_INT);
            check((int) version.invokeExact(major, minor), "nvrtcVersion");
            versionString = major.get(JAVA_INT, 0) + "." + minor.get(JAVA_INT, 0);
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "nvrtcVersion", t);
        }
    }

    public static Nvrtc get() {
        Nvrtc n = instance;
        if (n != null) return n;
        synchronized (Nvrtc.class) {
            if (instance == null) instance = new Nvrtc();
            return instance;
        }
    }

    public String version() {
        return versionString;
    }

    private void check(int rc, String call) {
        if (rc == 0) return;
        String text;
        try {
            text = NativeLibrary.cString((MemorySegment) errorString.invokeExact(rc));
        } catch (Throwable t) {
            text = "NVRTC error " + rc;
        }
        throw new CudaException(CudaException.callFailed(LIBRARY, call, text, ""));
    }

    /**
     * Compiles {@code source} (named {@code name} in messages) to a cubin for {@code sm_<arch>}; a failed
     * compilation throws with NVRTC's log.
     */
    byte[] compile(String name, String source, int arch, List<String> extraOptions) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment prog = arena.allocate(ADDRESS);
            check((int) createProgram.invokeExact(prog, arena.allocateFrom(source), arena.allocateFrom(name), 0,
                    MemorySegment.NULL, MemorySegment.NULL), "nvrtcCreateProgram(" + name + ")");
            MemorySegment p = prog.get(ADDRESS, 0);
            try {
                List<String> options = new java.util.ArrayList<>(List.of("--gpu-architecture=sm_" + arch, "-std=c++17"));
                options.addAll(extraOptions);
                MemorySegment opts = arena.allocate(ADDRESS, options.size());
                for (int i = 0; i < options.size(); i++) opts.setAtIndex(ADDRESS, i, arena.allocateFrom(options.get(i)));
                int rc = (int) compileProgram.invokeExact(p, options.size(), opts);
                if (rc != 0) {
                    throw new CudaException(CudaException.callFailed(LIBRARY, "nvrtcCompileProgram(" + name + ", sm_" + arch + ")",
                            errorText(rc), "") + "\n" + programLog(arena, p));
                }
                MemorySegment size = arena.allocate(JAVA_LONG);
                check((int) cubinSize.invokeExact(p, size), "nvrtcGetCUBINSize");
                MemorySegment image = arena.allocate(size.get(JAVA_LONG, 0));
                check((int) cubin.invokeExact(p, image), "nvrtcGetCUBIN");
                return image.toArray(JAVA_BYTE);
            } finally {
                int ignored = (int) destroyProgram.invokeExact(prog);
            }
        } catch (Throwable t) {
            throw NativeLibrary.wrap(LIBRARY, "compiling " + name, t);
        }
    }

    private String errorText(int rc) {
        try {
            return NativeLibrary.cString((MemorySegment) errorString.invokeExact(rc));
        } catch (Throwable t) {
            return "NVRTC error " + rc;
        }
    }

    private String programLog(Arena arena, MemorySegment p) throws Throwable {
        MemorySegment size = arena.allocate(JAVA_LONG);
        if ((int) logSize.invokeExact(p, size) != 0) return "(no compiler log)";
        MemorySegment text = arena.allocate(Math.max(1, size.get(JAVA_LONG, 0)));
        if ((int) log.invokeExact(p, text) != 0) return "(no compiler log)";
        return text.getString(0);
    }
}
