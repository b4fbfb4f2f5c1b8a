package moe4j.distributed.mpi;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import moe4j.autograd.Autograd;
import moe4j.distributed.CollectiveException;
import moe4j.distributed.Distributed;
import moe4j.distributed.DeviceMesh;
import moe4j.distributed.ProcessGroup;
import moe4j.distributed.ReduceOp;
import moe4j.distributed.Work;
import moe4j.distributed.MeshSizes;
import moe4j.nn.MoEConfig;
import moe4j.nn.MoEMLP;
import moe4j.parallel.EpVerifier;
import moe4j.parallel.ExpertParallel;
import moe4j.tensor.DType;
import moe4j.tensor.MemoryScope;
import moe4j.tensor.Rng;
import moe4j.tensor.Tensor;

/**
 * Checks every collective of the MPI backend against references computed locally; each process of
 * an {@code mpirun} job runs it ({@code scripts/mpi-tests.sh}). Rank 0 prints one line per check and
 * then {@code N passed, M failed}; the exit status is non-zero when any check failed on any rank.
 *
 * <p>With argument {@code stall} or {@code throw}, world rank 1 instead stops taking part (sleeps) or
 * throws before an all-to-all, to show that the job ends within the collective deadline.
 */
public final class MpiCollectivesCheck {
    private final ProcessGroup world;
    private final List<String> failures = new ArrayList<>();
    private final List<String> lines = new ArrayList<>();

    private MpiCollectivesCheck(ProcessGroup world) {
        this.world = world;
    }

    public static void main(String[] args) {
        String mode = args.length > 0 ? args[0] : "check";
        int failed = MpiRuntime.run(world -> switch (mode) {
            case "check" -> new MpiCollectivesCheck(world).runAll();
            case "stall", "throw" -> failureScenario(world, mode);
            default -> throw new IllegalArgumentException("unknown mode '" + mode + "', expected check, stall or throw");
        });
        System.exit(failed == 0 ? 0 : 1);
    }

    /** Rank 1 stops taking part in (or fails before) the second all-to-all; the others wait in it. */
    private static int failureScenario(ProcessGroup world, String mode) throws InterruptedException {
        try (MemoryScope ignored = MemoryScope.open()) {
            int p = world.size();
            int[] ones = new int[p];
            Arrays.fill(ones, 1);
            Tensor in = Tensor.zeros(p, 4);
            Tensor out = Tensor.zeros(p, 4);
            world.allToAllSingle(out, in, ones, ones);
            if (world.rank() == 1) {
                if (mode.equals("throw")) throw new IllegalStateException("rank 1 fails on purpose");
                Thread.sleep(Long.MAX_VALUE);
            }
            world.allToAllSingle(out, in, ones, ones);
        }
        return 1; // not reached: the job is aborted
    }

    private int runAll() {
        int p = world.size();
        try (MemoryScope ignored = MemoryScope.open()) {
            for (DType dtype : new DType[] {DType.F32, DType.I32}) {
                for (int seed = 0; seed < 3; seed++) allToAllSingle(world, dtype, seed, false);
                allToAllSingle(world, dtype, 7, true);
            }
            allToAllInts(world);
            twoAsyncAllToAllsInFlight(world);
            for (ReduceOp op : ReduceOp.values()) {
                for (int n : new int[] {1, 3, 1000, 100_003}) allReduce(world, DType.F32, op, n);
                if (op != ReduceOp.AVG) allReduce(world, DType.I32, op, 1001);
            }
            reduceScatter(world, DType.F32, ReduceOp.SUM);
            reduceScatter(world, DType.I32, ReduceOp.MAX);
            allGather(world, DType.F32);
            allGather(world, DType.I32);
            for (int root = 0; root < p; root++) broadcast(world, root);
            world.barrier();
            record("barrier", true, "");
            subGroups(world);
            if (p == 4) mesh(world);
            expertParallel(world);
            verifier(world);
            mismatchedSplits(world);
        }
        int passed = lines.size() - failures.size();
        // every rank's failures count: sum them over the world
        int[] counts = world.allToAll(repeat(failures.size(), p), 1);
        int totalFailed = Arrays.stream(counts).sum();
        if (world.rank() == 0) {
            for (String line : lines) System.out.println(line);
            System.out.printf("%d passed, %d failed%n", passed, totalFailed);
            System.out.flush();
        } else {
            for (String f : failures) System.out.println("rank " + world.rank() + ": " + f);
        }
        return totalFailed;
    }

