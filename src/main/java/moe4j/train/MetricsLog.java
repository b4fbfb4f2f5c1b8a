package moe4j.train;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One JSON object per step in {@code metrics.jsonl}, flushed at once, so a crash loses at most the last line.
 * Every line names its run ({@code "run"}, a {@link RunId}), so a resumed run never mixes with another's.
 */
public final class MetricsLog implements AutoCloseable {
    private static final Gson GSON = new GsonBuilder().serializeSpecialFloatingPointValues().create();
    private final BufferedWriter out;
    private final Path file;

    private final List<StepMetrics> earlier;
    private final String run;

    /**
     * Opens {@code file} for run {@code run} (a {@link RunId}) whose first step is {@code firstStep}. A fresh
     * run (first step 1) starts an empty file. A resumed run keeps the lines of its own steps before
     * {@code firstStep} and drops the rest: steps that ran after the checkpoint and before an interruption
     * are run again and must not appear twice. If the file holds lines of another run, a resumed run stops
     * before changing it, unless {@code overwrite}: then the file starts afresh at {@code firstStep}.
     */
    public MetricsLog(Path file, long firstStep, String run, boolean overwrite) {
        this.file = file;
        this.run = run;
        try {
            earlier = firstStep > 1 && Files.exists(file) ? readBefore(file, firstStep, run, overwrite) : List.of();
            if (file.getParent() != null) Files.createDirectories(file.getParent());
            out = Files.newBufferedWriter(file, StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                    StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE);
            for (StepMetrics m : earlier) write(m);
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot write metrics file " + file + " (" + Checkpoint.reason(e) + "): choose a writable"
                    + " --output-dir", e);
        }
    }

    /** The steps of an earlier part of this run that the file kept (empty for a fresh run). */
    public List<StepMetrics> earlierSteps() {
        return earlier;
    }

    private static List<StepMetrics> readBefore(Path file, long firstStep, String run, boolean overwrite) throws IOException {
        List<StepMetrics> out = new ArrayList<>();
        for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
            StepMetrics m;
            String lineRun;
            try {
                JsonObject o = JsonParser.parseString(line).getAsJsonObject();
                double[][] load = GSON.fromJson(o.get("expert_load"), double[][].class);
                m = new StepMetrics(o.get("step").getAsLong(), o.get("loss").getAsDouble(), o.get("ce").getAsDouble(),
                        o.get("aux").getAsDouble(), o.get("z").getAsDouble(), o.get("lr").getAsDouble(),
                        o.get("grad_norm").getAsDouble(), o.get("tokens_per_s").getAsDouble(), o.get("step_s").getAsDouble(),
                        load == null ? new double[0][] : load);
                lineRun = o.has("run") ? o.get("run").getAsString() : null;
            } catch (RuntimeException torn) {
                continue; // a line cut short by the interruption
            }
            if (!run.equals(lineRun)) {
                if (overwrite) return List.of();
                throw new IllegalArgumentException("--resume: " + file + " holds metrics of another run (" + (lineRun == null
                        ? "one that recorded no run identity" : lineRun) + "; this run is " + run + "): pass another --output-dir,"
                        + " or --overwrite to replace that file");
            }
            if (m.step() < firstStep) out.add(m);
        }
        return out;
    }

    public Path file() {
        return file;
    }

    public void write(StepMetrics m) {
        Map<String, Object> o = new LinkedHashMap<>();
        o.put("step", m.step());
        o.put("loss", m.loss());
        o.put("ce", m.crossEntropy());
        o.put("aux", m.auxLoss());
        o.put("z", m.zLoss());
        o.put("lr", m.lr());
        o.put("grad_norm", m.gradNorm());
        o.put("tokens_per_s", m.tokensPerSecond());
        o.put("step_s", m.seconds());
        o.put("expert_load", m.expertLoad());
        o.put("run", run);
        try {
            out.write(GSON.toJson(o));
            out.newLine();
            out.flush();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write metrics to " + file, e);
        }
    }

    @Override
    public void close() {
        try {
            out.close();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
