package moe4j.cli;

import com.google.gson.GsonBuilder;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.launch.Backend;
import moe4j.distributed.mpi.MpiRuntime;
import moe4j.nn.MoEConfig;
import moe4j.nn.RouterKind;
import moe4j.parallel.EpLayerFile;
import moe4j.parallel.EpVerifier.Category;
import moe4j.parallel.EpVerifier.OracleResult;
import moe4j.parallel.EpVerifier.RankRun;
import moe4j.parallel.EpVerifier;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * {@code moe4j verify}: runs an expert-parallel MoE layer on P in-JVM ranks (or, with {@code --backend mpi},
 * on the P processes of an MPI job) and checks it against the per-rank and global oracles
 * ({@link EpVerifier}); with {@code --load}, on a layer and inputs written by PyTorch, with {@code --dump},
 * writes what every rank computed. Exit code 0 only when every check passes.
 */
@Command(name = "verify", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
        description = {"Check expert parallelism against its oracles: EP on P ranks must equal the non-EP layer on each "
                + "rank's tokens (per-rank) and one rank on all tokens (global), outputs and gradients, within a "
                + "norm-wise relative error of 1e-5.",
                "Exit code 0 when every check passes, 1 when one fails, 2 for bad arguments."})
public final class VerifyCommand implements Callable<Integer> {
    @Option(names = "--ep", paramLabel = "P", description = "EP group size: in-JVM ranks (default 2; with --load, the number "
            + "of x.{r}; with --backend mpi, the number of processes, which must equal P)")
    Integer ep;
    @Option(names = "--experts", paramLabel = "E", description = "experts E (default 8)") Integer experts;
    @Option(names = "--top-k", paramLabel = "K", description = "experts per token K (default 2)") Integer topK;
    @Option(names = "--packed", description = "packed (E, D, H) expert weights instead of a list of experts") Boolean packed;
    @Option(names = "--activation", description = "silu (SwiGLU), gelu or relu (default silu; with --load: silu if the "
            + "experts have a gate, else gelu)") String activation;
    @Option(names = "--shared", description = "add a shared expert") Boolean shared;
    @Option(names = "--capacity", paramLabel = "cf", description = "capacity factor, 0 = no limit (default ${DEFAULT-VALUE})")
    double capacity;
    @Option(names = "--gradient-scale", description = "scale expert outputs by avg/n_e") boolean gradientScale;
    @Option(names = "--dedup", description = "the expert-parallel layer sends each token once per rank that owns one of its "
            + "experts (moe_dedup) instead of once per chosen expert") boolean dedup;
    @Option(names = "--tokens", paramLabel = "T", description = "tokens on rank r: T + r, so splits are uneven (default 16)")
    Integer tokens;
    @Option(names = "--dim", paramLabel = "D", description = "model dim D (default 16)") Integer dim;
    @Option(names = "--hidden", paramLabel = "H", description = "expert hidden dim H (default 24)") Integer hidden;
    @Option(names = "--router", description = "softmax_topk or sigmoid_topk (default softmax_topk)") String router;
    @Option(names = "--seed", description = "seed of the layer, inputs and upstream gradients (default ${DEFAULT-VALUE})")
    long seed;
    @Option(names = "--init-std", description = "std of the random weights (default ${DEFAULT-VALUE})") double initStd = 0.5;
    @Option(names = "--load", paramLabel = "FILE", description = "take the layer and per-rank inputs from a safetensors file "
            + "(PyTorch names; see README, 'Verifying expert parallelism')") Path load;
    @Option(names = "--dump", paramLabel = "FILE", description = "write every rank's output and gradients to a safetensors file")
    Path dump;
    @Option(names = "--json", description = "end with one line holding the results as a JSON object") boolean json;
    @Option(names = "--backend", description = "local (ranks are threads of this JVM), mpi (run under "
            + "mpirun/srun with one process per EP rank; --ep defaults to the number of processes, rank 0 prints and dumps), "
            + "nccl (with --device cuda: one rank thread per GPU, rows moved by NCCL) "
            + "or auto (nccl with --device cuda, else mpi when an MPI launcher started this process) (default: local, or nccl "
            + "with --device cuda)") String backend;

