package moe4j.cli;

import java.io.IOException;
import java.io.InputStream;
import java.util.Properties;
import picocli.CommandLine;
import picocli.CommandLine.Command;
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

    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }

    /** The configured command line, for {@link #main} and for tests that run commands in-process. */
    public static CommandLine commandLine() {
        return new CommandLine(new Main()).setExecutionExceptionHandler(Main::reportFailure);
    }

    /**
     * A failed run ends with what went wrong, not a stack trace: bad input, configs, data and checkpoints
     * raise exceptions whose messages say what was expected. MOE4J_DEBUG=1 adds the stack trace.
     */
    private static int reportFailure(Exception e, CommandLine cmd, CommandLine.ParseResult parsed) {
        java.io.PrintWriter err = cmd.getErr();
        StringBuilder what = new StringBuilder();
        java.util.Set<String> seen = new java.util.HashSet<>();
        for (Throwable t = e; t != null; t = t.getCause()) {
            String m = t.getMessage();
            if (m != null && seen.add(m) && (what.isEmpty() || !what.toString().contains(m))) {
                if (!what.isEmpty()) what.append("\n  caused by: ");
                what.append(m);
            }
        }
        err.println("moe4j " + cmd.getCommandName() + ": error: " + (what.isEmpty() ? e.toString() : what));
        if ("1".equals(System.getenv("MOE4J_DEBUG"))) e.printStackTrace(err);
        err.flush();
        return 1;
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