    private static int[] repeat(int v, int n) {
        int[] a = new int[n];
        Arrays.fill(a, v);
        return a;
    }

    private void record(String check, boolean ok, String detail) {
        String line = (ok ? "PASS " : "FAIL ") + check + (ok || detail.isEmpty() ? "" : ": " + detail);
        lines.add(line);
        if (!ok) failures.add(line);
    }

    // ---------------------------------------------------------------- references

    /** The value at element (row, col) of rank {@code rank}'s input: exact in float32 and int32. */
    private static int value(int rank, int row, int col) {
        return rank * 100_000 + row * 100 + col % 100;
    }

    private static Tensor filled(DType dtype, int rank, int rows, int width) {
        Tensor t = Tensor.zeros(dtype, rows, width);
        for (int i = 0; i < rows; i++) {
            for (int c = 0; c < width; c++) {
                if (dtype == DType.F32) t.set((long) i * width + c, value(rank, i, c));
                else t.setInt((long) i * width + c, value(rank, i, c));
            }
        }
        return t;
    }

    private static int sum(int[] a) {
        return Arrays.stream(a).sum();
    }

    /** Rows rank s sends to rank r: uneven, with zeros; with {@code large}, some 1 MiB rows. */
    private static int[][] splitMatrix(int p, int seed) {
        int[][] s = new int[p][p];
        for (int a = 0; a < p; a++) {
            for (int b = 0; b < p; b++) s[a][b] = (a * 7 + b * 3 + seed) % 4;
        }
        return s;
    }

    // ---------------------------------------------------------------- checks

    private void allToAllSingle(ProcessGroup g, DType dtype, int seed, boolean async) {
        int p = g.size();
        int r = g.rank();
        int[][] splits = splitMatrix(p, seed);
        int width = async ? 1 << 18 : 3 + seed;
        int[] inSplits = splits[r];
        int[] outSplits = new int[p];
        for (int s = 0; s < p; s++) outSplits[s] = splits[s][r];
        Tensor in = filled(dtype, r, sum(inSplits), width);
        Tensor out = Tensor.zeros(dtype, sum(outSplits), width);
        if (async) {
            Work w = g.allToAllSingleAsync(out, in, outSplits, inSplits);
            w.await();
        } else {
            g.allToAllSingle(out, in, outSplits, inSplits);
        }
        // expected: from each sender s in order, the rows s addressed to r
        Tensor expected = Tensor.zeros(dtype, sum(outSplits), width);
        int row = 0;
        for (int s = 0; s < p; s++) {
            int first = 0;
            for (int q = 0; q < r; q++) first += splits[s][q];
            for (int i = 0; i < splits[s][r]; i++, row++) {
                for (int c = 0; c < width; c++) {
                    long at = (long) row * width + c;
                    if (dtype == DType.F32) expected.set(at, value(s, first + i, c));
                    else expected.setInt(at, value(s, first + i, c));
                }
            }
        }
        long mismatch = expected.data().mismatch(out.data());
        record("allToAllSingle" + (async ? "Async" : "") + " " + dtype + " seed " + seed + " width " + width + " on "
                + g.name(), mismatch == -1, "rank " + r + " first differing byte " + mismatch);
    }

