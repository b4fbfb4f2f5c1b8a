package moe4j.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

/** The report's arithmetic and table; running the benchmark itself is left to the bench command. */
class GemmBenchmarkTest {
    @Test
    void headlineIsTheLargeForwardShapeAndTableShowsRatios() {
        var gemm = List.of(
                new GemmBenchmark.GemmResult("A·Bᵀ", 1024, 4096, 1024, 50, 100),
                new GemmBenchmark.GemmResult("A·B", 1024, 4096, 1024, 90, 100),
                new GemmBenchmark.GemmResult("A·B", 512, 1024, 2816, 80, Double.NaN));
        var grouped = List.of(new GemmBenchmark.GroupedResult("forward X·W_g", new int[] {1, 2}, 8, 16, 30, 40));
        var report = new GemmBenchmark.Report(1, "thread CPU time", false, "not installed", gemm, grouped);
        assertEquals(90, report.headlineGflops());
        assertEquals(0.75, grouped.getFirst().ratio(), 1e-12);
        String table = GemmBenchmark.table(report);
        assertTrue(table.contains("1024x4096·4096x1024"), table);
        assertTrue(table.contains(" 90%"), table);
        assertTrue(table.contains(" 75%"), table);
        assertTrue(table.contains("OpenBLAS: not installed"), table);
    }
}
