package moe4j.train;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.geom.Path2D;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import javax.imageio.ImageIO;

/**
 * A PNG of a run: the loss curve (with the cross-entropy part and an optional reference line such as
 * the data's unigram entropy) on the left, and on the right a heatmap of each MoE layer's expert load
 * (share of routed tokens over the run, 1/E is even).
 */
public final class TrainingPlot {
    private TrainingPlot() {}

    private static final int WIDTH = 1200;
    private static final int HEIGHT = 480;

    /**
     * Whether this JVM can draw text. A server without fontconfig or any font (a bare GPU node, say) makes
     * the first text call fail with an {@link Error} from the font system; the plot is then drawn without
     * its labels rather than lost, and {@link #labelsDrawn()} lets the caller say so.
     */
    private static final boolean FONTS = probeFonts();

    private static boolean probeFonts() {
        System.setProperty("java.awt.headless", "true");
        try {
            Graphics2D g = new BufferedImage(8, 8, BufferedImage.TYPE_INT_RGB).createGraphics();
            g.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, 12));
            g.drawString("0", 0, 8);
            g.getFontMetrics().stringWidth("0");
            g.dispose();
            return true;
        } catch (Error | RuntimeException e) { // the font system's failures are Errors (e.g. "Fontconfig head is null")
            return false;
        }
    }

    /** False when this JVM has no usable fonts: the plots are written without their labels. */
    public static boolean labelsDrawn() {
        return FONTS;
    }

    private static void text(Graphics2D g, String s, int x, int y) {
        if (FONTS) g.drawString(s, x, y);
    }

    private static void font(Graphics2D g, Font f) {
        if (FONTS) g.setFont(f);
    }

    private static int width(Graphics2D g, String s) {
        return FONTS ? g.getFontMetrics().stringWidth(s) : 0;
    }

    public static void write(Path file, List<StepMetrics> steps, double referenceLoss, String referenceLabel, String title)
            throws IOException {
        System.setProperty("java.awt.headless", "true");
        BufferedImage img = new BufferedImage(WIDTH, HEIGHT, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = img.createGraphics();
        g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
        g.setRenderingHint(RenderingHints.KEY_TEXT_ANTIALIASING, RenderingHints.VALUE_TEXT_ANTIALIAS_ON);
        g.setColor(Color.WHITE);
        g.fillRect(0, 0, WIDTH, HEIGHT);
        g.setColor(Color.BLACK);
        font(g, new Font(Font.SANS_SERIF, Font.BOLD, 16));
        text(g, title, 20, 26);
        drawLoss(g, steps, referenceLoss, referenceLabel, 70, 50, 620, 370);
        drawLoad(g, steps, 780, 50, 380, 370);
        g.dispose();
        if (file.getParent() != null) Files.createDirectories(file.getParent());
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        ImageIO.write(img, "png", tmp.toFile());
        Files.move(tmp, file, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
    }

    private static void drawLoss(Graphics2D g, List<StepMetrics> steps, double ref, String refLabel, int x0, int y0, int w, int h) {
        font(g, new Font(Font.SANS_SERIF, Font.PLAIN, 12));
        g.setColor(Color.BLACK);
        text(g, "loss by step", x0, y0 - 6);
        g.drawRect(x0, y0, w, h);
        if (steps.isEmpty()) return;
        double max = Double.NEGATIVE_INFINITY;
        double min = Double.POSITIVE_INFINITY;
        for (StepMetrics s : steps) {
            if (Double.isFinite(s.loss())) {
                max = Math.max(max, s.loss());
                min = Math.min(min, Math.min(s.loss(), s.crossEntropy()));
            }
        }
        if (Double.isFinite(ref)) {
            max = Math.max(max, ref);
            min = Math.min(min, ref);
        }
        if (!(max > min)) max = min + 1;
        min = Math.max(0, min - 0.05 * (max - min));
        long first = steps.get(0).step();
        long last = Math.max(first + 1, steps.get(steps.size() - 1).step());
        // axes labels
        for (int i = 0; i <= 4; i++) {
            double v = min + (max - min) * i / 4;
            int y = y0 + h - (int) (h * i / 4.0);
            g.setColor(new Color(230, 230, 230));
            g.drawLine(x0 + 1, y, x0 + w - 1, y);
            g.setColor(Color.DARK_GRAY);
            text(g, String.format(Locale.ROOT, "%.2f", v), x0 - 45, y + 4);
        }
        text(g, "step " + first, x0, y0 + h + 16);
        String lastLabel = "step " + last;
        text(g, lastLabel, x0 + w - width(g, lastLabel), y0 + h + 16);
        if (Double.isFinite(ref)) {
            int y = y0 + h - (int) (h * (ref - min) / (max - min));
            g.setColor(new Color(200, 80, 80));
            g.setStroke(new BasicStroke(1f, BasicStroke.CAP_BUTT, BasicStroke.JOIN_MITER, 10f, new float[] {6f, 4f}, 0f));
            g.drawLine(x0, y, x0 + w, y);
            text(g, refLabel, x0 + 8, y - 4);
        }
        plot(g, steps, true, min, max, first, last, x0, y0, w, h, new Color(150, 170, 220));
        plot(g, steps, false, min, max, first, last, x0, y0, w, h, new Color(120, 140, 200));
        plotSmoothed(g, steps, min, max, first, last, x0, y0, w, h, new Color(10, 40, 140));
        g.setStroke(new BasicStroke(1f));
        g.setColor(new Color(10, 40, 140));
        text(g, "total loss (and its moving average)", x0 + w - 220, y0 + 16);
        g.setColor(new Color(150, 170, 220));
        text(g, "cross-entropy", x0 + w - 220, y0 + 30);
    }

    private static void plot(Graphics2D g, List<StepMetrics> steps, boolean ce, double min, double max, long first, long last,
                             int x0, int y0, int w, int h, Color color) {
        Path2D path = new Path2D.Double();
        boolean started = false;
        for (StepMetrics s : steps) {
            double v = ce ? s.crossEntropy() : s.loss();
            if (!Double.isFinite(v)) continue;
            double x = x0 + w * (double) (s.step() - first) / (last - first);
            double y = y0 + h - h * (v - min) / (max - min);
            if (!started) path.moveTo(x, y);
            else path.lineTo(x, y);
            started = true;
        }
        g.setColor(color);
        g.setStroke(new BasicStroke(ce ? 1.2f : 2f));
        g.draw(path);
    }

    /** The total loss's exponential moving average (the batches mix tasks, so single steps are noisy). */
    private static void plotSmoothed(Graphics2D g, List<StepMetrics> steps, double min, double max, long first, long last,
                                     int x0, int y0, int w, int h, Color color) {
        Path2D path = new Path2D.Double();
        double ema = Double.NaN;
        double alpha = 2.0 / (1 + Math.max(2, steps.size() / 20));
        for (StepMetrics s : steps) {
            if (!Double.isFinite(s.loss())) continue;
            ema = Double.isNaN(ema) ? s.loss() : ema + alpha * (s.loss() - ema);
            double x = x0 + w * (double) (s.step() - first) / (last - first);
            double y = y0 + h - h * (ema - min) / (max - min);
            if (path.getCurrentPoint() == null) path.moveTo(x, y);
            else path.lineTo(x, y);
        }
        g.setColor(color);
        g.setStroke(new BasicStroke(2.5f));
        g.draw(path);
    }

    private static void drawLoad(Graphics2D g, List<StepMetrics> steps, int x0, int y0, int w, int h) {
        g.setColor(Color.BLACK);
        font(g, new Font(Font.SANS_SERIF, Font.PLAIN, 12));
        text(g, "expert load over the run (share × E; 1 = even)", x0, y0 - 6);
        if (steps.isEmpty() || steps.get(0).expertLoad().length == 0) {
            text(g, "dense model: no experts", x0 + 10, y0 + 30);
            return;
        }
        int layers = steps.get(0).expertLoad().length;
        int experts = steps.get(0).expertLoad()[0].length;
        double[][] mean = new double[layers][experts];
        for (StepMetrics s : steps) {
            for (int l = 0; l < layers; l++) {
                for (int e = 0; e < experts; e++) mean[l][e] += s.expertLoad()[l][e] * experts / steps.size();
            }
        }
        int cellW = (w - 40) / experts;
        int cellH = Math.min(60, (h - 40) / layers);
        for (int l = 0; l < layers; l++) {
            g.setColor(Color.DARK_GRAY);
            text(g, "layer " + l, x0, y0 + 20 + l * cellH + cellH / 2 + 4);
            for (int e = 0; e < experts; e++) {
                double v = mean[l][e];
                g.setColor(heat(v));
                int cx = x0 + 55 + e * cellW;
                int cy = y0 + 20 + l * cellH;
                g.fillRect(cx, cy, cellW - 2, cellH - 2);
                g.setColor(v > 1.4 || v < 0.4 ? Color.WHITE : Color.BLACK);
                text(g, String.format(Locale.ROOT, "%.2f", v), cx + 4, cy + cellH / 2 + 4);
            }
        }
        g.setColor(Color.DARK_GRAY);
        for (int e = 0; e < experts; e++) text(g, "e" + e, x0 + 55 + e * cellW + cellW / 2 - 6, y0 + 14);
    }

    /** 0 → dark blue, 1 (even) → white, 2 or more → dark red. */
    private static Color heat(double v) {
        double t = Math.max(-1, Math.min(1, v - 1));
        if (t < 0) {
            int c = (int) (255 * (1 + t));
            return new Color(c, c, 255 - (int) (100 * -t));
        }
        int c = (int) (255 * (1 - t));
        return new Color(255 - (int) (100 * t), c, c);
    }
}
