package moe4j.kernels;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import moe4j.ops.Ops;
import moe4j.tensor.Device;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

/** Which tensors a step may keep operand copies of: parameters, not a sharded parameter's releasable whole. */
class MatmulKernelsTest {
    @Test
    void parametersAreLeavesThatRequireAGradientAndKeepTheirStorage() {
        Tensor w = Tensor.zeros(4).requiresGrad(true);
        assertTrue(MatmulKernels.isParameter(w));
        assertFalse(MatmulKernels.isParameter(Tensor.zeros(4)), "no gradient");
        assertFalse(MatmulKernels.isParameter(Ops.add(w, w)), "not a leaf");
        assertFalse(MatmulKernels.isParameter(Tensor.releasable(Device.CPU, 4).requiresGrad(true)), "storage released between uses");
    }
}
