package moe4j.parallel;

import java.time.Duration;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import moe4j.autograd.Autograd;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.MeshSizes;
import moe4j.distributed.Distributed;
import moe4j.distributed.ProcessGroup;
import moe4j.nn.MoEConfig;
import moe4j.nn.MoEMLP;
import moe4j.ops.Ops;
import moe4j.distributed.launch.Backend;
import moe4j.tensor.Device;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * Checks an expert-parallel MoE layer against the two equivalence oracles of docs/EXPERT_PARALLELISM.md, on P in-JVM
 * ranks or on the P processes of a process group (an MPI job), and measures how far apart they are:
 * <ul>
 *   <li><b>per-rank</b>: every rank's output, input gradient and router (and shared-expert) gradient equal
 *       the non-EP layer on that rank's own tokens; expert g's gradient on its owner equals the sum over
 *       ranks of the non-EP gradients of g. Not defined with gradient scaling, which makes each expert's
 *       factor depend on the whole group's counts.</li>
 *   <li><b>global</b>: EP over P ranks equals one rank on all ranks' tokens concatenated; replicated
 *       parameters' gradients summed over ranks equal the global ones, expert gradients on their owner
 *       equal the global ones. Not defined with a capacity limit, which depends on each rank's token count.</li>
 * </ul>
 * Each category's number is the largest norm-wise relative error {@code ‖a − b‖ / ‖b‖} over its tensors;
 * a zero reference demands an exact zero (else the error is infinite), NaN always fails.
 */
public final class EpVerifier {
    private EpVerifier() {}

    /** The bound for float32 rounding differences between EP and the non-EP layer (observed ~1e-7). */
    public static final double TOLERANCE = 1e-5;

    private static final Duration COLLECTIVE_TIMEOUT = Duration.ofSeconds(60);

    /** What is compared, in the order reports list it. */
    public enum Category {
        OUTPUT("output"), INPUT_GRADIENT("input gradient"), ROUTER_GRADIENT("router gradient"),
        SHARED_EXPERT_GRADIENT("shared-expert gradient"), EXPERT_GRADIENTS("expert gradients");

        public final String label;

        Category(String label) {
            this.label = label;
        }

        /** The category of a parameter of the layer, by its name. */
        static Category ofParameter(String name) {
            if (name.startsWith("router.")) return ROUTER_GRADIENT;
            if (name.startsWith("shared_expert.")) return SHARED_EXPERT_GRADIENT;
            return EXPERT_GRADIENTS;
        }
    }

