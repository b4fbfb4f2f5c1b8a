package moe4j.kernels.cuda;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import moe4j.kernels.KernelTiming;

/**
 * Times every kernel, cuBLAS call, copy and memset a stream runs, by name, with an event before and after
 * each (no synchronisation while the work is queued). Work nested in a timed call (the products of one
 * ragged grouped GEMM) is charged to the outer call. Events are made once and reused between timings.
 */
final class KernelTimer {
    private final CudaStream stream;
    private final List<MemorySegment> events = new ArrayList<>();
    private final List<String> names = new ArrayList<>();
    private int used;
    private int depth;

    KernelTimer(CudaStream stream) {
        this.stream = stream;
    }

    void begin(String name) {
        if (depth++ > 0) return;
        names.add(name);
        record();
    }

    void end() {
        if (--depth > 0) return;
        record();
    }

    private void record() {
        if (used == events.size()) events.add(stream.newEvent());
        stream.record(events.get(used++));
    }

    /** Waits for the last timed call and returns the totals by name; the timer is empty again afterwards. */
    KernelTiming finish() {
        // a call that threw between its two events leaves one unmatched: it is left out
        int calls = used / 2;
        depth = 0;
        if (calls == 0) {
            reset();
            return new KernelTiming(0, List.of());
        }
        stream.driver.synchronizeEvent(events.get(2 * calls - 1));
        Map<String, double[]> totals = new LinkedHashMap<>();
        for (int i = 0; i < calls; i++) {
            double ms = stream.driver.elapsedMillis(events.get(2 * i), events.get(2 * i + 1));
            double[] t = totals.computeIfAbsent(names.get(i), k -> new double[2]);
            t[0]++;
            t[1] += ms / 1e3;
        }
        double span = stream.driver.elapsedMillis(events.get(0), events.get(2 * calls - 1)) / 1e3;
        List<KernelTiming.Entry> entries = new ArrayList<>();
        totals.forEach((name, t) -> entries.add(new KernelTiming.Entry(name, (int) t[0], t[1])));
        entries.sort(Comparator.comparingDouble(KernelTiming.Entry::seconds).reversed());
        reset();
        return new KernelTiming(span, entries);
    }

    private void reset() {
        names.clear();
        used = 0;
    }
}
