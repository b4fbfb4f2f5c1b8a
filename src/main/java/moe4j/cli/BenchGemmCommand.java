package moe4j.cli;

import com.google.gson.Gson;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import moe4j.bench.GemmBench;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code moe4j bench gemm}: GFLOP/s of moe4j's GEMM and ragged grouped GEMM next to OpenBLAS, in one run
 * (see {@code moe4j.kernels.cpu.GemmBenchmark} for shapes and method), against the kernel OpenBLAS picks for
 * this CPU even where the environment holds it back (that figure is then a second column). With
 * {@code --min-gflops} it doubles as a check that the JIT compiled the kernel properly: a Vector API
 * kernel stuck in the C1 compiler runs tens of times slower, and the command then exits with status 3
 * (2 is picocli's usage error).
 */
@Command(name = "gemm", mixinStandardHelpOptions = true,
        description = "Benchmark moe4j GEMM and grouped GEMM against OpenBLAS (GFLOP/s).")
public final class BenchGemmCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--threads", description = "threads for both libraries (default: ${DEFAULT-VALUE})")
    int threads = 1;

    @Option(names = "--quick", description = "fewer repetitions: a smoke test")
    boolean quick;

    @Option(names = "--json", description = "end with one line holding all results as a JSON object")
    boolean json;

    @Option(names = "--min-gflops", paramLabel = "X",
            description = "exit with status 3 if moe4j's 1024x4096·4096x1024 GEMM runs below X GFLOP/s")
    double minGflops = 0;

    @Override
    public Integer call() {
        if (threads < 1) throw new CommandLine.ParameterException(spec.commandLine(),
                "--threads must be >= 1, got " + threads);
        GemmBench.Outcome outcome = GemmBench.run(threads, quick);
        System.out.print(outcome.table());
        double headline = outcome.headlineGflops();
        boolean tooSlow = minGflops > 0 && !(headline >= minGflops);
        if (tooSlow) {
            System.err.printf(Locale.ROOT, "moe4j GEMM 1024x4096·4096x1024 ran at %.1f GFLOP/s, below --min-gflops %.1f "
                    + "(is the JIT stuck in C1? run with -XX:-TieredCompilation)%n", headline, minGflops);
        }
        if (json) {
            Map<String, Object> root = new LinkedHashMap<>(outcome.json());
            root.put("belowMinGflops", tooSlow);
            System.out.println(new Gson().toJson(root));
        }
        return tooSlow ? 3 : 0;
    }

    public static void main(String[] args) {
        System.exit(new CommandLine(new BenchGemmCommand()).execute(args));
    }
}
