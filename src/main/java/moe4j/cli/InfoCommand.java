package moe4j.cli;

import com.google.gson.GsonBuilder;
import com.google.gson.JsonObject;
import java.io.PrintWriter;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** {@code moe4j info}: what this machine and JVM offer moe4j, and which backends can run here. */
@Command(name = "info", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
        description = "Show the JDK, vector width, cores, heap and the available backends.")
public final class InfoCommand implements Callable<Integer> {
    @Option(names = "--json", description = "Also print everything as one JSON object, on the last line.")
    boolean json;

    @Spec
    CommandSpec spec;

    /** A native backend: the libraries that make it work here, and what to install when none loads. */
    private record NativeBackend(String name, String purpose, List<String> libraries, String symbol, String install) {}

    private static final List<NativeBackend> NATIVE_BACKENDS = List.of(
            new NativeBackend("mpi", "ranks in several processes or machines", List.of("libmpi.so.40"), "MPI_Init",
                    "install Open MPI 4.x, e.g. apt-get install openmpi-bin libopenmpi-dev"),
            new NativeBackend("openblas", "reference GEMM for benchmark comparisons", List.of("libopenblas.so.0"), "cblas_sgemm",
                    "install OpenBLAS, e.g. apt-get install libopenblas0"),
            new NativeBackend("cuda", "GPU kernels",
                    List.of("libcudart.so", "libcudart.so.13", "libcudart.so.12", "/usr/local/cuda/lib64/libcudart.so"),
                    "cudaGetDeviceCount",
                    "install the NVIDIA driver and the CUDA runtime (libcudart)"));

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        JsonObject report = new JsonObject();
        report.addProperty("moe4j", Main.Version.version());

        Runtime.Version version = Runtime.version();
        String vendor = System.getProperty("java.vendor");
        String vm = System.getProperty("java.vm.name");
        out.printf("moe4j     %s%n", Main.Version.version());
        out.printf("java      %s (%s, %s)%n", version, vendor, vm);
        out.printf("java.home %s%n", System.getProperty("java.home"));
        JsonObject java = new JsonObject();
        java.addProperty("version", version.toString());
        java.addProperty("feature", version.feature());
        java.addProperty("vendor", vendor);
        java.addProperty("vm", vm);
        java.addProperty("home", System.getProperty("java.home"));
        report.add("java", java);

        JsonObject vector = new JsonObject();
        try {
            int bits = VectorWidth.bits();
            int lanes = VectorWidth.floatLanes();
            out.printf("vector    FloatVector.SPECIES_PREFERRED: %d bits, %d float lanes%n", bits, lanes);
            vector.addProperty("available", true);
            vector.addProperty("bits", bits);
            vector.addProperty("floatLanes", lanes);
        } catch (NoClassDefFoundError e) {
            out.println("vector    not available: start the JVM with --add-modules jdk.incubator.vector (bin/moe4j does)");
            vector.addProperty("available", false);
        }
        report.add("vector", vector);

        int cores = Runtime.getRuntime().availableProcessors();
        long maxHeap = Runtime.getRuntime().maxMemory();
        out.printf("cores     %d%n", cores);
        out.printf("max heap  %d MiB%n", maxHeap >> 20);
        report.addProperty("cores", cores);
        report.addProperty("maxHeapBytes", maxHeap);

        Map<String, JsonObject> backends = new LinkedHashMap<>();
        out.println("backends");
        out.printf("  %-9s available (in-JVM rank threads)%n", "local");
        JsonObject local = new JsonObject();
        local.addProperty("available", true);
        backends.put("local", local);
        for (NativeBackend b : NATIVE_BACKENDS) {
            LibraryProbe.Result r = LibraryProbe.probe(b.libraries(), b.symbol());
            JsonObject entry = new JsonObject();
            entry.addProperty("available", r.found());
            entry.addProperty("purpose", b.purpose());
            if (r.found()) {
                out.printf("  %-9s available: %s%n", b.name(), r.path().get());
                entry.addProperty("library", r.path().get());
            } else {
                out.printf("  %-9s not found (%s)%n", b.name(), b.install());
                entry.addProperty("install", b.install());
            }
            backends.put(b.name(), entry);
        }
        report.add("gpus", moe4j.bench.CudaInfo.gpus(out));

        JsonObject backendsJson = new JsonObject();
        backends.forEach(backendsJson::add);
        report.add("backends", backendsJson);

        if (json) out.println(new GsonBuilder().disableHtmlEscaping().create().toJson(report));
        out.flush();
        return 0;
    }

    /** Kept apart so that a JVM without the incubator module fails only here, where it is caught. */
    private static final class VectorWidth {
        static int bits() {
            return jdk.incubator.vector.FloatVector.SPECIES_PREFERRED.vectorBitSize();
        }

        static int floatLanes() {
            return jdk.incubator.vector.FloatVector.SPECIES_PREFERRED.length();
        }
    }
}