    /**
     * One verification problem.
     *
     * @param config         the layer
     * @param ep             the EP group size P
     * @param x              each rank's tokens {@code (T_r, D)}
     * @param gradOut        each rank's upstream gradient {@code (T_r, D)}
     * @param routingWeights each rank's fixed routing weights {@code (T_r, K)}, or null to use the router
     * @param routingIndices each rank's fixed global expert ids {@code (T_r, K)} int32, or null to use the router
     * @param parameters     every parameter of the (non-EP) layer by name, or null for the layer {@code config.seed()} builds
     */
    public record Problem(MoEConfig config, int ep, List<Tensor> x, List<Tensor> gradOut, List<Tensor> routingWeights,
                          List<Tensor> routingIndices, Map<String, Tensor> parameters) {
        public Problem {
            int e = config.numExperts();
            if (ep < 1) throw new IllegalArgumentException("ep must be >= 1, got " + ep);
            if (e % ep != 0) throw new IllegalArgumentException("num_experts (" + e + ") must be divisible by ep (" + ep + ")");
            if (x.size() != ep || gradOut.size() != ep) {
                throw new IllegalArgumentException("verify: need the inputs and upstream gradients of " + ep + " ranks, got "
                        + x.size() + " and " + gradOut.size());
            }
            if ((routingWeights == null) != (routingIndices == null)) {
                throw new IllegalArgumentException("verify: fixed routing needs both weights and indices");
            }
            for (int r = 0; r < ep; r++) {
                Tensor xr = x.get(r);
                if (xr.rank() != 2 || xr.dim(1) != config.dim()) {
                    throw new IllegalArgumentException("verify: x of rank " + r + " must be (T, " + config.dim() + "), got " + xr.shapeString());
                }
                if (!gradOut.get(r).sameShape(xr)) {
                    throw new IllegalArgumentException("verify: upstream gradient of rank " + r + " must be " + xr.shapeString()
                            + ", got " + gradOut.get(r).shapeString());
                }
            }
        }

        /** Random inputs and upstream gradients from {@code seed}, {@code tokensPerRank[r]} tokens on rank r, the router routing. */
        public static Problem seeded(MoEConfig config, int ep, int[] tokensPerRank, long seed) {
            List<Tensor> x = new ArrayList<>();
            List<Tensor> g = new ArrayList<>();
            for (int r = 0; r < ep; r++) {
                // streams apart from the layer's own (expert g uses stream g, router and shared expert -1, -2)
                x.add(Tensor.randn(Rng.forStream(seed, 1_000_000 + r), 1.0, tokensPerRank[r], config.dim()));
                g.add(Tensor.randn(Rng.forStream(seed, 2_000_000 + r), 1.0, tokensPerRank[r], config.dim()));
            }
            return new Problem(config, ep, x, g, null, null, null);
        }

        /** This problem with the routing its CPU router picks on each rank's tokens, fixed. */
        Problem routedOnCpu() {
            MoEMLP layer = newLayer();
            List<Tensor> weights = new ArrayList<>();
            List<Tensor> indices = new ArrayList<>();
            for (Tensor xr : x) {
                moe4j.nn.RouterOutput out = layer.router().route(xr);
                weights.add(out.weights().detach());
                indices.add(out.indices());
            }
            return new Problem(config, ep, x, gradOut, weights, indices, parameters);
        }

        /** This problem with rank {@code r}'s inputs, upstream gradient and routing on {@code device} (the others as they are). */
        Problem on(int r, Device device) {
            List<Tensor> xs = new ArrayList<>(x);
            List<Tensor> gs = new ArrayList<>(gradOut);
            xs.set(r, x.get(r).to(device));
            gs.set(r, gradOut.get(r).to(device));
            List<Tensor> ws = null;
            List<Tensor> is = null;
            if (fixedRouting()) {
                ws = new ArrayList<>(routingWeights);
                is = new ArrayList<>(routingIndices);
                ws.set(r, routingWeights.get(r).to(device));
                is.set(r, routingIndices.get(r).to(device));
            }
            return new Problem(config, ep, xs, gs, ws, is, parameters);
        }

        public boolean fixedRouting() {
            return routingIndices != null;
        }

        public int tokens(int rank) {
            return x.get(rank).dim(0);
        }

        /** A fresh non-EP layer with this problem's weights. */
        MoEMLP newLayer() {
            MoEMLP moe = MoEMLP.build(config);
            if (parameters != null) {
                moe.namedParameters().forEach((name, t) -> {
                    Tensor src = parameters.get(name);
                    if (src == null) throw new IllegalArgumentException("verify: no value for parameter '" + name + "'");
                    if (!src.sameShape(t)) {
                        throw new IllegalArgumentException("verify: parameter '" + name + "' must be " + t.shapeString()
                                + ", got " + src.shapeString());
                    }
                    t.copyFrom(src);
                });
            }
            return moe;
        }
    }

    /** Values with their shape, copied out of a rank's tensors (to the host) so they outlive its memory scopes. */
    public record Values(int[] shape, double[] data) {
        static Values of(Tensor t) {
            return new Values(t.shape(), t.to(moe4j.tensor.Device.CPU).toDoubleArray());
        }

        public Tensor toTensor() {
            return Tensor.of(data, shape);
        }
    }

    /**
     * What one rank computed: its output, input gradient and parameter gradients under its own parameter
     * names (a rank holds only its experts), and the bytes it sent to other ranks (token rows and counts,
     * forward and backward).
     */
    public record RankRun(int rank, int localExpertStart, int numLocalExperts, Values out, Values gradX,
                          Map<String, Values> grads, long forwardRowBytes, long backwardRowBytes, long countBytes) {
        public long bytesSent() {
            return forwardRowBytes + backwardRowBytes + countBytes;
        }
    }

    /**
     * One oracle's verdict: skipped (with the reason), or the largest relative error per category; a
     * category absent from {@code errors} does not apply (with the reason in {@code notApplicable}).
     */
    public record OracleResult(String name, String skipReason, Map<Category, Double> errors, Map<Category, String> notApplicable) {
        public boolean checked() {
            return skipReason == null;
        }

        public boolean pass() {
            return !checked() || errors.values().stream().allMatch(EpVerifier::withinTolerance);
        }
    }

