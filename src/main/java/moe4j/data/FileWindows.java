package moe4j.data;

import java.util.List;
import moe4j.tensor.Rng;

/**
 * Where window {@code i} of a list of token files lies. A window never crosses from one file into the
 * next (files are separate documents); files too short for a window are passed over, and each file gets
 * windows in proportion to how many it can hold.
 */
final class FileWindows {
    /** The window's file and its first token. */
    record Place(MappedTokens file, long start) {}

    /** Per window length: {@code firstWindow[f]} numbers file f's first window; the last entry is the total. */
    private record Layout(int length, long[] firstWindow) {
        long total() {
            return firstWindow[firstWindow.length - 1];
        }
    }

    private final String op;
    private final List<MappedTokens> files;
    private final long seed;
    private final WindowOrder order;
    private volatile Layout layout;

    FileWindows(String op, List<MappedTokens> files, long seed, WindowOrder order) {
        this.op = op;
        this.files = List.copyOf(files);
        this.seed = seed;
        this.order = order;
    }

    List<MappedTokens> files() {
        return files;
    }

    /** The longest file, in tokens. */
    long longest() {
        long max = 0;
        for (MappedTokens f : files) max = Math.max(max, f.length);
        return max;
    }

    Place place(long index, int length) {
        if (index < 0) throw new IllegalArgumentException(op + ": window index must be >= 0, got " + index);
        Layout l = layoutFor(length);
        long total = l.total();
        long w;
        if (order == WindowOrder.RANDOM) {
            w = (Rng.forStream(seed, index).nextLong() >>> 1) % total;
        } else {
            w = index % total;
        }
        int f = fileOf(l.firstWindow, w);
        long k = w - l.firstWindow[f];
        long start = order == WindowOrder.RANDOM ? k : k * (length - 1);
        return new Place(files.get(f), start);
    }

    /** Number of distinct windows of {@code length} tokens, 0 if no file is long enough. */
    long windowCount(int length) {
        return layoutFor(length).total();
    }

    private Layout layoutFor(int length) {
        Layout l = layout;
        if (l != null && l.length == length) return l;
        long[] first = new long[files.size() + 1];
        for (int f = 0; f < files.size(); f++) first[f + 1] = first[f] + windowsIn(files.get(f).length, length);
        l = new Layout(length, first);
        if (l.total() == 0) {
            throw new IllegalArgumentException(op + ": no file holds a window of " + length + " tokens; the longest has "
                    + longest());
        }
        layout = l;
        return l;
    }

    private long windowsIn(long n, int length) {
        if (n < length) return 0;
        // random: every start; sequential: back-to-back windows of stride length-1 (the last target of one
        // window is the first input of the next)
        return order == WindowOrder.RANDOM ? n - length + 1 : (n - 1) / (length - 1);
    }

    private static int fileOf(long[] first, long w) {
        int lo = 0;
        int hi = first.length - 2;
        while (lo < hi) {
            int mid = (lo + hi + 1) >>> 1;
            if (first[mid] <= w) lo = mid;
            else hi = mid - 1;
        }
        return lo;
    }
}