    /** Two asynchronous all-to-alls in flight at once, polled, then completed by a blocking collective. */
    private void twoAsyncAllToAllsInFlight(ProcessGroup g) {
        int p = g.size();
        int[] ones = new int[p];
        Arrays.fill(ones, 1);
        int[] twos = new int[p];
        Arrays.fill(twos, 2);
        Tensor a = filled(DType.F32, g.rank(), p, 1000);
        Tensor b = filled(DType.I32, g.rank(), 2 * p, 3);
        Tensor aOut = Tensor.zeros(DType.F32, p, 1000);
        Tensor bOut = Tensor.zeros(DType.I32, 2 * p, 3);
        Work first = g.allToAllSingleAsync(aOut, a, ones, ones);
        Work second = g.allToAllSingleAsync(bOut, b, twos, twos);
        boolean polled = first.isDone() | second.isDone(); // polling never blocks; either answer is fine
        g.barrier(); // starts after both ended
        boolean ok = first.isDone() && second.isDone();
        for (int s = 0; s < p && ok; s++) {
            for (int c = 0; c < 1000; c++) ok &= aOut.get((long) s * 1000 + c) == value(s, g.rank(), c);
            for (int i = 0; i < 2; i++) {
                for (int c = 0; c < 3; c++) ok &= bOut.getInt((long) (2 * s + i) * 3 + c) == value(s, 2 * g.rank() + i, c);
            }
        }
        second.await();
        first.await();
        record("two async allToAllSingle in flight, completed by a barrier (polled early: " + polled + ") on "
                + g.name(), ok, "rank " + g.rank());
    }

    private void allToAllInts(ProcessGroup g) {
        int p = g.size();
        int chunk = 3;
        int[] send = new int[p * chunk];
        for (int j = 0; j < p; j++) for (int c = 0; c < chunk; c++) send[j * chunk + c] = g.rank() * 1000 + j * 10 + c;
        int[] got = g.allToAll(send, chunk);
        int[] expected = new int[p * chunk];
        for (int s = 0; s < p; s++) for (int c = 0; c < chunk; c++) expected[s * chunk + c] = s * 1000 + g.rank() * 10 + c;
        record("allToAll ints chunk " + chunk + " on " + g.name(), Arrays.equals(got, expected),
                "rank " + g.rank() + " got " + Arrays.toString(got));
    }

    /** Rank r's input element i, fractional so that the summation order shows in the bits. */
    private static float reduceInput(int r, long i) {
        return (float) Math.sin(r * 1.37 + i * 0.011) * (1 + r) / 3f;
    }

    private void allReduce(ProcessGroup g, DType dtype, ReduceOp op, int n) {
        int p = g.size();
        Tensor t = Tensor.zeros(dtype, n);
        for (int i = 0; i < n; i++) {
            if (dtype == DType.F32) t.set(i, reduceInput(g.rank(), i));
            else t.setInt(i, (g.rank() * 31 + i * 7) % 1000 - 500);
        }
        g.allReduce(t, op);
        // reference: rank order, in float32 arithmetic, as the contract says: bit-exact
        long bad = -1;
        for (int i = 0; i < n && bad < 0; i++) {
            if (dtype == DType.F32) {
                float acc = reduceInput(0, i);
                for (int r = 1; r < p; r++) acc = op == ReduceOp.MAX ? Math.max(acc, reduceInput(r, i)) : acc + reduceInput(r, i);
                if (op == ReduceOp.AVG) acc /= p;
                if (Float.floatToRawIntBits(acc) != Float.floatToRawIntBits(t.get(i))) bad = i;
            } else {
                int acc = (i * 7) % 1000 - 500;
                for (int r = 1; r < p; r++) {
                    int v = (r * 31 + i * 7) % 1000 - 500;
                    acc = op == ReduceOp.MAX ? Math.max(acc, v) : acc + v;
                }
                if (acc != t.getInt(i)) bad = i;
            }
        }
        record("allReduce " + op + " " + dtype + " n=" + n + " on " + g.name() + " (bit-exact, rank order)", bad < 0,
                "rank " + g.rank() + " element " + bad);
    }