    public record Report(Problem problem, List<RankRun> ranks, List<OracleResult> oracles) {
        /** Every checked category of every oracle is within the tolerance, and at least one oracle ran. */
        public boolean pass() {
            return oracles.stream().anyMatch(OracleResult::checked) && oracles.stream().allMatch(OracleResult::pass);
        }
    }

    public static boolean withinTolerance(double error) {
        return error <= TOLERANCE; // false for NaN
    }

    /** Runs the EP layer on {@code problem.ep()} in-JVM ranks and both oracles. */
    public static Report verify(Problem problem) {
        return check(problem, runExpertParallel(problem));
    }

    /**
     * What one rank of a process group learns from {@link #verify(Problem, ProcessGroup)}: the verdict
     * on every rank, the report on rank 0 only (null elsewhere).
     */
    public record GroupVerdict(boolean pass, Report report) {}

    /**
     * Verifies with this process group as the EP group, one rank per member (an MPI job: one process
     * each); a collective over {@code group}, which every rank calls with the same problem. Each rank runs
     * its own share of the EP layer; rank 0 gathers every rank's output and gradients, runs both
     * oracles as {@link #verify(Problem)} does and tells every rank the verdict.
     */
    public static GroupVerdict verify(Problem problem, ProcessGroup group) {
        return verify(problem, group, Device.CPU);
    }

    /**
     * {@link #verify(Problem, ProcessGroup)} with this rank's share of the layer on {@code device} (one
     * process per GPU under an MPI launcher, the group moving rows by NCCL); the oracles run on rank 0's CPU.
     */
    public static GroupVerdict verify(Problem problem, ProcessGroup group, Device device) {
        if (group.size() != problem.ep()) {
            throw new IllegalArgumentException("verify: the process group '" + group.name() + "' has " + group.size()
                    + " ranks but the problem is for ep=" + problem.ep() + ": start one process per EP rank");
        }
        List<RankRun> ranks = RankRunExchange.allGather(group, runRank(problem, group, device));
        Report report = group.rank() == 0 ? check(problem, ranks) : null;
        Tensor verdict = Tensor.ofInts(new int[] {report != null && report.pass() ? 1 : 0}, 1, 1);
        group.broadcast(verdict, 0);
        return new GroupVerdict(verdict.getInt(0) == 1, report);
    }

    /** Both oracles on what the ranks computed. */
    private static Report check(Problem problem, List<RankRun> ranks) {
        List<OracleResult> oracles = new ArrayList<>();
        oracles.add(problem.config().gradientScale()
                ? skipped("per-rank", "n/a (gradient scaling changes per-rank counts)")
                : perRankOracle(problem, ranks));
        oracles.add(problem.config().capacityFactor() > 0
                ? skipped("global", "n/a (capacity depends on the per-rank token count)")
                : globalOracle(problem, ranks));
        return new Report(problem, ranks, oracles);
    }

    /**
     * Runs the EP layer on {@code problem.ep()} GPUs of this machine, one rank thread each, the rows moving
     * GPU to GPU by NCCL, and both oracles on the CPU (the non-EP layer in float64-checked float32 there).
     * Each GPU routes its tokens with the layer's own router, as the CPU reference does, unless the problem
     * fixes the routing (then neither side's router takes part).
     */
    public static Report verifyOnGpus(Problem problem) {
        List<RankRun> ranks = Backend.NCCL.run(problem.ep(), COLLECTIVE_TIMEOUT,
                world -> runRank(problem, world, Device.cuda(world.rank())));
        return check(problem, ranks);
    }

    // ------------------------------------------------------------------ running

    static List<RankRun> runExpertParallel(Problem problem) {
        return Distributed.run(problem.ep(), COLLECTIVE_TIMEOUT, world -> runRank(problem, world));
    }

    /** This rank's share of the EP layer, {@code world} being the EP group ({@code problem.ep()} ranks). */
    private static RankRun runRank(Problem problem, ProcessGroup world) {
        return runRank(problem, world, Device.CPU);
    }

