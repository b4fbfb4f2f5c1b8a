package moe4j.bench;

import java.io.PrintWriter;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import moe4j.kernels.cuda.CudaMoEBenchmark;
import moe4j.kernels.cuda.CudaMoELayer;
import moe4j.nn.MoEConfig;

/**
 * The command line's entry to the MoE layer on a GPU: {@code moe4j verify --device cuda} (the layer
 * against the CPU layer, f32 and bf16) and {@code moe4j bench moe-layer --device cuda}.
 */
public final class CudaLayerCheck {
    public static final double F32_TOLERANCE = 1e-5;
    public static final double BF16_TOLERANCE = 2e-2;

    private CudaLayerCheck() {}

    /**
     * Compares the cuda layer with the CPU layer for {@code config} (its router), in f32 and bf16, printing
     * every error; true when f32 stays within 1e-5 and bf16 within 2e-2 everywhere.
     */
    public static boolean verify(PrintWriter out, MoEConfig config, int tokens, long seed, int gpu) {
        boolean pass = true;
        for (CudaMoELayer.Precision p : CudaMoELayer.Precision.values()) {
            CudaLayerComparison.Result r = CudaLayerComparison.compare(config, tokens, seed, p, 0.01, 0.001, gpu);
            double tol = p == CudaMoELayer.Precision.F32 ? F32_TOLERANCE : BF16_TOLERANCE;
            boolean ok = r.max() <= tol;
            pass &= ok;
            out.printf(Locale.ROOT, "cuda:%d %s %s D=%d H=%d E=%d K=%d T=%d %s: max error %.2e (tolerance %.0e) %s%n", gpu,
                    config.router(), config.activation().configName(), config.dim(), config.hidden(), config.numExperts(),
                    config.topK(), tokens, p.name().toLowerCase(Locale.ROOT), r.max(), tol, ok ? "PASS" : "FAIL");
            r.errors().forEach((name, v) -> out.printf(Locale.ROOT, "    %-12s %.2e%n", name, v));
            out.printf("    routing      %s%n", r.sameRouting() ? "same experts as the CPU" : "differs from the CPU on some tokens");
        }
        return pass;
    }

    /** What the benchmark printed and its figures for --json. */
    public record BenchOutput(String report, Map<String, Object> json) {}

    /** The forward expert products alone over given group sizes, in each row layout. */
    public static String groupedOnly(MoEConfig config, String dtype, int[] rowsPerExpert, int gpu) {
        CudaMoELayer.Precision precision = dtype.equals("f32") ? CudaMoELayer.Precision.F32 : CudaMoELayer.Precision.BF16;
        StringBuilder sb = new StringBuilder();
        for (CudaMoELayer.RowLayout layout : new CudaMoELayer.RowLayout[] {CudaMoELayer.RowLayout.COMPACT, CudaMoELayer.RowLayout.PADDED,
                CudaMoELayer.RowLayout.BUCKETED, CudaMoELayer.RowLayout.AUTO}) {
            sb.append(CudaMoEBenchmark.report(CudaMoEBenchmark.groupedOnly(CudaLayerComparison.cudaConfig(config), precision,
                    rowsPerExpert, layout, gpu)));
        }
        return sb.toString();
    }

    /** Forward + backward of the layer on GPU {@code gpu}; dtype bf16 or f32, layout auto, compact or padded. */
    public static BenchOutput bench(MoEConfig config, String dtype, String layout, int tokens, int warmup, int iterations, int gpu) {
        CudaMoELayer.Precision precision = switch (dtype) {
            case "bf16" -> CudaMoELayer.Precision.BF16;
            case "f32" -> CudaMoELayer.Precision.F32;
            default -> throw new IllegalArgumentException("--dtype must be bf16 or f32, got '" + dtype + "'");
        };
        CudaMoELayer.RowLayout rowLayout;
        try {
            rowLayout = CudaMoELayer.RowLayout.valueOf(layout.toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--layout must be auto, compact, padded or bucketed, got '" + layout + "'", e);
        }
        CudaMoEBenchmark.Result r = CudaMoEBenchmark.run(CudaLayerComparison.cudaConfig(config), precision, tokens, warmup, iterations,
                gpu, rowLayout);
        Map<String, Object> o = new LinkedHashMap<>();
        o.put("benchmark", "moe-layer");
        o.put("device", "cuda:" + gpu);
        o.put("dtype", dtype);
        o.put("dim", config.dim());
        o.put("hidden", config.hidden());
        o.put("experts", config.numExperts());
        o.put("topK", config.topK());
        o.put("tokens", tokens);
        o.put("medianStepSeconds", r.medianStepSeconds());
        o.put("tflopsPerGpu", r.tflops());
        o.put("expertGemmForwardTflops", r.expertGemmForwardTflops());
        o.put("phaseSeconds", r.phaseSeconds());
        o.put("gemmStrategies", r.gemmStrategies());
        o.put("rowLayout", r.layout());
        o.put("gpu", r.gpu());
        return new BenchOutput(CudaMoEBenchmark.report(r), o);
    }
}