    @Option(names = "--device", description = "cpu (the expert-parallel check), cuda[:N] (the layer on one GPU against the "
            + "CPU layer, f32 and bf16) or cuda with --ep P (expert parallelism on P GPUs over NCCL against its oracles) "
            + "(default ${DEFAULT-VALUE})") String device = "cpu";

    @Spec
    CommandSpec spec;

    private String source;
    private List<String> ignored = List.of();

    private Backend parsedBackend = Backend.LOCAL;

    @Override
    public Integer call() throws IOException {
        boolean gpus = !device.equals("cpu");
        try {
            parsedBackend = backend == null ? (gpus ? Backend.NCCL : Backend.LOCAL) : Backend.parse(backend, gpus);
        } catch (IllegalArgumentException e) {
            throw new ParameterException(spec.commandLine(), "verify --backend: " + e.getMessage(), e);
        }
        if (gpus && ep != null) return callOnGpus();
        // one GPU without --ep: the layer on that GPU against the CPU layer, no process group at all
        if (gpus) return CudaVerify.run(spec.commandLine(), device, this);
        if (parsedBackend == Backend.NCCL) {
            throw new ParameterException(spec.commandLine(), "verify --backend nccl: NCCL moves GPU memory; add --device cuda --ep P");
        }
        if (parsedBackend == Backend.MPI) return callMpi();
        EpVerifier.Problem problem = problem(2);
        EpVerifier.Report report = EpVerifier.verify(problem);
        if (dump != null) EpLayerFile.dump(dump, report);
        report(report);
        return report.pass() ? 0 : 1;
    }

    /** Expert parallelism on P GPUs of this machine, one rank thread each, over NCCL; the oracles on the CPU. */
    private int callOnGpus() throws IOException {
        if (!device.equals("cuda")) {
            throw new ParameterException(spec.commandLine(), "verify --ep on GPUs: --device must be cuda (rank r runs on GPU r), got '"
                    + device + "'");
        }
        if (parsedBackend != Backend.NCCL) {
            throw new ParameterException(spec.commandLine(), "verify --device cuda --ep: GPU ranks exchange rows by NCCL: use "
                    + "--backend nccl (or leave --backend out), got " + parsedBackend.name().toLowerCase(Locale.ROOT));
        }
        EpVerifier.Problem problem = problem(2);
        if (Backend.NCCL.oneRankPerProcess()) {
            // one process per GPU under mpirun: each runs its rank on the GPU of its node-local rank; rank 0 checks and prints
            EpVerifier.GroupVerdict verdict = Backend.NCCL.run(problem.ep(), moe4j.distributed.Distributed.configuredTimeout(), world -> {
                EpVerifier.GroupVerdict v = EpVerifier.verify(problem, world, ((moe4j.distributed.nccl.NcclProcessGroup) world).device());
                if (v.report() != null && dump != null) EpLayerFile.dump(dump, v.report());
                return v;
            }).get(0);
            if (verdict.report() != null) report(verdict.report());
            return verdict.pass() ? 0 : 1;
        }
        EpVerifier.Report report = EpVerifier.verifyOnGpus(problem);
        if (dump != null) EpLayerFile.dump(dump, report);
        report(report);
        return report.pass() ? 0 : 1;
    }

    /**
     * Under an MPI launcher: this process is one EP rank. Every rank builds the same problem (from the seed
     * or the file) and runs its share; rank 0 checks, dumps and prints, and every rank exits with the verdict.
     */
    private int callMpi() throws IOException {
        ProcessGroup world = MpiRuntime.init();
        EpVerifier.Problem problem;
        try {
            problem = problem(world.size());
            if (problem.ep() != world.size()) {
                throw new ParameterException(spec.commandLine(), "verify --backend mpi: the job has " + world.size()
                        + " processes but ep is " + problem.ep() + (load != null && ep == null ? " (the ranks x.{r} in " + load + ")" : "")
                        + ": start one process per EP rank (mpirun -np " + problem.ep() + ")");
            }
        } catch (ParameterException e) {
            // every rank has the same arguments and file, so every rank ends here alike: leave MPI cleanly,
            // and let rank 0 alone tell the user why
            int rank = world.rank();
            MpiRuntime.finish();
            if (rank != 0) return 2;
            throw e;
        } catch (IOException | RuntimeException e) {
            MpiRuntime.finish(); // an unreadable or malformed file: each rank reports what it hit
            throw e;
        }
        EpVerifier.GroupVerdict verdict = MpiRuntime.run(group -> {
            EpVerifier.GroupVerdict v = EpVerifier.verify(problem, group);
            // inside the job, so that a failed write ends every rank instead of only rank 0's exit code
            if (v.report() != null && dump != null) EpLayerFile.dump(dump, v.report());
            return v;
        });
        if (verdict.report() != null) report(verdict.report());
        return verdict.pass() ? 0 : 1;
    }

