package moe4j.train;

/**
 * What one optimizer step reports, identical on every rank (reduced over the data ranks).
 *
 * @param expertLoad per MoE layer, the share of routed (token, slot) pairs each expert received this step
 */
public record StepMetrics(long step, double loss, double crossEntropy, double auxLoss, double zLoss, double lr,
                          double gradNorm, double tokensPerSecond, double seconds, double[][] expertLoad) {

    /** The smallest and largest expert share over all layers, relative to a perfectly even 1/E. */
    public double[] balanceMinMax() {
        double min = Double.POSITIVE_INFINITY;
        double max = 0;
        for (double[] layer : expertLoad) {
            for (double share : layer) {
                min = Math.min(min, share * layer.length);
                max = Math.max(max, share * layer.length);
            }
        }
        return expertLoad.length == 0 ? new double[] {1, 1} : new double[] {min, max};
    }
}
