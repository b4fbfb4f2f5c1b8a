package moe4j.cli;

import java.util.Locale;
import java.util.concurrent.Callable;
import moe4j.kernels.AttentionKernels;
import moe4j.kernels.ExecutionContext;
import moe4j.kernels.Kernels;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * {@code moe4j bench attention}: milliseconds and TFLOP/s of the fused causal grouped-query attention,
 * forward and backward, on one device. Each pass is timed from a drained stream to a drained stream
 * ({@link Kernels#synchronize()}), the median of the measured repetitions. FLOPs: 4·hd per visible
 * (query, key) pair per query head and batch row for the forward (Q·Kᵀ and P·V), 2.5 times that for the
 * backward (dV, dP, dQ, dK and the recomputed scores); without a window a row i sees i + 1 keys, so the
 * forward counts 4·hd·Hq·B·S(S+1)/2 ≈ 4·S²·hd·Hq·B/2. Work the backward repeats (the tensor-core backward
 * recomputes the output once for the row sums dO·O) is not counted.
 */
@Command(name = "attention", mixinStandardHelpOptions = true,
        description = "Benchmark causal grouped-query attention forward and backward (ms, TFLOP/s).")
public final class BenchAttentionCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--device", description = "cpu, cuda or cuda:N (default ${DEFAULT-VALUE})") String device = "cuda";
    @Option(names = "--dtype", description = "cuda only: bf16 (tensor cores, fp32 accumulation; head dims 64 and 128) or f32 "
            + "(exact) (default ${DEFAULT-VALUE})") String dtype = "bf16";
    @Option(names = "--batch", description = "batch B (default ${DEFAULT-VALUE})") int batch = 4;
    @Option(names = "--seq", description = "sequence length S (default ${DEFAULT-VALUE})") int seq = 2048;
    @Option(names = "--heads", description = "query heads Hq (default ${DEFAULT-VALUE})") int heads = 16;
    @Option(names = "--kv-heads", description = "key/value heads Hkv, dividing Hq (default ${DEFAULT-VALUE})") int kvHeads = 4;
    @Option(names = "--head-dim", description = "head dimension hd (default ${DEFAULT-VALUE})") int headDim = 128;
    @Option(names = "--window", description = "sliding window, 0 for full causal (default ${DEFAULT-VALUE})") int window = 0;
    @Option(names = "--warmup", description = "unmeasured repetitions (default ${DEFAULT-VALUE})") int warmup = 2;
    @Option(names = "--iters", description = "measured repetitions (default ${DEFAULT-VALUE})") int iters = 10;

    /** Query-key pairs a causal attention over {@code s} positions computes, per query head and batch row. */
    static double visiblePairs(int s, int window) {
        if (window <= 0 || window >= s) return (double) s * (s + 1) / 2;
        // rows i < window see i + 1 keys, the others exactly window
        return (double) window * (window + 1) / 2 + (double) (s - window) * window;
    }

    /** Forward FLOPs: Q·Kᵀ and P·V, 2·hd each per visible pair. */
    static double forwardFlops(int b, int s, int hq, int hd, int window) {
        return 4.0 * hd * hq * b * visiblePairs(s, window);
    }

    /** Backward FLOPs: five products against the forward's two. */
    static double backwardFlops(int b, int s, int hq, int hd, int window) {
        return 2.5 * forwardFlops(b, s, hq, hd, window);
    }

    @Override
    public Integer call() {
        Device dev;
        try {
            dev = Device.parse(device);
        } catch (IllegalArgumentException e) {
            throw new ParameterException(spec.commandLine(), "--device must be cpu, cuda or cuda:N, got '" + device + "'");
        }
        if (!dtype.equals("bf16") && !dtype.equals("f32")) {
            throw new ParameterException(spec.commandLine(), "--dtype must be bf16 or f32, got '" + dtype + "'");
        }
        if (dev.isCpu() && dtype.equals("bf16")) {
            throw new ParameterException(spec.commandLine(), "--dtype bf16 needs a cuda device; the cpu computes in f32 (--dtype f32)");
        }
        positive("--batch", batch);
        positive("--seq", seq);
        positive("--heads", heads);
        positive("--kv-heads", kvHeads);
        positive("--head-dim", headDim);
        positive("--iters", iters);
        if (heads % kvHeads != 0) {
            throw new ParameterException(spec.commandLine(), "--kv-heads " + kvHeads + " must divide --heads " + heads);
        }
        if (window < 0) throw new ParameterException(spec.commandLine(), "--window must be >= 0, got " + window);
        if (warmup < 0) throw new ParameterException(spec.commandLine(), "--warmup must be >= 0, got " + warmup);

        Kernels kernels = Kernels.of(dev);
        AttentionKernels att = kernels.attention();
        Rng rng = new Rng(1);
        Tensor q = Tensor.randn(rng, 1.0, batch, seq, heads, headDim).to(dev);
        Tensor k = Tensor.randn(rng, 1.0, batch, seq, kvHeads, headDim).to(dev);
        Tensor v = Tensor.randn(rng, 1.0, batch, seq, kvHeads, headDim).to(dev);
        Tensor gOut = Tensor.randn(rng, 1.0, batch, seq, heads, headDim).to(dev);
        Tensor saved = Tensor.zeros(dev, DType.F32, att.savedShape(batch, heads, seq));
        Tensor out = Tensor.zerosLike(q), gq = Tensor.zerosLike(q), gk = Tensor.zerosLike(k), gv = Tensor.zerosLike(v);
        double[] fwd = new double[iters], bwd = new double[iters];
        try (var ctx = ExecutionContext.enter(dev, 1, dtype.equals("bf16") ? DType.BF16 : DType.F32)) {
            for (int r = -warmup; r < iters; r++) {
                kernels.synchronize();
                long t0 = System.nanoTime();
                att.causalAttention(q, k, v, 64, window, saved, out);
                kernels.synchronize();
                long t1 = System.nanoTime();
                att.causalAttentionBackward(gOut, q, k, v, out, saved, 64, window, gq, gk, gv);
                kernels.synchronize();
                long t2 = System.nanoTime();
                if (r >= 0) {
                    fwd[r] = (t1 - t0) / 1e6;
                    bwd[r] = (t2 - t1) / 1e6;
                }
            }
        }
        double f = median(fwd), b = median(bwd);
        double ff = forwardFlops(batch, seq, heads, headDim, window), bf = backwardFlops(batch, seq, heads, headDim, window);
        System.out.printf(Locale.ROOT, "attention on %s, %s products: B %d, S %d, Hq %d, Hkv %d, hd %d, window %d (median of %d)%n", dev,
                dtype, batch, seq, heads, kvHeads, headDim, window, iters);
        System.out.printf(Locale.ROOT, "  forward            %9.3f ms  %7.1f TFLOP/s%n", f, ff / (f * 1e9));
        System.out.printf(Locale.ROOT, "  backward           %9.3f ms  %7.1f TFLOP/s%n", b, bf / (b * 1e9));
        System.out.printf(Locale.ROOT, "  forward+backward   %9.3f ms  %7.1f TFLOP/s%n", f + b, (ff + bf) / ((f + b) * 1e9));
        System.out.printf(Locale.ROOT, "  FLOPs: forward 4·hd·Hq·B per visible (query, key) pair = %.3e, backward 2.5× = %.3e%n", ff, bf);
        return 0;
    }

    private void positive(String option, int value) {
        if (value < 1) throw new ParameterException(spec.commandLine(), option + " must be >= 1, got " + value);
    }

    private static double median(double[] xs) {
        double[] s = xs.clone();
        java.util.Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }
}