    /** As above, with the layer's parameters and the rank's inputs on {@code device}. */
    private static RankRun runRank(Problem problem, ProcessGroup world, Device device) {
        MoEMLP moe = problem.newLayer();
        ExpertParallel.apply(moe, DeviceMesh.create(world, MeshSizes.defaults().ep(problem.ep())));
        if (!device.isCpu()) {
            moe.to(device);
            problem = problem.on(world.rank(), device);
        }
        TrafficCountingGroup traffic = ExpertParallel.countTraffic(moe);
        int r = world.rank();
        TrafficCountingGroup counted = traffic;
        long[] forwardBytes = new long[1];
        Problem mine = problem;
        Forward f = run(moe, mine, r, () -> forwardBytes[0] = counted == null ? 0 : counted.rowBytes());
        long rowBytes = traffic == null ? 0 : traffic.rowBytes();
        return new RankRun(r, moe.localExpertStart(), moe.numLocalExperts(), f.out, f.gradX, f.grads, forwardBytes[0],
                rowBytes - forwardBytes[0], traffic == null ? 0 : traffic.countBytes());
    }

    private record Forward(Values out, Values gradX, Map<String, Values> grads) {}

    /** Forward (router or fixed routing) and backward of rank {@code r}'s inputs through {@code moe}. */
    private static Forward run(MoEMLP moe, Problem problem, int r, Runnable afterForward) {
        return run(moe, problem.x().get(r), problem.gradOut().get(r),
                problem.fixedRouting() ? problem.routingWeights().get(r) : null,
                problem.fixedRouting() ? problem.routingIndices().get(r) : null, afterForward);
    }

    private static Forward run(MoEMLP moe, Tensor xValues, Tensor gradOut, Tensor weights, Tensor indices, Runnable afterForward) {
        Tensor x = xValues.copy().requiresGrad(true);
        Tensor out = weights == null ? moe.forward(x) : moe.forwardWithRouting(x, weights, indices);
        afterForward.run();
        Values outValues = Values.of(out);
        Autograd.backward(out, gradOut);
        Map<String, Values> grads = new LinkedHashMap<>();
        moe.namedParameters().forEach((name, t) -> {
            // with fixed routing the router is not part of the graph: it has no gradient
            if (t.grad() != null) grads.put(name, Values.of(t.grad()));
        });
        return new Forward(outValues, Values.of(x.grad()), grads);
    }

    /** The non-EP layer on the given tokens. */
    private static Forward reference(Problem problem, Tensor x, Tensor gradOut, Tensor weights, Tensor indices) {
        return run(problem.newLayer(), x, gradOut, weights, indices, () -> {});
    }

    // ------------------------------------------------------------------ oracles

    private static OracleResult skipped(String name, String reason) {
        return new OracleResult(name, reason, Map.of(), Map.of());
    }

    static OracleResult perRankOracle(Problem problem, List<RankRun> ranks) {
        Errors errors = new Errors(problem);
        Map<String, double[]> summedExpertGrads = new LinkedHashMap<>();
        for (RankRun run : ranks) {
            int r = run.rank();
            Forward ref = reference(problem, problem.x().get(r), problem.gradOut().get(r),
                    problem.fixedRouting() ? problem.routingWeights().get(r) : null,
                    problem.fixedRouting() ? problem.routingIndices().get(r) : null);
            errors.add(Category.OUTPUT, run.out().data(), ref.out.data());
            errors.add(Category.INPUT_GRADIENT, run.gradX().data(), ref.gradX.data());
            run.grads().forEach((name, g) -> {
                Category c = Category.ofParameter(name);
                if (c != Category.EXPERT_GRADIENTS) errors.add(c, g.data(), ref.grads.get(name).data());
            });
            ref.grads.forEach((name, g) -> {
                if (Category.ofParameter(name) == Category.EXPERT_GRADIENTS) summedExpertGrads.merge(name, g.data().clone(), EpVerifier::addInto);
            });
        }
        compareExpertGradients(problem, ranks, summedExpertGrads, errors);
        return errors.result("per-rank");
    }

    static OracleResult globalOracle(Problem problem, List<RankRun> ranks) {
        Tensor weights = problem.fixedRouting() ? Ops.concatRows(problem.routingWeights()) : null;
        Tensor indices = problem.fixedRouting() ? concatInts(problem.routingIndices()) : null;
        Forward ref = reference(problem, Ops.concatRows(problem.x()), Ops.concatRows(problem.gradOut()), weights, indices);
        Errors errors = new Errors(problem);
        int d = problem.config().dim();
        int offset = 0;
        Map<String, double[]> replicatedSum = new LinkedHashMap<>();
        for (RankRun run : ranks) {
            int n = problem.tokens(run.rank()) * d;
            errors.add(Category.OUTPUT, run.out().data(), slice(ref.out.data(), offset, n));
            errors.add(Category.INPUT_GRADIENT, run.gradX().data(), slice(ref.gradX.data(), offset, n));
            offset += n;
            run.grads().forEach((name, g) -> {
                if (Category.ofParameter(name) != Category.EXPERT_GRADIENTS) replicatedSum.merge(name, g.data().clone(), EpVerifier::addInto);
            });
        }
        replicatedSum.forEach((name, g) -> errors.add(Category.ofParameter(name), g, ref.grads.get(name).data()));
        Map<String, double[]> expertRef = new LinkedHashMap<>();
        ref.grads.forEach((name, g) -> expertRef.put(name, g.data()));
        compareExpertGradients(problem, ranks, expertRef, errors);
        return errors.result("global");
    }

