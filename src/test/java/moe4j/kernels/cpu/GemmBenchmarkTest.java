package moe4j.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

/** The report's arithmetic and table; running the benchmark itself is left to the bench command. */
class GemmBenchmarkTest {
    @Test
    void headlineIsTheLargeForwardShapeAndTableShowsRatios() {
        var gemm = List.of(
                new GemmBenchmark.GemmResult("A·Bᵀ", 1024, 4096, 1024, 50, 100, Double.NaN),
                new GemmBenchmark.GemmResult("A·B", 1024, 4096, 1024, 90, 100, Double.NaN),
                new GemmBenchmark.GemmResult("A·B", 512, 1024, 2816, 80, Double.NaN, Double.NaN));
        var grouped = List.of(new GemmBenchmark.GroupedResult("forward X·W_g", new int[] {1, 2}, 8, 16, 30, 40, Double.NaN));
        var report = new GemmBenchmark.Report(1, "thread CPU time", false, "not installed", null, null, List.of(), null,
                "tile 12x2", 180, gemm, grouped);
        assertEquals(90, report.headlineGflops());
        assertEquals(0.75, grouped.getFirst().ratio(), 1e-12);
        String table = GemmBenchmark.table(report);
        assertTrue(table.contains("1024x4096·4096x1024"), table);
        assertTrue(table.contains(" 90%"), table);
        assertTrue(table.contains(" 75%"), table);
        assertTrue(table.contains("OpenBLAS: not installed"), table);
        assertFalse(table.contains("held back"), table);
        assertTrue(table.contains("180 GFLOP/s (measured by an FMA probe); moe4j's 1024x4096·4096x1024 A·B runs at 50% of it"), table);
    }

    @Test
    void heldBackReferenceIsASecondColumnNamingItsSettings() {
        var gemm = List.of(new GemmBenchmark.GemmResult("A·B", 1024, 4096, 1024, 180, 190, 110.5));
        var grouped = List.of(new GemmBenchmark.GroupedResult("forward X·W_g", new int[] {1, 2}, 8, 16, 150, 160, 99.4));
        var report = new GemmBenchmark.Report(1, "thread CPU time", true, null, "Zen", "OpenBLAS 0.3.21",
                List.of("OPENBLAS_CORETYPE=Haswell"), "Haswell", "tile 12x2", 200, gemm, grouped);
        String table = GemmBenchmark.table(report);
        assertTrue(table.contains("kernel Zen"), table);
        assertTrue(table.contains("OPENBLAS_CORETYPE=Haswell, kernel Haswell"), table);
        assertTrue(table.contains(" 95%      110.5"), table);
        assertTrue(table.contains(" 94%       99.4"), table);
    }
}
