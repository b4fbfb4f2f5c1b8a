package moe4j.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.URISyntaxException;
import java.nio.file.Path;
import moe4j.hf.HfCheckpoint;
import moe4j.nn.Generator;
import moe4j.nn.MoETransformer;
import moe4j.text.BpeTokenizer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code moe4j generate} on a tiny Qwen2-MoE folder: the text it prints is the greedy continuation, at EP 1 and 2. */
class GenerateCommandTest {
    record Run(int code, String out, String err) {}

    static Run run(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        var cli = Main.commandLine();
        cli.setOut(new PrintWriter(out));
        cli.setErr(new PrintWriter(err));
        int code = cli.execute(args);
        return new Run(code, out.toString(), err.toString());
    }

    static Path folder() throws URISyntaxException {
        return Path.of(GenerateCommandTest.class.getResource("/moe4j/hf/qwen2_moe").toURI());
    }

    @Test
    void printsTheGreedyContinuationAndTheSpeed() throws Exception {
        String prompt = "Die Größe der Bäume. The quick brown";
        BpeTokenizer tok = BpeTokenizer.load(folder().resolve("tokenizer.json"));
        MoETransformer model = HfCheckpoint.load(folder());
        int[] expected = Generator.generate(model, tok.encode(prompt, true), 8, Generator.Sampling.GREEDY, -1, t -> { }).tokens();
        String continuation = tok.decode(expected);
        for (String ep : new String[] {"1", "2"}) {
            Run r = run("generate", "--model", folder().toString(), "--prompt", prompt, "--max-new-tokens", "8", "--ignore-eos", "--ep", ep);
            assertEquals(0, r.code(), r.err());
            assertTrue(r.out().contains(prompt + continuation), "ep " + ep + ": " + r.out());
            assertTrue(r.out().matches("(?s).*8 new tokens, [0-9.]+ tokens/s decoding.*"), r.out());
        }
    }

    @Test
    void badInputIsOneSentenceAndExitCode2(@TempDir Path empty) throws Exception {
        Run missing = run("generate", "--model", empty.resolve("nope").toString(), "--prompt", "x");
        assertEquals(2, missing.code());
        assertTrue(missing.err().contains("is not a folder"), missing.err());
        Run noConfig = run("generate", "--model", empty.toString(), "--prompt", "x");
        assertEquals(2, noConfig.code());
        Run badEp = run("generate", "--model", folder().toString(), "--prompt", "x", "--ep", "3");
        assertEquals(2, badEp.code());
        assertTrue(badEp.err().contains("--ep 3 must divide the model's 8 experts"), badEp.err());
    }
}