    /** Each owner's expert gradients against {@code reference}'s gradients of the same global experts. */
    private static void compareExpertGradients(Problem problem, List<RankRun> ranks, Map<String, double[]> reference, Errors errors) {
        int e = problem.config().numExperts();
        int compared = 0;
        for (RankRun run : ranks) {
            for (var entry : run.grads().entrySet()) {
                String name = entry.getKey();
                Values g = entry.getValue();
                if (Category.ofParameter(name) != Category.EXPERT_GRADIENTS) continue;
                compared++;
                double[] full = reference.get(name);
                double[] expected = name.startsWith("experts.")
                        ? full // list layout: named by global index on every rank
                        : slice(full, run.localExpertStart() * (full.length / e), run.numLocalExperts() * (full.length / e));
                errors.add(Category.EXPERT_GRADIENTS, g.data(), expected);
            }
        }
        // every expert weight must be held (and have a gradient) on exactly one rank
        int perExpert = problem.config().activation().gated() ? 3 : 2;
        int expected = problem.config().packed() ? perExpert * ranks.size() : perExpert * e;
        if (compared != expected) errors.worst.put(Category.EXPERT_GRADIENTS, Double.POSITIVE_INFINITY);
    }

    /** The worst error seen per category. */
    private static final class Errors {
        private final Map<Category, Double> worst = new EnumMap<>(Category.class);
        private final Map<Category, String> notApplicable = new EnumMap<>(Category.class);

        Errors(Problem problem) {
            if (problem.fixedRouting()) notApplicable.put(Category.ROUTER_GRADIENT, "n/a (fixed routing)");
            if (problem.config().sharedExperts() == 0) notApplicable.put(Category.SHARED_EXPERT_GRADIENT, "n/a (no shared expert)");
        }

        void add(Category c, double[] actual, double[] expected) {
            double err = relativeError(actual, expected);
            worst.merge(c, err, EpVerifier::worse);
        }

        OracleResult result(String name) {
            return new OracleResult(name, null, worst, notApplicable);
        }
    }

    /** {@code ‖a − b‖ / ‖b‖}; for a zero reference 0 if {@code a} is exactly zero too, else infinity. NaN stays NaN. */
    public static double relativeError(double[] a, double[] b) {
        if (a.length != b.length) return Double.POSITIVE_INFINITY;
        double diff = 0;
        double norm = 0;
        boolean exactZero = true;
        for (int i = 0; i < a.length; i++) {
            double d = a[i] - b[i];
            diff += d * d;
            norm += b[i] * b[i];
            if (a[i] != 0) exactZero = false;
        }
        if (Double.isNaN(diff) || Double.isNaN(norm)) return Double.NaN;
        if (norm == 0) return exactZero ? 0 : Double.POSITIVE_INFINITY;
        return Math.sqrt(diff) / Math.sqrt(norm);
    }

    /** The larger error, NaN counting as the worst. */
    static double worse(double a, double b) {
        if (Double.isNaN(a) || Double.isNaN(b)) return Double.NaN;
        return Math.max(a, b);
    }

    private static Tensor concatInts(List<Tensor> parts) {
        int k = parts.getFirst().dim(1);
        int rows = 0;
        for (Tensor t : parts) rows += t.dim(0);
        int[] all = new int[rows * k];
        int at = 0;
        for (Tensor t : parts) {
            int[] v = t.toIntArray();
            System.arraycopy(v, 0, all, at, v.length);
            at += v.length;
        }
        return Tensor.ofInts(all, rows, k);
    }

    private static double[] slice(double[] a, int from, int n) {
        double[] out = new double[n];
        System.arraycopy(a, from, out, 0, n);
        return out;
    }

    private static double[] addInto(double[] a, double[] b) {
        for (int i = 0; i < a.length; i++) a[i] += b[i];
        return a;
    }
}