    private void reduceScatter(ProcessGroup g, DType dtype, ReduceOp op) {
        int p = g.size();
        int rows = 5;
        int width = 7;
        Tensor in = filled(dtype, g.rank(), p * rows, width);
        Tensor out = Tensor.zeros(dtype, rows, width);
        g.reduceScatter(out, in, op);
        boolean ok = true;
        for (int i = 0; i < rows && ok; i++) {
            for (int c = 0; c < width; c++) {
                long acc = value(0, g.rank() * rows + i, c);
                for (int r = 1; r < p; r++) {
                    long v = value(r, g.rank() * rows + i, c);
                    acc = op == ReduceOp.MAX ? Math.max(acc, v) : acc + v;
                }
                long at = (long) i * width + c;
                double got = dtype == DType.F32 ? out.get(at) : out.getInt(at);
                if (got != acc) ok = false;
            }
        }
        record("reduceScatter " + op + " " + dtype + " on " + g.name(), ok, "rank " + g.rank());
    }

    private void allGather(ProcessGroup g, DType dtype) {
        int p = g.size();
        int width = 5;
        int[] rows = new int[p];
        for (int r = 0; r < p; r++) rows[r] = r % 3; // uneven, with zeros
        Tensor in = filled(dtype, g.rank(), rows[g.rank()], width);
        Tensor out = Tensor.zeros(dtype, sum(rows), width);
        g.allGather(out, in);
        Tensor asyncOut = Tensor.zeros(dtype, sum(rows), width);
        g.allGatherAsync(asyncOut, in).await();
        boolean ok = asyncOut.data().mismatch(out.data()) == -1;
        int row = 0;
        for (int r = 0; r < p; r++) {
            for (int i = 0; i < rows[r]; i++, row++) {
                for (int c = 0; c < width; c++) {
                    long at = (long) row * width + c;
                    double got = dtype == DType.F32 ? out.get(at) : out.getInt(at);
                    if (got != value(r, i, c)) ok = false;
                }
            }
        }
        record("allGather uneven rows " + dtype + " on " + g.name(), ok, "rank " + g.rank());
    }

    private void broadcast(ProcessGroup g, int root) {
        Tensor t = g.rank() == root ? filled(DType.F32, root, 4, 6) : Tensor.zeros(4, 6);
        g.broadcast(t, root);
        Tensor expected = filled(DType.F32, root, 4, 6);
        record("broadcast from root " + root + " on " + g.name(), expected.data().mismatch(t.data()) == -1,
                "rank " + g.rank());
    }

    /** Even and odd world ranks in two groups (keys reversed), one rank left out when the world is odd-sized... */
    private void subGroups(ProcessGroup g) {
        int p = g.size();
        int color = g.rank() % 2;
        ProcessGroup sub = g.split(color, -g.rank(), "parity" + color);
        int[] expectedMembers = java.util.stream.IntStream.range(0, p).filter(r -> r % 2 == color).boxed()
                .sorted((a, b) -> Integer.compare(b, a)).mapToInt(Integer::intValue).toArray();
        record("split parity" + color + " members", Arrays.equals(sub.globalRanks(), expectedMembers)
                && expectedMembers[sub.rank()] == g.rank(), "rank " + g.rank() + " got " + Arrays.toString(sub.globalRanks()));
        allToAllSingle(sub, DType.F32, 1, false);
        allReduce(sub, DType.F32, ReduceOp.SUM, 999);
        ProcessGroup none = g.split(g.rank() == 0 ? -1 : 0, 0, "all-but-0");
        record("split negative color gives null on rank 0", (g.rank() == 0) == (none == null), "rank " + g.rank());
        if (none != null) allReduce(none, DType.I32, ReduceOp.SUM, 10);
    }

    private void mesh(ProcessGroup g) {
        DeviceMesh mesh = DeviceMesh.create(g, MeshSizes.defaults().ep(2));
        ProcessGroup ep = mesh.get("ep").group();
        int expectedFirst = g.rank() / 2 * 2;
        record("mesh ep group of rank " + g.rank(), Arrays.equals(ep.globalRanks(), new int[] {expectedFirst, expectedFirst + 1}),
                Arrays.toString(ep.globalRanks()));
        allToAllSingle(ep, DType.I32, 2, false);
    }

