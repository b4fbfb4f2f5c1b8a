package moe4j.train;

/** Linear warm-up from 0 to {@code peak} over {@code warmup} steps, then cosine decay to {@code min} at {@code total}. */
public record LrSchedule(double peak, double min, long warmup, long total) {
    public LrSchedule {
        if (!(peak > 0)) throw new IllegalArgumentException("lr must be > 0, got " + peak);
        if (min < 0 || min > peak) throw new IllegalArgumentException("min_lr must be in [0, lr=" + peak + "], got " + min);
        if (warmup < 0) throw new IllegalArgumentException("warmup_steps must be >= 0, got " + warmup);
        if (total < 1) throw new IllegalArgumentException("steps must be >= 1, got " + total);
    }

    /** The learning rate of step {@code step} (1-based: the first update is step 1). */
    public double at(long step) {
        if (step <= warmup) return peak * step / Math.max(1, warmup);
        double progress = Math.min(1.0, (double) (step - warmup) / Math.max(1, total - warmup));
        return min + (peak - min) * 0.5 * (1 + Math.cos(Math.PI * progress));
    }
}