    private void report(EpVerifier.Report report) {
        PrintWriter out = spec.commandLine().getOut();
        print(out, report);
        if (json) out.println(new GsonBuilder().serializeSpecialFloatingPointValues().create().toJson(toJson(report)));
        out.flush();
    }

    /**
     * The problem from the options or the file; any inconsistency is a usage error (exit 2) with the reason.
     * {@code defaultEp}: P when neither --ep nor --load gives it.
     */
    private EpVerifier.Problem problem(int defaultEp) throws IOException {
        try {
            if (dump != null) checkDumpTarget();
            if (topK != null && topK < 1) throw new IllegalArgumentException("--top-k must be >= 1, got " + topK);
            if (experts != null && experts < 1) throw new IllegalArgumentException("--experts must be >= 1, got " + experts);
            if (topK != null && experts != null && topK > experts) {
                throw new IllegalArgumentException("--top-k (" + topK + ") must be <= --experts (" + experts + ")");
            }
            if (load == null && topK != null && experts == null && topK > 8) {
                throw new IllegalArgumentException("--top-k (" + topK + ") must be <= the number of experts (8 unless --experts is given)");
            }
            if (gradientScale && capacity > 0) {
                throw new IllegalArgumentException("--gradient-scale with --capacity leaves no oracle to check: the per-rank "
                        + "oracle needs no gradient scaling, the global one no capacity limit");
            }
            RouterKind routerKind = router == null ? RouterKind.SOFTMAX_TOPK : RouterKind.parse(router);
            if (load != null) {
                if (tokens != null) throw new IllegalArgumentException("--tokens does not go with --load: the token counts come from x.{r}");
                EpLayerFile.Loaded loaded = EpLayerFile.load(load, new EpLayerFile.Options(ep, topK, activation, routerKind, capacity,
                        gradientScale, experts, dim, hidden, packed, shared));
                EpVerifier.Problem p = loaded.problem();
                source = "file " + load + (p.fixedRouting() ? " (fixed routing)" : "") + ", upstream gradient "
                        + (loaded.gradOutGiven() ? "from the file" : "all ones");
                ignored = loaded.ignored();
                return dedup ? deduplicating(p) : p;
            }
            int p = ep == null ? defaultEp : ep;
            int t = tokens == null ? 16 : tokens;
            if (p < 1) throw new IllegalArgumentException("ep must be >= 1, got " + p);
            if (t < 0) throw new IllegalArgumentException("--tokens must be >= 0, got " + t);
            MoEConfig config = MoEConfig.builder(dim == null ? 16 : dim, hidden == null ? 24 : hidden, experts == null ? 8 : experts,
                            topK == null ? 2 : topK)
                    .packed(Boolean.TRUE.equals(packed)).activation(activation == null ? "silu" : activation)
                    .sharedExperts(Boolean.TRUE.equals(shared) ? 1 : 0).capacityFactor(capacity).gradientScale(gradientScale)
                    .router(routerKind).initStd(initStd).seed(seed).build();
            int[] perRank = new int[p];
            for (int r = 0; r < p; r++) perRank[r] = t + r;
            source = "random (seed " + seed + ", init std " + initStd + "), random upstream gradient";
            EpVerifier.Problem seeded = EpVerifier.Problem.seeded(config, p, perRank, seed);
            return dedup ? deduplicating(seeded) : seeded;
        } catch (IllegalArgumentException e) {
            throw new ParameterException(spec.commandLine(), e.getMessage(), e);
        } catch (java.nio.file.NoSuchFileException e) {
            throw new ParameterException(spec.commandLine(), "verify --load: no such file " + load, e);
        }
    }