    /** One rank's expert-parallel forward and backward: output, input gradient, every parameter gradient. */
    private static List<float[]> epStep(ProcessGroup g, MoEConfig config, long seed) {
        int p = g.size();
        int r = g.rank();
        MoEMLP moe = MoEMLP.build(config);
        ExpertParallel.apply(moe, DeviceMesh.create(g, MeshSizes.defaults().ep(p)));
        int tokens = 6 + 3 * r; // uneven
        Tensor x = Tensor.randn(Rng.forStream(seed, r), 1.0, tokens, config.dim()).requiresGrad(true);
        Tensor gradOut = Tensor.randn(Rng.forStream(seed + 1, r), 1.0, tokens, config.dim());
        Tensor out = moe.forward(x);
        Autograd.backward(out, gradOut);
        List<float[]> result = new ArrayList<>();
        result.add(out.toFloatArray());
        result.add(x.grad().toFloatArray());
        moe.namedParameters().forEach((n, t) -> result.add(t.grad().toFloatArray()));
        return result;
    }

    /**
     * Expert parallelism over the MPI world, unchanged, against the same job on the in-JVM backend
     * (run here, P threads): every output and gradient must have the same bits.
     */
    private void expertParallel(ProcessGroup g) {
        MoEConfig config = MoEConfig.builder(8, 6, 2 * g.size(), 2).initStd(0.5).seed(11).build();
        List<float[]> mpi = epStep(g, config, 123);
        List<float[]> local = Distributed.run(g.size(), java.time.Duration.ofSeconds(60),
                w -> epStep(w, config, 123)).get(g.rank());
        boolean same = mpi.size() == local.size();
        for (int i = 0; same && i < mpi.size(); i++) same = Arrays.equals(mpi.get(i), local.get(i));
        record("expert parallelism (E=2P, K=2, uneven tokens) on MPI equals the in-JVM backend bit for bit, rank "
                + g.rank(), same, "outputs or gradients differ");
    }

    /**
     * {@code moe4j verify}'s checks with the MPI world as the EP group, on the layouts and options that
     * change what travels (list and packed experts, a shared expert, a capacity limit, gradient scaling):
     * every rank must get a pass, and rank 0's report must equal the same problem's report on P in-JVM
     * ranks (run here). A layer with a NaN weight must fail on every rank; a world of the wrong size is an
     * error on every rank before anything travels.
     */
    private void verifier(ProcessGroup g) {
        int p = g.size();
        int[] tokens = new int[p];
        for (int r = 0; r < p; r++) tokens[r] = 5 + 2 * r;
        Map<String, MoEConfig> configs = new LinkedHashMap<>();
        configs.put("list", verifyConfig(p).build());
        configs.put("packed, shared", verifyConfig(p).packed(true).sharedExperts(1).build());
        configs.put("list, shared, capacity 1.0", verifyConfig(p).sharedExperts(1).capacityFactor(1.0).build());
        configs.put("packed, gelu, gradient scale", verifyConfig(p).packed(true).activation("gelu").gradientScale(true).build());
        for (var c : configs.entrySet()) {
            EpVerifier.Problem problem = EpVerifier.Problem.seeded(c.getValue(), p, tokens, 5);
            EpVerifier.GroupVerdict v = EpVerifier.verify(problem, g);
            record("verify (" + c.getKey() + ") passes on MPI, rank " + g.rank(), v.pass() && (v.report() != null) == (g.rank() == 0),
                    "pass " + v.pass() + ", " + (v.report() == null ? "no report" : "a report") + " on this rank");
            if (g.rank() == 0) {
                String diff = reportDifference(v.report(), EpVerifier.verify(problem));
                record("verify (" + c.getKey() + ") on MPI reports what P in-JVM ranks report", diff.isEmpty(), diff);
            }
        }

        MoEConfig config = configs.get("list");
        Map<String, Tensor> parameters = new LinkedHashMap<>();
        MoEMLP.build(config).namedParameters().forEach((name, t) -> parameters.put(name, t.copy()));
        parameters.get("experts." + (config.numExperts() - 1) + ".down_proj.weight").set(0, Float.NaN); // the last rank's
        EpVerifier.Problem seeded = EpVerifier.Problem.seeded(config, p, tokens, 5);
        EpVerifier.Problem nan = new EpVerifier.Problem(config, p, seeded.x(), seeded.gradOut(), null, null, parameters);
        record("verify of a layer with a NaN weight fails on every rank, rank " + g.rank(), !EpVerifier.verify(nan, g).pass(), "");

        if (p == 1) return;
        EpVerifier.Problem oneRank = EpVerifier.Problem.seeded(config, 1, new int[] {5}, 5);
        String message = null;
        try {
            EpVerifier.verify(oneRank, g);
        } catch (IllegalArgumentException e) {
            message = e.getMessage();
        }
        record("verify with ep=1 on a world of " + p + " is an error, rank " + g.rank(),
                message != null && message.contains("has " + p + " ranks but the problem is for ep=1"), String.valueOf(message));
    }

