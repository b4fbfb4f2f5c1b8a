package moe4j.kernels.cpu;

import moe4j.kernels.RoutingKernels;
import moe4j.tensor.Tensor;

/** Top-k by selection, counting sort by key, inverse permutation: linear-time integer loops. */
final class CpuRouting implements RoutingKernels {
    @Override
    public void topK(Tensor a, Tensor idx) {
        int n = a.dim(0);
        int d = a.dim(1);
        int k = idx.dim(1);
        int[] chosen = new int[k];
        for (int i = 0; i < n; i++) {
            long base = (long) i * d;
            for (int s = 0; s < k; s++) {
                int best = -1;
                float bestV = 0;
                for (int j = 0; j < d; j++) {
                    boolean taken = false;
                    for (int t = 0; t < s; t++) taken |= chosen[t] == j;
                    if (taken) continue;
                    float v = a.get(base + j);
                    // strictly greater keeps the lower index on ties; a NaN is taken only while the
                    // best so far is NaN too, so it never beats a number (v > NaN is always false)
                    if (best < 0 || v > bestV || (Float.isNaN(bestV) && !Float.isNaN(v))) {
                        best = j;
                        bestV = v;
                    }
                }
                chosen[s] = best;
                idx.setInt((long) i * k + s, best);
            }
        }
    }

    @Override
    public void limitToTopGroups(Tensor a, int groups, int topKGroups, Tensor out) {
        int n = a.dim(0);
        int d = a.dim(1);
        int size = d / groups;
        double[] groupScore = new double[groups];
        boolean[] keep = new boolean[groups];
        for (int i = 0; i < n; i++) {
            long row = (long) i * d;
            for (int g = 0; g < groups; g++) {
                float first = Float.NEGATIVE_INFINITY;
                float second = Float.NEGATIVE_INFINITY;
                for (int e = g * size; e < (g + 1) * size; e++) {
                    float v = a.get(row + e);
                    if (v > first) {
                        second = first;
                        first = v;
                    } else if (v > second) {
                        second = v;
                    }
                }
                groupScore[g] = (double) first + second;
            }
            java.util.Arrays.fill(keep, false);
            for (int chosen = 0; chosen < topKGroups; chosen++) {
                int best = -1;
                for (int g = 0; g < groups; g++) if (!keep[g] && (best < 0 || groupScore[g] > groupScore[best])) best = g;
                keep[best] = true;
            }
            for (int g = 0; g < groups; g++) {
                for (int e = g * size; e < (g + 1) * size; e++) out.set(row + e, keep[g] ? a.get(row + e) : Float.NEGATIVE_INFINITY);
            }
        }
    }

    @Override
    public void bincount(Tensor values, Tensor counts) {
        int bound = Math.toIntExact(counts.numel());
        int[] c = new int[bound];
        for (long i = 0; i < values.numel(); i++) {
            int v = values.getInt(i);
            if (v < 0 || v >= bound) {
                throw new IllegalArgumentException("bincount: value " + v + " at position " + i + " outside [0, " + bound + ")");
            }
            c[v]++;
        }
        for (int b = 0; b < bound; b++) counts.setInt(b, c[b]);
    }

    @Override
    public void stableArgsort(Tensor keys, int bound, Tensor order) {
        int[] next = new int[bound];
        for (long i = 0; i < keys.numel(); i++) {
            int v = keys.getInt(i);
            if (v < 0 || v >= bound) {
                throw new IllegalArgumentException("stableArgsort: value " + v + " at position " + i + " outside [0, " + bound + ")");
            }
            next[v]++;
        }
        int start = 0;
        for (int b = 0; b < bound; b++) {
            int count = next[b];
            next[b] = start;
            start += count;
        }
        for (int i = 0; i < keys.numel(); i++) order.setInt(next[keys.getInt(i)]++, i);
    }

    @Override
    public void groupByExpert(Tensor indices, int numExperts, Tensor entryOfRow, Tensor tokenOfRow, Tensor counts) {
        int k = indices.rank() == 2 ? indices.dim(1) : 1;
        int n = Math.toIntExact(indices.numel());
        // a counting sort with the dropped entries (−1) as one more key after the last expert
        int[] next = new int[numExperts + 1];
        for (int i = 0; i < n; i++) {
            int v = indices.getInt(i);
            if (v >= numExperts || v < -1) {
                throw new IllegalArgumentException("routing: expert id " + v + " outside [0, " + numExperts
                        + ") (or -1 for a dropped entry)");
            }
            next[v < 0 ? numExperts : v]++;
        }
        for (int e = 0; e < numExperts; e++) counts.setInt(e, next[e]);
        int start = 0;
        for (int e = 0; e <= numExperts; e++) {
            int c = next[e];
            next[e] = start;
            start += c;
        }
        for (int i = 0; i < n; i++) {
            int v = indices.getInt(i);
            int r = next[v < 0 ? numExperts : v]++;
            entryOfRow.setInt(r, i);
            tokenOfRow.setInt(r, i / k);
        }
    }

    @Override
    public void firstSlotPerRank(Tensor indices, int expertsPerRank, Tensor out) {
        int k = indices.rank() == 2 ? indices.dim(1) : 1;
        long tokens = indices.numel() / k;
        for (long t = 0; t < tokens; t++) {
            for (int s = 0; s < k; s++) {
                int e = indices.getInt(t * k + s);
                if (e < -1) throw new IllegalArgumentException("routing: expert id " + e + " is negative (only -1 marks a dropped entry)");
                int owner = e < 0 ? -1 : e / expertsPerRank;
                for (int earlier = 0; earlier < s && owner >= 0; earlier++) {
                    int f = indices.getInt(t * k + earlier);
                    if (f >= 0 && f / expertsPerRank == owner) owner = -1;
                }
                out.setInt(t * k + s, owner);
            }
        }
    }

    @Override
    public void localExperts(Tensor indices, int first, int count, Tensor out) {
        for (long i = 0; i < indices.numel(); i++) {
            int e = indices.getInt(i);
            out.setInt(i, e >= first && e < first + count ? e - first : -1);
        }
    }

    @Override
    public void dropOverCapacity(Tensor indices, int numExperts, int capacity, Tensor out) {
        int t = indices.dim(0);
        int k = indices.dim(1);
        int[][] used = new int[k][numExperts];
        for (int i = 0; i < t; i++) {
            for (int s = 0; s < k; s++) {
                int e = indices.getInt((long) i * k + s);
                out.setInt((long) i * k + s, used[s][e]++ >= capacity ? -1 : e);
            }
        }
    }

    @Override
    public void inversePermutation(Tensor perm, Tensor inv) {
        int n = Math.toIntExact(perm.numel());
        boolean[] seen = new boolean[n];
        for (int i = 0; i < n; i++) {
            int p = perm.getInt(i);
            if (p < 0 || p >= n || seen[p]) {
                throw new IllegalArgumentException("inversePermutation: not a permutation of [0, " + n + "): value " + p
                        + " at position " + i);
            }
            seen[p] = true;
            inv.setInt(p, i);
        }
    }
}
