package moe4j.ops;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Function;
import java.util.stream.Stream;
import moe4j.autograd.Autograd;
import moe4j.tensor.DType;
import moe4j.tensor.ScopePerTest;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Bad input to every op is an {@link IllegalArgumentException} raised before any memory is touched,
 * whose message names the op and the offending shapes or values.
 */
@ExtendWith(ScopePerTest.class)
class OpsBadInputTest {
    /** A call that must be refused, and the fragments its message must contain. */
    record BadCall(String name, Runnable call, String... fragments) {
        @Override
        public String toString() {
            return name;
        }
    }


    static Tensor f(int... shape) {
        return Tensor.zeros(shape);
    }

    static Tensor i32(int... values) {
        return Tensor.ofInts(values, values.length);
    }

    static Stream<BadCall> badCalls() {
        List<BadCall> c = new ArrayList<>();
        c.add(new BadCall("matmul inner dimensions", () -> Ops.matmul(f(2, 3), f(4, 5)), "matmul", "[2, 3]", "[4, 5]"));
        c.add(new BadCall("matmul transposed inner dimensions", () -> Ops.matmul(f(2, 3), true, f(3, 5), false),
                "matmul", "[2, 3]", "[3, 5]"));
        c.add(new BadCall("matmul of a vector", () -> Ops.matmul(f(3), f(3, 2)), "matmul", "2-D", "[3]"));
        c.add(new BadCall("matmul of int32", () -> Ops.matmul(Tensor.zeros(DType.I32, 2, 2), f(2, 2)), "matmul", "I32"));

        // binary element-wise ops: shapes must match exactly (no broadcasting), both float32
        for (String op : new String[] {"add", "sub", "mul", "swiglu"}) {
            java.util.function.BinaryOperator<Tensor> fn = switch (op) {
                case "add" -> Ops::add;
                case "sub" -> Ops::sub;
                case "mul" -> Ops::mul;
                default -> Ops::swiglu;
            };
            c.add(new BadCall(op + " shapes", () -> fn.apply(f(2, 3), f(3, 2)), op, "[2, 3]", "[3, 2]"));
            c.add(new BadCall(op + " same count, other shape", () -> fn.apply(f(6), f(2, 3)), op, "[6]", "[2, 3]"));
            c.add(new BadCall(op + " int32", () -> fn.apply(f(2), Tensor.zeros(DType.I32, 2)), op, "I32"));
        }
        // unary ops refuse int32 and storage-only types
        List<Function<Tensor, Tensor>> unary = List.of(Ops::silu, Ops::gelu, Ops::relu, Ops::sigmoid, Ops::reciprocal,
                Ops::square, a -> Ops.scale(a, 2), a -> Ops.addScalar(a, 1), Ops::sum, Ops::mean, Ops::softmax,
                Ops::logSoftmax, Ops::logSumExp);
        String[] unaryNames = {"silu", "gelu", "relu", "sigmoid", "reciprocal", "square", "scale", "addScalar", "sum",
            "mean", "softmax", "logSoftmax", "logSumExp"};
        for (int i = 0; i < unary.size(); i++) {
            Function<Tensor, Tensor> fn = unary.get(i);
            c.add(new BadCall(unaryNames[i] + " int32", () -> fn.apply(Tensor.zeros(DType.I32, 2, 3)), unaryNames[i], "I32"));
            c.add(new BadCall(unaryNames[i] + " bf16", () -> fn.apply(Tensor.zeros(DType.BF16, 2, 3)), unaryNames[i], "BF16"));
        }
        c.add(new BadCall("mulRows factor count", () -> Ops.mulRows(f(4, 3), f(3)), "mulRows", "[4, 3]", "[3]"));
        c.add(new BadCall("mulRows int32 factors", () -> Ops.mulRows(f(4, 3), Tensor.zeros(DType.I32, 4)), "mulRows", "I32"));
        c.add(new BadCall("mulColumns factor count", () -> Ops.mulColumns(f(4, 3), f(4)), "mulColumns", "[4, 3]", "[4]"));
        c.add(new BadCall("sum dim out of range", () -> Ops.sum(f(4, 3), 2), "sum", "dim", "2"));
        c.add(new BadCall("sum dim of a 3-D tensor", () -> Ops.sum(f(4, 3, 2), 0), "sum", "2-D", "[4, 3, 2]"));
        c.add(new BadCall("mean dim out of range", () -> Ops.mean(f(4, 3), 2), "mean", "dim", "2", "[4, 3]"));
        c.add(new BadCall("mean dim negative", () -> Ops.mean(f(4, 3), -1), "mean", "dim", "-1"));
        c.add(new BadCall("mean dim of a vector", () -> Ops.mean(f(4), 1), "mean", "[4]"));
        c.add(new BadCall("mean of nothing", () -> Ops.mean(f(0, 3)), "mean", "[0, 3]"));
        c.add(new BadCall("softmax of a scalar", () -> Ops.softmax(f()), "softmax", "scalar"));
        c.add(new BadCall("logSumExp over nothing", () -> Ops.logSumExp(f(3, 0)), "logSumExp", "[3, 0]"));
        c.add(new BadCall("topK k too large", () -> Ops.topK(f(2, 4), 5), "topK", "k = 5", "[2, 4]"));
        c.add(new BadCall("topK k zero", () -> Ops.topK(f(2, 4), 0), "topK", "k = 0"));
        c.add(new BadCall("gatherColumns index out of range", () -> Ops.gatherColumns(f(2, 5), Tensor.ofInts(new int[] {0, 5}, 2, 1)),
                "gatherColumns", "index 5", "[0, 5)"));
        c.add(new BadCall("gatherColumns index rows", () -> Ops.gatherColumns(f(2, 5), Tensor.ofInts(new int[] {0, 1, 2}, 3, 1)),
                "gatherColumns", "[3, 1]", "[2, 5]"));
        c.add(new BadCall("gatherColumns float indices", () -> Ops.gatherColumns(f(2, 5), f(2, 1)), "gatherColumns", "I32", "F32"));
        c.add(new BadCall("indexSelect index too large", () -> Ops.indexSelect(f(3, 2), i32(0, 3)), "indexSelect", "index 3", "[0, 3)"));
        // the fused experts read and write rows through their gather: checked before any device sees it
        c.add(new BadCall("gatedExperts row index too large", () -> GroupedMatmul.gatedExperts(f(4, 2),
                new moe4j.kernels.RowGather(i32(0, 9), i32(0, 1), 1), new int[] {2}, f(1, 2, 3), f(1, 2, 3), f(1, 3, 2)),
                "gatedExperts", "index 9", "[0, 4)"));
        c.add(new BadCall("gatedExperts entry beyond its slots", () -> GroupedMatmul.gatedExperts(f(4, 2),
                new moe4j.kernels.RowGather(i32(0, 1), i32(0, 8), 2), new int[] {2}, f(1, 2, 3), f(1, 2, 3), f(1, 3, 2)),
                "gatedExperts", "index 8", "[0, 8)"));
        c.add(new BadCall("indexSelect negative index", () -> Ops.indexSelect(f(3, 2), i32(-1)), "indexSelect", "index -1"));
        c.add(new BadCall("indexSelect 2-D indices", () -> Ops.indexSelect(f(3, 2), Tensor.ofInts(new int[] {0, 1}, 1, 2)),
                "indexSelect", "1-D", "[1, 2]"));
        c.add(new BadCall("indexSelect float indices", () -> Ops.indexSelect(f(3, 2), f(2)), "indexSelect", "I32"));
        c.add(new BadCall("indexSelect from a scalar", () -> Ops.indexSelect(f(), i32(0)), "indexSelect", "scalar"));
        c.add(new BadCall("weightedCombine entry out of range", () -> Ops.weightedCombine(f(2, 3), f(2, 2), i32(1, 4)),
                "weightedCombine", "index 4", "[0, 4)"));
        c.add(new BadCall("weightedCombine entry twice", () -> Ops.weightedCombine(f(2, 3), f(2, 2), i32(3, 3)),
                "weightedCombine", "entry 3", "twice"));
        c.add(new BadCall("weightedCombine entry count", () -> Ops.weightedCombine(f(3, 3), f(2, 2), i32(0, 1)),
                "weightedCombine", "2 entries", "[3, 3]"));
        c.add(new BadCall("weightedCombine 1-D weights", () -> Ops.weightedCombine(f(2, 3), f(4), i32(0, 1)),
                "weightedCombine", "weights", "[4]"));
        c.add(new BadCall("weightedCombine int32 rows", () -> Ops.weightedCombine(Tensor.zeros(DType.I32, 2, 3), f(2, 2), i32(0, 1)),
                "weightedCombine", "I32"));
        c.add(new BadCall("indexAdd index out of range", () -> Ops.indexAdd(f(3, 2), i32(0, 4), f(2, 2)), "indexAdd", "index 4", "[0, 3)"));
        c.add(new BadCall("indexAdd source rows", () -> Ops.indexAdd(f(3, 2), i32(0, 1), f(3, 2)), "indexAdd", "[3, 2]", "2 rows"));
        c.add(new BadCall("indexAdd source width", () -> Ops.indexAdd(f(3, 2), i32(0, 1), f(2, 3)), "indexAdd", "[2, 3]", "[3, 2]"));
        c.add(new BadCall("indexAdd source row shape", () -> Ops.indexAdd(f(3, 6), i32(0, 1), f(2, 2, 3)),
                "indexAdd", "[2, 2, 3]", "[3, 6]"));
        c.add(new BadCall("indexAdd(n) of a scalar source", () -> Ops.indexAdd(3, i32(0), f()), "indexAdd", "scalar"));
        c.add(new BadCall("indexAdd(n) negative n", () -> Ops.indexAdd(-1, i32(0), f(1, 2)), "indexAdd", "-1"));
        c.add(new BadCall("reshape element count", () -> Ops.reshape(f(5, 7), 6, -1), "reshape", "[5, 7]", "[6, -1]"));
        c.add(new BadCall("concatRows trailing shape", () -> Ops.concatRows(List.of(f(2, 3), f(2, 4))), "concatRows", "[2, 3]", "[2, 4]"));
        c.add(new BadCall("concatRows nothing", () -> Ops.concatRows(List.of()), "concatRows"));
        c.add(new BadCall("concatRows scalars", () -> Ops.concatRows(List.of(f(), f())), "concatRows", "scalar"));
        c.add(new BadCall("splitRows sizes", () -> Ops.splitRows(f(7, 3), 2, 2), "splitRows", "[2, 2]", "7 rows"));
        c.add(new BadCall("splitRows negative size", () -> Ops.splitRows(f(7, 3), 9, -2), "splitRows", "-2"));
        c.add(new BadCall("splitRows of a scalar", () -> Ops.splitRows(f(), 1), "splitRows", "scalar"));
        c.add(new BadCall("embedding id out of range", () -> Ops.embedding(f(10, 4), i32(3, 10)), "embedding", "10", "[0, 10)"));
        c.add(new BadCall("embedding float ids", () -> Ops.embedding(f(10, 4), f(2)), "embedding", "I32"));
        c.add(new BadCall("embedding 1-D weight", () -> Ops.embedding(f(10), i32(1)), "embedding", "2-D", "[10]"));
        c.add(new BadCall("rmsNorm weight size", () -> Ops.rmsNorm(f(2, 4), f(3), 1e-5), "rmsNorm", "[3]", "[2, 4]"));
        c.add(new BadCall("rmsNorm int32 weight", () -> Ops.rmsNorm(f(2, 4), Tensor.zeros(DType.I32, 4), 1e-5), "rmsNorm", "I32"));
        c.add(new BadCall("rmsNorm negative eps", () -> Ops.rmsNorm(f(2, 4), f(4), -1e-5), "rmsNorm", "eps", "-1.0E-5"));
        c.add(new BadCall("rmsNorm NaN eps", () -> Ops.rmsNorm(f(2, 4), f(4), Double.NaN), "rmsNorm", "eps", "NaN"));
        c.add(new BadCall("crossEntropy target out of range", () -> Ops.crossEntropy(f(2, 5), i32(1, 5)),
                "crossEntropy", "target 5", "[0, 5)"));
        c.add(new BadCall("crossEntropy target -2", () -> Ops.crossEntropy(f(2, 5), i32(-2, 0)), "crossEntropy", "target -2"));
        c.add(new BadCall("crossEntropy target count", () -> Ops.crossEntropy(f(2, 5), i32(1, 2, 3)), "crossEntropy", "3", "2"));
        c.add(new BadCall("crossEntropy float targets", () -> Ops.crossEntropy(f(2, 5), f(2)), "crossEntropy", "I32"));
        c.add(new BadCall("backward from a non-scalar", () -> Autograd.backward(Ops.silu(f(2, 2).requiresGrad(true))),
                "backward", "[2, 2]"));
        c.add(new BadCall("backward with a seed of another shape",
                () -> Autograd.backward(Ops.silu(f(2, 2).requiresGrad(true)), f(4)), "backward", "[4]", "[2, 2]"));
        c.add(new BadCall("backward from a constant", () -> Autograd.backward(Ops.sum(f(2))), "backward", "require"));
        return c.stream();
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("badCalls")
    void isRefusedWithAMessageNamingOpAndValues(BadCall bad) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, bad.call::run, bad.name());
        for (String fragment : bad.fragments()) {
            assertTrue(e.getMessage().contains(fragment),
                    bad.name() + ": message '" + e.getMessage() + "' should mention '" + fragment + "'");
        }
    }
}
