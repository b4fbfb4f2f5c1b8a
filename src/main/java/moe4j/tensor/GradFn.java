package moe4j.tensor;

/**
 * How a tensor was computed, as far as reverse-mode differentiation needs to know: the inputs it was
 * computed from and the rule that turns the gradient of the output into gradients of the inputs.
 * The engine that walks these records lives in {@code moe4j.autograd}; the ops in {@code moe4j.ops}
 * create them.
 */
public interface GradFn {
    /** A short name for error messages and graph dumps, e.g. {@code "matmul"}. */
    String name();

    /** The tensors this output was computed from, in a fixed order. */
    Tensor[] inputs();

    /**
     * The gradients of the inputs, in the order of {@link #inputs()}, given the gradient of the output
     * (same shape as the output, never null). An entry may be null where that input needs no gradient.
     */
    Tensor[] backward(Tensor gradOutput);
}