    private static MoEConfig.Builder verifyConfig(int p) {
        return MoEConfig.builder(8, 6, 2 * p, 2).initStd(0.5).seed(17);
    }

    /** Where two reports differ ("" when they agree): the oracles' numbers, and every rank's values and traffic. */
    private static String reportDifference(EpVerifier.Report mpi, EpVerifier.Report local) {
        if (!mpi.oracles().equals(local.oracles())) return "oracles " + mpi.oracles() + " vs " + local.oracles();
        if (mpi.ranks().size() != local.ranks().size()) return "ranks " + mpi.ranks().size() + " vs " + local.ranks().size();
        for (int r = 0; r < mpi.ranks().size(); r++) {
            EpVerifier.RankRun a = mpi.ranks().get(r);
            EpVerifier.RankRun b = local.ranks().get(r);
            boolean same = a.rank() == b.rank() && a.localExpertStart() == b.localExpertStart()
                    && a.numLocalExperts() == b.numLocalExperts() && a.forwardRowBytes() == b.forwardRowBytes()
                    && a.backwardRowBytes() == b.backwardRowBytes() && a.countBytes() == b.countBytes()
                    && sameValues(a.out(), b.out()) && sameValues(a.gradX(), b.gradX())
                    && a.grads().keySet().equals(b.grads().keySet());
            for (String name : a.grads().keySet()) same = same && sameValues(a.grads().get(name), b.grads().get(name));
            if (!same) return "rank " + r + "'s run differs";
        }
        return "";
    }

    private static boolean sameValues(EpVerifier.Values a, EpVerifier.Values b) {
        return b != null && Arrays.equals(a.shape(), b.shape()) && Arrays.equals(a.data(), b.data());
    }

    /** Rank 0 expects one row too many from rank 1: both see CollectiveException before any data move. */
    private void mismatchedSplits(ProcessGroup g) {
        int p = g.size();
        if (p < 2) return;
        ProcessGroup pair = g.split(g.rank() < 2 ? 0 : -1, g.rank(), "pair");
        if (pair == null) {
            record("mismatched splits (not in the pair)", true, "");
            return;
        }
        Tensor in = Tensor.zeros(2, 3);
        int[] inSplits = {1, 1};
        int[] outSplits = pair.rank() == 0 ? new int[] {1, 2} : new int[] {1, 1};
        Tensor out = Tensor.zeros(sum(outSplits), 3);
        String message = null;
        try {
            pair.allToAllSingle(out, in, outSplits, inSplits);
        } catch (CollectiveException e) {
            message = e.getMessage();
        }
        // every rank gathers all splits, so the sender fails alike instead of waiting for the receiver
        record("mismatched splits raise CollectiveException naming the collective on pair rank " + pair.rank(),
                message != null && message.contains("allToAllSingle") && message.contains("rank 1 sends 1 rows to rank 0"),
                String.valueOf(message));
    }
}