    /** The same problem, run with the deduplicating dispatch: a strategy of the EP layer, not another function. */
    private static EpVerifier.Problem deduplicating(EpVerifier.Problem p) {
        return new EpVerifier.Problem(p.config().toBuilder().dedup(true).build(), p.ep(), p.x(), p.gradOut(), p.routingWeights(),
                p.routingIndices(), p.parameters());
    }

    /**
     * {@code --dump} must not replace the {@code --load} input, and its folder must exist: found before the
     * run, not as a failed write of a temporary file afterwards.
     */
    private void checkDumpTarget() throws IOException {
        Path target = dump.toAbsolutePath().normalize();
        if (load != null && (target.equals(load.toAbsolutePath().normalize())
                || (java.nio.file.Files.exists(dump) && java.nio.file.Files.exists(load) && java.nio.file.Files.isSameFile(dump, load)))) {
            throw new IllegalArgumentException("--dump " + dump + " is the --load input: it would be overwritten; choose another file");
        }
        Path folder = target.getParent();
        if (folder != null && !java.nio.file.Files.isDirectory(folder)) {
            throw new IllegalArgumentException("--dump " + dump + ": folder " + folder + " does not exist");
        }
        if (java.nio.file.Files.isDirectory(target)) throw new IllegalArgumentException("--dump " + dump + " is a folder, expected a file");
        if (folder != null && !java.nio.file.Files.isWritable(folder)) {
            throw new IllegalArgumentException("--dump " + dump + ": folder " + folder + " is not writable");
        }
    }

    // ------------------------------------------------------------------ report

    private void print(PrintWriter out, EpVerifier.Report report) {
        EpVerifier.Problem p = report.problem();
        MoEConfig c = p.config();
        out.println("moe4j verify: expert parallelism against its oracles");
        out.printf("layer    E=%d K=%d D=%d H=%d activation=%s layout=%s router=%s shared=%s capacity=%s gradient-scale=%s dedup=%s%n",
                c.numExperts(), c.topK(), c.dim(), c.hidden(), c.activation().configName(), c.packed() ? "packed" : "list",
                c.router().configName(), c.sharedExperts() > 0 ? "yes" : "no", c.capacityFactor() > 0 ? c.capacityFactor() : "off",
                c.gradientScale() ? "on" : "off", c.dedup() ? "on" : "off");
        out.printf("inputs   %s%n", source);
        if (!ignored.isEmpty()) out.printf("ignored  tensors not used: %s%n", ignored);
        boolean mpi = parsedBackend == Backend.MPI;
        boolean nccl = parsedBackend == Backend.NCCL;
        out.printf("ranks    P=%d %s, %d experts each, tokens per rank %s%n", p.ep(),
                mpi ? "MPI processes (one rank each)" : nccl && Backend.NCCL.oneRankPerProcess() ? "MPI processes, one GPU each"
                        : nccl ? "in-JVM ranks (threads), one GPU each" : "in-JVM ranks (threads)",
                c.numExperts() / p.ep(), tokensPerRank(p));
        if (nccl) {
            out.printf("device   %s, float32, NCCL process group; %s; oracles on the cpu%n",
                    Backend.NCCL.oneRankPerProcess() ? "the node-local GPU of each process" : "cuda:0.." + (p.ep() - 1),
                    p.fixedRouting() ? "routing fixed by the inputs" : "each GPU routes with the layer's router");
        } else {
            out.printf("device   cpu, float32, %s process group (Java %s, %d cores%s)%n", mpi ? "MPI" : "in-JVM", Runtime.version(),
                    Runtime.getRuntime().availableProcessors(), mpi ? " on rank 0's node" : "");
        }
        out.println();
        out.println("bytes each rank sent to other ranks (token rows forward / backward, per-expert counts)");
        out.printf("%-6s %7s %10s %12s %12s %8s %12s%n", "rank", "tokens", "experts", "forward", "backward", "counts", "total");
        for (RankRun r : report.ranks()) {
            out.printf("%-6d %7d %10s %12d %12d %8d %12d%n", r.rank(), p.tokens(r.rank()),
                    "[" + r.localExpertStart() + "," + (r.localExpertStart() + r.numLocalExperts()) + ")",
                    r.forwardRowBytes(), r.backwardRowBytes(), r.countBytes(), r.bytesSent());
        }
        out.println();
        out.printf("%-9s %-24s %-15s %s%n", "oracle", "category", "max rel. error", "result");
        for (OracleResult o : report.oracles()) {
            if (!o.checked()) {
                out.printf("%-9s %-24s %s%n", o.name(), "(all)", o.skipReason());
                continue;
            }
            for (Category cat : Category.values()) {
                Double err = o.errors().get(cat);
                if (err != null) {
                    out.printf("%-9s %-24s %-15s %s%n", o.name(), cat.label, format(err), EpVerifier.withinTolerance(err) ? "PASS" : "FAIL");
                } else if (o.notApplicable().containsKey(cat)) {
                    out.printf("%-9s %-24s %s%n", o.name(), cat.label, o.notApplicable().get(cat));
                }
            }
        }
        out.println();
        out.printf("RESULT: %s (norm-wise relative error ‖a − b‖/‖b‖ <= %.0e; a zero reference demands an exact zero)%n",
                report.pass() ? "PASS" : "FAIL", EpVerifier.TOLERANCE);
        if (dump != null) out.printf("dumped   every rank's output and gradients to %s%n", dump);
    }

