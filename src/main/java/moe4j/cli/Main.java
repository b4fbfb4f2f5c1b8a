package moe4j.cli;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintWriter;
import java.util.Properties;
import moe4j.distributed.AgreedFailure;
import moe4j.distributed.launch.Backend;
import moe4j.distributed.mpi.MpiRuntime;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/** The {@code moe4j} command: one subcommand per job. */
@Command(
        name = "moe4j",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        description = "Mixture-of-Experts models with expert parallelism on the JVM.",
        subcommands = {TrainCommand.class, GenerateCommand.class, VerifyCommand.class, BenchCommand.class, InfoCommand.class})
public final class Main implements Runnable {
    @Spec
    CommandSpec spec;

    /** Exit code of a successful command. */
    public static final int EXIT_OK = 0;
    /** Exit code of a run that failed (a check failed, training diverged, a write failed mid-run). */
    public static final int EXIT_FAILED = 1;
    /** Exit code of a mistake in what was asked: options, config files, data, checkpoints, folders. */
    public static final int EXIT_USAGE = CommandLine.ExitCode.USAGE;

    @Option(names = "--debug", scope = CommandLine.ScopeType.INHERIT,
            description = "print the stack trace of a failure (also MOE4J_DEBUG=1)")
    boolean debug;

    public static void main(String[] args) {
        // the MPI runtime reports a rank's failure itself, outside picocli
        if (java.util.Arrays.asList(args).contains("--debug")) System.setProperty("moe4j.debug", "true");
        int code;
        try {
            code = commandLine().execute(args);
        } catch (OutOfMemoryError e) {
            // the train command sizes a step before allocating it; this catches what that estimate missed
            System.err.println("moe4j: error: out of memory (" + e.getMessage() + "): lower --batch-size or --seq-len,"
                    + " or give the JVM more memory with MOE4J_JAVA_OPTS=-Xmx...");
            code = EXIT_FAILED;
        }
        System.exit(code);
    }

    /** The configured command line, for {@link #main} and for tests that run commands in-process. */
    public static CommandLine commandLine() {
        return new CommandLine(new Main()).setExecutionExceptionHandler(Main::reportFailure)
                .setParameterExceptionHandler(Main::reportUsageError);
    }

    /** Whether {@code --debug} was given anywhere on the command line, or MOE4J_DEBUG=1 is set. */
    private static boolean debug(CommandLine.ParseResult parsed) {
        for (CommandLine.ParseResult p = parsed; p != null; p = p.subcommand()) {
            if (p.hasMatchedOption("--debug")) return true;
        }
        return "1".equals(System.getenv("MOE4J_DEBUG"));
    }

    /**
     * A wrong option or value: one sentence naming it, exit code 2. Only a command that was given without
     * its subcommand ({@code moe4j}, {@code moe4j bench}) also prints its usage: the list to choose from.
     */
    private static int reportUsageError(ParameterException e, String[] args) {
        CommandLine cmd = e.getCommandLine();
        PrintWriter err = cmd.getErr();
        // every process of an MPI job got the same arguments and the same mistake: rank 0 alone says it, and
        // alone exits with the usage code, which the launcher passes on; another rank exiting non-zero first
        // would make the launcher kill rank 0 before it had said why
        if (Backend.launcherRank() > 0) return 0;
        String name = cmd.getCommandSpec().qualifiedName(" ");
        boolean chooseSubcommand = !cmd.getSubcommands().isEmpty();
        err.println(name + ": error: " + AgreedFailure.messageOf(e) + (chooseSubcommand ? "" : " (see " + name + " --help)"));
        if (chooseSubcommand) cmd.usage(err);
        if (java.util.Arrays.asList(args).contains("--debug") || "1".equals(System.getenv("MOE4J_DEBUG"))) e.printStackTrace(err);
        err.flush();
        return EXIT_USAGE;
    }

    /**
     * A failed run ends with what went wrong on one line, not a stack trace: bad input, configs, data and
     * checkpoints raise exceptions whose messages say what was expected (exit code 2); a run that failed
     * by itself exits with 1. {@code --debug} or MOE4J_DEBUG=1 adds the stack trace.
     */
    private static int reportFailure(Exception e, CommandLine cmd, CommandLine.ParseResult parsed) {
        boolean userError = e instanceof IllegalArgumentException || (e instanceof AgreedFailure a && a.userError())
                || deviceUnavailable(e);
        int code = userError ? EXIT_USAGE : EXIT_FAILED;
        // under MPI every rank of the job got the same agreed failure: rank 0 alone says it
        if (e instanceof AgreedFailure && MpiRuntime.worldRank() > 0) return code;
        // a mistake in the arguments or files, found before MPI started, is the same on every process
        if (e instanceof IllegalArgumentException && MpiRuntime.worldRank() < 0 && Backend.launcherRank() > 0) return code;
        PrintWriter err = cmd.getErr();
        err.println(cmd.getCommandSpec().qualifiedName(" ") + ": error: " + AgreedFailure.messageOf(e));
        if (debug(parsed)) e.printStackTrace(err);
        err.flush();
        return code;
    }

    /** No GPU, driver or CUDA library for a chosen device: a mistake in what was asked of this machine, like a bad option. */
    private static boolean deviceUnavailable(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof moe4j.kernels.DeviceUnavailableException) return true;
        }
        return false;
    }

    @Override
    public void run() {
        throw new ParameterException(spec.commandLine(), "Missing command: choose one of " + spec.subcommands().keySet());
    }

    /** The version Maven recorded in the jar; classes run straight from a build directory have none. */
    static final class Version implements CommandLine.IVersionProvider {
        static final String POM_PROPERTIES = "/META-INF/maven/dev.moe4j/moe4j/pom.properties";

        static String version() {
            try (InputStream in = Main.class.getResourceAsStream(POM_PROPERTIES)) {
                if (in != null) {
                    Properties p = new Properties();
                    p.load(in);
                    String v = p.getProperty("version");
                    if (v != null) return v;
                }
            } catch (IOException e) {
                // fall through: an unreadable manifest only costs the version string
            }
            return "development build";
        }

        @Override
        public String[] getVersion() {
            return new String[] {"moe4j " + version()};
        }
    }
}
