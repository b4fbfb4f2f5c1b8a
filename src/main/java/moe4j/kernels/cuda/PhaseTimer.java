package moe4j.kernels.cuda;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Per-phase device time of a stream from CUDA events: {@link #phase} records an event that ends the
 * previous segment and starts one of the named phase; {@link #collect} (after the work) sums the
 * segments per phase. Events are made once and reused, so timing adds no allocation per step.
 */
public final class PhaseTimer {
    private final CudaStream stream;
    private final List<MemorySegment> events = new ArrayList<>();
    private final List<String> phases = new ArrayList<>();
    private final Map<String, Double> totals = new LinkedHashMap<>();
    private int used;

    public PhaseTimer(CudaStream stream) {
        this.stream = stream;
    }

    /** Starts phase {@code name} now (in stream order), ending the running one. */
    public void phase(String name) {
        if (used == events.size()) events.add(stream.newEvent());
        stream.record(events.get(used));
        if (phases.size() > used) phases.set(used, name);
        else phases.add(name);
        used++;
    }

    /** Ends the running phase, waits for the stream and adds this step's segments to the totals. */
    public void collect() {
        phase("");
        stream.driver.synchronizeEvent(events.get(used - 1));
        for (int i = 0; i + 1 < used; i++) {
            double ms = stream.driver.elapsedMillis(events.get(i), events.get(i + 1));
            totals.merge(phases.get(i), ms / 1e3, Double::sum);
        }
        used = 0;
    }

    /** Seconds per phase, summed over the collected steps, in order of first appearance. */
    public Map<String, Double> totals() {
        return totals;
    }

    public void reset() {
        totals.clear();
    }
}