    private static String format(double err) {
        return Double.isFinite(err) ? String.format(Locale.ROOT, "%.3e", err) : Double.toString(err);
    }

    private static List<Integer> tokensPerRank(EpVerifier.Problem p) {
        List<Integer> t = new ArrayList<>();
        for (int r = 0; r < p.ep(); r++) t.add(p.tokens(r));
        return t;
    }

    private Map<String, Object> toJson(EpVerifier.Report report) {
        EpVerifier.Problem p = report.problem();
        MoEConfig c = p.config();
        Map<String, Object> o = new LinkedHashMap<>();
        o.put("command", "verify");
        o.put("pass", report.pass());
        o.put("tolerance", EpVerifier.TOLERANCE);
        Map<String, Object> layer = new LinkedHashMap<>();
        layer.put("experts", c.numExperts());
        layer.put("topK", c.topK());
        layer.put("dim", c.dim());
        layer.put("hidden", c.hidden());
        layer.put("activation", c.activation().configName());
        layer.put("packed", c.packed());
        layer.put("router", c.router().configName());
        layer.put("shared", c.sharedExperts() > 0);
        layer.put("capacityFactor", c.capacityFactor());
        layer.put("gradientScale", c.gradientScale());
        layer.put("dedup", c.dedup());
        o.put("layer", layer);
        o.put("ep", p.ep());
        o.put("backend", parsedBackend.name().toLowerCase(Locale.ROOT));
        o.put("tokensPerRank", tokensPerRank(p));
        o.put("fixedRouting", p.fixedRouting());
        o.put("source", load != null ? load.toString() : "random");
        List<Map<String, Object>> ranks = new ArrayList<>();
        for (RankRun r : report.ranks()) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("rank", r.rank());
            m.put("tokens", p.tokens(r.rank()));
            m.put("localExpertStart", r.localExpertStart());
            m.put("numLocalExperts", r.numLocalExperts());
            m.put("bytesSentForward", r.forwardRowBytes());
            m.put("bytesSentBackward", r.backwardRowBytes());
            m.put("countBytes", r.countBytes());
            m.put("bytesSent", r.bytesSent());
            ranks.add(m);
        }
        o.put("ranks", ranks);
        Map<String, Object> oracles = new LinkedHashMap<>();
        for (OracleResult r : report.oracles()) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("checked", r.checked());
            m.put("pass", r.pass());
            if (!r.checked()) m.put("reason", r.skipReason());
            Map<String, Object> errors = new LinkedHashMap<>();
            r.errors().forEach((cat, err) -> errors.put(cat.label, err));
            if (r.checked()) m.put("errors", errors);
            Map<String, String> na = new LinkedHashMap<>();
            r.notApplicable().forEach((cat, why) -> na.put(cat.label, why));
            if (r.checked() && !na.isEmpty()) m.put("notApplicable", na);
            oracles.put(r.name(), m);
        }
        o.put("oracles", oracles);
        return o;
    }
}
