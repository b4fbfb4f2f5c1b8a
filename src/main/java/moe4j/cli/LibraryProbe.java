package moe4j.cli;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.util.List;
import java.util.Optional;

/**
 * Whether a native library can be loaded the way its backend will load it: through
 * {@link SymbolLookup#libraryLookup(String, Arena)}, i.e. the system's dynamic loader and its search path,
 * and whether it exports the function the backend needs.
 */
final class LibraryProbe {
    private LibraryProbe() {}

    /** glibc's {@code int dladdr(const void *addr, Dl_info *info)}: which file a loaded symbol came from. */
    private static final MethodHandle DLADDR = Linker.nativeLinker().defaultLookup().find("dladdr")
            .map(s -> Linker.nativeLinker().downcallHandle(s,
                    FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.ADDRESS)))
            .orElse(null);
    /** {@code Dl_info}: dli_fname, dli_fbase, dli_sname, dli_saddr. */
    private static final long DL_INFO_BYTES = 4 * ValueLayout.ADDRESS.byteSize();

    /** The file a library was loaded from, or empty when none of the candidates loads. */
    record Result(Optional<String> path) {
        boolean found() {
            return path.isPresent();
        }
    }

    /**
     * Tries each candidate (a soname or an absolute path) in turn; the first that loads and exports
     * {@code symbol} is reported with the file the loader picked for it.
     */
    static Result probe(List<String> candidates, String symbol) {
        for (String name : candidates) {
            try (Arena arena = Arena.ofConfined()) {
                Optional<MemorySegment> address = SymbolLookup.libraryLookup(name, arena).find(symbol);
                if (address.isPresent()) return new Result(Optional.of(fileOf(address.get(), arena).orElse(name)));
            } catch (IllegalArgumentException notLoadable) {
                // try the next candidate
            }
        }
        return new Result(Optional.empty());
    }

    private static Optional<String> fileOf(MemorySegment symbol, Arena arena) {
        if (DLADDR == null) return Optional.empty();
        try {
            MemorySegment info = arena.allocate(DL_INFO_BYTES);
            if ((int) DLADDR.invokeExact(symbol, info) == 0) return Optional.empty();
            MemorySegment fileName = info.get(ValueLayout.ADDRESS, 0);
            if (fileName.equals(MemorySegment.NULL)) return Optional.empty();
            return Optional.of(fileName.reinterpret(Long.MAX_VALUE).getString(0));
        } catch (Throwable e) {
            return Optional.empty(); // only the path is lost; the library did load
        }
    }
}
