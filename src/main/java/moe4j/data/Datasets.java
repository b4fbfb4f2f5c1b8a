package moe4j.data;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Opens a {@link TokenSource} from a one-line spec, as given on the command line or in a config:
 * <ul>
 *   <li>{@code synthetic} (also the empty spec): {@link SyntheticTasks};
 *   <li>{@code text:PATH[:sequential]}: {@link ByteText} over a file or a directory of {@code .txt} files;
 *   <li>{@code tokens:PATH[:u16|:u32][:vocab=N][:sequential]}: {@link TokenFile}; width from the
 *       extension and vocabulary from the largest id unless given.
 * </ul>
 * Options are read from the end of the spec, so a path may itself contain colons.
 */
public final class Datasets {
    private Datasets() {}

    /** The accepted forms, for help texts and error messages. */
    public static final String FORMS = "synthetic | text:PATH[:sequential] | tokens:PATH[:u16|:u32][:vocab=N][:sequential]";

    /** The source {@code spec} names, drawing its windows with {@code seed}. */
    public static TokenSource open(String spec, long seed) {
        String s = spec == null ? "" : spec.strip();
        if (s.isEmpty() || s.equals("synthetic")) return new SyntheticTasks(seed);
        int colon = s.indexOf(':');
        String kind = colon < 0 ? s : s.substring(0, colon);
        String rest = colon < 0 ? "" : s.substring(colon + 1);
        return switch (kind) {
            case "text" -> openText(spec, rest, seed);
            case "tokens" -> openTokens(spec, rest, seed);
            case "synthetic" -> throw new IllegalArgumentException("dataset spec '" + spec
                    + "': synthetic takes no options; expected one of " + FORMS);
            default -> throw new IllegalArgumentException("unknown dataset spec '" + spec + "': expected one of " + FORMS);
        };
    }

    private static TokenSource openText(String spec, String rest, long seed) {
        Spec p = Spec.parse(spec, rest);
        if (p.width != null || p.vocab != 0) {
            throw new IllegalArgumentException("dataset spec '" + spec + "': text takes only :sequential (its tokens are bytes)");
        }
        return ByteText.open(Path.of(p.path), seed, p.order);
    }

    private static TokenSource openTokens(String spec, String rest, long seed) {
        Spec p = Spec.parse(spec, rest);
        return TokenFile.open(Path.of(p.path), p.width, p.vocab, seed, p.order);
    }

    /** A path and the options that followed it. */
    private record Spec(String path, TokenFile.Width width, int vocab, WindowOrder order) {
        static Spec parse(String spec, String rest) {
            List<String> parts = new ArrayList<>(List.of(rest.split(":", -1)));
            TokenFile.Width width = null;
            int vocab = 0;
            WindowOrder order = WindowOrder.RANDOM;
            while (parts.size() > 1) {
                String option = parts.getLast().toLowerCase(Locale.ROOT);
                if (option.equals("u16") || option.equals("u32")) {
                    width = TokenFile.Width.valueOf(option.toUpperCase(Locale.ROOT));
                } else if (option.equals("sequential") || option.equals("random")) {
                    order = WindowOrder.valueOf(option.toUpperCase(Locale.ROOT));
                } else if (option.startsWith("vocab=")) {
                    vocab = parseVocab(spec, option.substring("vocab=".length()));
                } else {
                    break;
                }
                parts.removeLast();
            }
            String path = String.join(":", parts);
            if (path.isEmpty()) {
                throw new IllegalArgumentException("dataset spec '" + spec + "' names no path: expected one of " + FORMS);
            }
            return new Spec(path, width, vocab, order);
        }

        private static int parseVocab(String spec, String value) {
            try {
                int v = Integer.parseInt(value);
                if (v >= 1) return v;
            } catch (NumberFormatException e) {
                // reported below
            }
            throw new IllegalArgumentException("dataset spec '" + spec + "': vocab=" + value
                    + " is not a positive integer");
        }
    }
}
