package moe4j.cli;

import moe4j.bench.CpuYardstick;
import moe4j.nn.ModelConfig;
import moe4j.train.TrainConfig;

/** Model FLOPs per token and utilisation of the machine's FP32 peak, for training reports. */
final class Throughput {
    private Throughput() {}

    /** This machine's FP32 peak, measured by a short FMA probe (cached per CPU): the MFU denominator. */
    static CpuYardstick.Peak peak() {
        return CpuYardstick.peak();
    }

    /**
     * Training FLOPs per token: 6 × the parameters one token uses (forward 2, backward 4), plus the
     * attention scores and weighted values, 6 × 2 × n_layers × dim × seq_len / 2 with the causal mask.
     */
    static double flopsPerToken(TrainConfig cfg) {
        ModelConfig m = cfg.model();
        long d = m.dim();
        long hd = m.headDim();
        long attention = d * (long) m.nHeads() * hd * 2 + d * (long) m.nKvHeads() * hd * 2;
        long ffn = m.numExperts() > 0 ? (long) m.moeTopK() * 3 * d * m.expertHidden() + (long) m.numExperts() * d
                : 3 * d * m.ffnHidden();
        long shared = m.moeSharedExperts() > 0 ? 3 * d * m.expertHidden() : 0;
        long perLayerMoe = attention + ffn + shared;
        long perLayerDense = attention + 3 * d * m.ffnHidden();
        long layers = 0;
        for (int i = 0; i < m.nLayers(); i++) layers += m.isMoeLayer(i) ? perLayerMoe : perLayerDense;
        long head = d * (long) m.vocabSize();
        double matmuls = 6.0 * (layers + head);
        double scores = 6.0 * m.nLayers() * d * cfg.seqLen(); // 2 products × 2 flops × S/2 keys, × 3 for fwd+bwd
        return matmuls + scores;
    }

    static double mfu(TrainConfig cfg, double tokensPerSecond) {
        return tokensPerSecond * flopsPerToken(cfg) / (peak().gflops() * 1e9);
    }
}
