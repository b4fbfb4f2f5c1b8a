package moe4j.cli;

import java.io.PrintWriter;
import moe4j.bench.CudaLayerCheck;
import moe4j.nn.MoEConfig;
import moe4j.nn.RouterKind;
import picocli.CommandLine;
import picocli.CommandLine.ParameterException;

/**
 * {@code moe4j verify --device cuda[:N]}: the MoE layer on one GPU against the CPU layer with the same
 * weights, input and upstream gradient, in f32 (must agree to 1e-5 norm-wise: output, losses, input and
 * parameter gradients) and in bf16 (reported, must stay within 2e-2 of the f32 reference computed on the
 * same bf16-rounded values), each over the softmax and the sigmoid router.
 */
final class CudaVerify {
    private CudaVerify() {}

    /** The GPU ordinal of "cuda" or "cuda:N"; anything else is a usage error. */
    static int ordinal(CommandLine cmd, String device) {
        if (device.equals("cuda")) return 0;
        if (device.startsWith("cuda:")) {
            try {
                int n = Integer.parseInt(device.substring(5));
                if (n >= 0) return n;
            } catch (NumberFormatException e) {
                // fall through to the usage error
            }
        }
        throw new ParameterException(cmd, "--device must be cpu, cuda or cuda:N (N >= 0), got '" + device + "'");
    }

    static int run(CommandLine cmd, String device, VerifyCommand o) {
        int gpu = ordinal(cmd, device);
        if (o.shared != null && o.shared) throw new ParameterException(cmd, "verify --device cuda: the cuda layer has no shared expert");
        if (o.capacity > 0) throw new ParameterException(cmd, "verify --device cuda: the cuda layer drops no tokens (--capacity 0)");
        int d = o.dim == null ? 64 : o.dim;
        int h = o.hidden == null ? 96 : o.hidden;
        int e = o.experts == null ? 8 : o.experts;
        int k = o.topK == null ? 2 : o.topK;
        int t = o.tokens == null ? 256 : o.tokens;
        String act = o.activation == null ? "silu" : o.activation;
        PrintWriter out = cmd.getOut();
        boolean pass = true;
        RouterKind[] routers = o.router == null ? RouterKind.values() : new RouterKind[] {RouterKind.parse(o.router, "--router")};
        for (RouterKind router : routers) {
            MoEConfig config = MoEConfig.builder(d, h, e, k).activation(act).router(router).gradientScale(o.gradientScale)
                    .sequenceAuxLossWeight(router == RouterKind.SIGMOID_TOPK ? 0.01 : 0).initStd(o.initStd)
                    .seed(o.seed).packed(true).build();
            pass &= CudaLayerCheck.verify(out, config, t, o.seed + 100, gpu);
        }
        out.println(pass ? "verify --device cuda: PASS" : "verify --device cuda: FAIL");
        out.flush();
        return pass ? 0 : 1;
    }
}
