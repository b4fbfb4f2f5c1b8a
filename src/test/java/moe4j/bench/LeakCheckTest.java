package moe4j.bench;

import static org.junit.jupiter.api.Assertions.*;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * A shorter run of {@link LeakCheck}: memory must stay flat over training steps. Bounds: open-scope
 * bytes return exactly to zero after every step; persistent bytes grow by less than 64 KiB (a leak of
 * one step's gradients would add about 64 KiB per step); RSS, measured in a fresh JVM with a pre-touched
 * fixed heap, grows by less than 4 MiB over 1,500 steps (leaking the step memory would be hundreds of MiB).
 */
class LeakCheckTest {
    @Test
    void scopeAndPersistentMemoryStayFlat() {
        List<LeakCheck.Sample> samples = LeakCheck.run(new LeakCheck.Config(32, 64, 128, 1000, 100, 0.05, 1));
        LeakCheck.Sample first = samples.get(0);
        LeakCheck.Sample last = samples.get(samples.size() - 1);
        assertEquals(1000, last.step());
        assertTrue(first.stepBytes() > 100_000, "a step allocates its activations in its scope: " + first.stepBytes());
        // the first step also makes the weight gradients' inputs to their first accumulation; later steps add
        // their weight gradients straight into the kept buffers
        LeakCheck.Sample second = samples.get(1);
        assertTrue(second.stepBytes() > 100_000 && second.stepBytes() <= first.stepBytes(), second + " against " + first);
        for (LeakCheck.Sample s : samples) {
            assertEquals(0, s.scopedBytes(), "bytes left in open scopes after step " + s.step());
            if (s.step() > 1) assertEquals(second.stepBytes(), s.stepBytes(), "every step after the first allocates the same: step " + s.step());
        }
        assertTrue(last.persistentBytes() - samples.get(1).persistentBytes() < 64 * 1024,
                "persistent memory grew: " + samples.get(1) + " → " + last);
        assertTrue(last.loss() < first.loss() / 10, "the model trains: " + first.loss() + " → " + last.loss());
    }

    @Test
    void residentMemoryStaysFlatInAFreshJvm() throws Exception {
        String java = ProcessHandle.current().info().command().orElseThrow();
        List<String> cmd = new ArrayList<>(List.of(java, "--add-modules", "jdk.incubator.vector",
                "--enable-native-access=ALL-UNNAMED", "-XX:-TieredCompilation",
                "-Xms64m", "-Xmx64m", "-XX:+AlwaysPreTouch",
                "-cp", System.getProperty("java.class.path"), LeakCheck.class.getName(), "2000"));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        List<String> lines = new ArrayList<>();
        try (BufferedReader r = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
            for (String line; (line = r.readLine()) != null; ) lines.add(line);
        }
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "LeakCheck did not finish");
        assertEquals(0, p.exitValue(), String.join("\n", lines));
        // samples every 200 steps: compare step 400 (warmed up) with step 2000
        double rssAt400 = rssMiB(lines, 400);
        double rssAt2000 = rssMiB(lines, 2000);
        assertTrue(rssAt2000 - rssAt400 < 4, "RSS grew from " + rssAt400 + " to " + rssAt2000 + " MiB:\n"
                + String.join("\n", lines));
    }

    private static double rssMiB(List<String> lines, int step) {
        for (String line : lines) {
            String[] f = line.trim().split("\\s+");
            if (f.length > 1 && f[0].equals("step") && f[1].equals(String.valueOf(step))) {
                for (int i = 0; i < f.length - 1; i++) {
                    if (f[i].equals("RSS")) return Double.parseDouble(f[i + 1]);
                }
            }
        }
        throw new AssertionError("no sample for step " + step + " in:\n" + String.join("\n", lines));
    }
}
