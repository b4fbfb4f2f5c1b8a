package moe4j.kernels.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.util.List;
import java.util.Optional;

/**
 * Opens one of the CUDA shared libraries by its soname through the dynamic loader ({@code dlopen}, so
 * the usual search path, {@code LD_LIBRARY_PATH} and the loader cache apply) and makes downcall
 * handles of its exported symbols. A library that cannot be opened is {@link CudaException#unavailable}.
 */
final class NativeLibrary {
    private static final int RTLD_NOW = 0x2;
    private static final int RTLD_GLOBAL = 0x100;

    final String name;
    final SymbolLookup lookup;
    private final Linker linker = Linker.nativeLinker();

    private NativeLibrary(String name, SymbolLookup lookup) {
        this.name = name;
        this.lookup = lookup;
    }

    /**
     * Opens the first of {@code candidates} that loads (a system property or environment variable may
     * name a path instead; see {@link #configured}); {@code what} names the library in the error.
     */
    static NativeLibrary open(String what, List<String> candidates, String hint) {
        StringBuilder why = new StringBuilder();
        for (String c : candidates) {
            Optional<String> err = dlopenGlobal(c);
            if (err.isEmpty()) return new NativeLibrary(c, SymbolLookup.libraryLookup(c, Arena.global()));
            if (!why.isEmpty()) why.append("; ");
            why.append(err.get());
        }
        throw CudaException.unavailable("cannot load " + what + " (" + String.join(" or ", candidates) + "): " + why
                + (hint.isEmpty() ? "" : ". " + hint), null);
    }

    /** The library path from {@code -Dmoe4j.cuda.<key>} or {@code MOE4J_CUDA_<KEY>}, else {@code defaults}. */
    static List<String> configured(String key, List<String> defaults) {
        String p = System.getProperty("moe4j.cuda." + key);
        if (p == null || p.isBlank()) p = System.getenv("MOE4J_CUDA_" + key.toUpperCase(java.util.Locale.ROOT));
        return p == null || p.isBlank() ? defaults : List.of(p);
    }

    /** {@code dlopen(path, RTLD_NOW | RTLD_GLOBAL)}: empty when it loaded, else dlerror's text. */
    private static Optional<String> dlopenGlobal(String path) {
        Linker linker = Linker.nativeLinker();
        MethodHandle dlopen = linker.downcallHandle(linker.defaultLookup().find("dlopen").orElseThrow(),
                FunctionDescriptor.of(ADDRESS, ADDRESS, JAVA_INT));
        MethodHandle dlerror = linker.downcallHandle(linker.defaultLookup().find("dlerror").orElseThrow(),
                FunctionDescriptor.of(ADDRESS));
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment h = (MemorySegment) dlopen.invokeExact(arena.allocateFrom(path), RTLD_NOW | RTLD_GLOBAL);
            if (!h.equals(MemorySegment.NULL)) return Optional.empty();
            MemorySegment e = (MemorySegment) dlerror.invokeExact();
            return Optional.of(e.equals(MemorySegment.NULL) ? path + ": unknown error" : e.reinterpret(4096).getString(0));
        } catch (Throwable t) {
            return Optional.of(path + ": " + t);
        }
    }

    /** A downcall handle of exported symbol {@code symbol}. */
    MethodHandle function(String symbol, FunctionDescriptor fd) {
        MemorySegment address = lookup.find(symbol).orElseThrow(() -> CudaException.unavailable(
                name + " has no symbol " + symbol + ": the library is older than moe4j needs", null));
        return linker.downcallHandle(address, fd);
    }

    /** A downcall handle of a function pointer obtained elsewhere (cuGetProcAddress). */
    MethodHandle function(MemorySegment address, FunctionDescriptor fd) {
        return linker.downcallHandle(address, fd);
    }

    /** Reads a C string the library owns (error strings); "" for NULL. */
    static String cString(MemorySegment p) {
        return p.equals(MemorySegment.NULL) ? "" : p.reinterpret(4096).getString(0);
    }

    /** Rethrows a downcall's Throwable as unchecked, naming the call. */
    static RuntimeException wrap(String library, String call, Throwable t) {
        if (t instanceof RuntimeException re) return re;
        if (t instanceof Error e) throw e;
        return new CudaException(library + ": calling " + call + " failed", t);
    }
}
