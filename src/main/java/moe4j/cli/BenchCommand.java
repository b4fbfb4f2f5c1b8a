package moe4j.cli;

import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/** {@code moe4j bench}: the parent of the benchmarks; each benchmark is a subcommand of its own. */
@Command(
        name = "bench",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Run a benchmark.",
        subcommands = {BenchGemmCommand.class, BenchMoeLayerCommand.class, BenchEpCommand.class, BenchAllToAllCommand.class,
                BenchGenerateCommand.class, BenchAttentionCommand.class})
public final class BenchCommand implements Runnable {
    @Spec
    CommandSpec spec;

    @Override
    public void run() {
        var names = spec.subcommands().keySet();
        throw new ParameterException(spec.commandLine(), names.isEmpty()
                ? "Missing benchmark: none is built in yet"
                : "Missing benchmark: choose one of " + names);
    }
}
