package moe4j.kernels.cuda;

import java.util.ArrayList;
import java.util.List;
import java.util.function.IntToLongFunction;

/**
 * bf16 products with fp32 results over the groups of a grouped layout ({@link RowPlan}): one batched
 * product per bucket of a padded or bucketed plan, ragged products (the fastest way per shape, timed once)
 * over a compact one. Row-major throughout; {@code a}, {@code b}, {@code c} give each group's operands.
 */
final class Bf16Products {
    private Bf16Products() {}

    /**
     * One product per group of {@code plan}, {@code C_g ← beta·C_g + op(A_g)·op(B_g)}, where the group's rows
     * in the layout ({@code rows[g]} of them for a compact plan, its bucket's cap otherwise) are the product's
     * m (forward: {@code rows × n}, inner k) or, with {@code rowsInner}, its inner dimension (weight gradient:
     * {@code k × n = A_gᵀ·B_g}). Groups without rows are skipped (a weight gradient's caller handles them).
     */
    static void run(CudaStream s, RowPlan plan, int[] rows, String shapeKey, boolean rowsInner, boolean transB, int n, int k,
                    IntToLongFunction a, int lda, IntToLongFunction b, int ldb, IntToLongFunction c, int ldc, float beta) {
        if (!plan.compact()) {
            buckets(s, plan, rowsInner, transB, n, k, a, lda, b, ldb, c, ldc, beta);
            return;
        }
        List<RaggedGemm.Product> products = new ArrayList<>();
        for (int g = 0; g < rows.length; g++) {
            if (rows[g] == 0) continue;
            products.add(rowsInner
                    ? new RaggedGemm.Product(true, transB, k, n, rows[g], a.applyAsLong(g), lda, b.applyAsLong(g), ldb, c.applyAsLong(g), ldc)
                    : new RaggedGemm.Product(false, transB, rows[g], n, k, a.applyAsLong(g), lda, b.applyAsLong(g), ldb, c.applyAsLong(g), ldc));
        }
        ragged(s, shapeKey, products, beta);
    }

    /**
     * One bf16 product per group of a bucketed {@code plan}, fp32 results {@code C ← beta·C + product}, batched per bucket: group
     * g computes {@code C_g = op(A_g)·op(B_g)} over its bucket's {@code cap} rows, where the rows are the
     * product's m (forward: {@code cap × n}, inner k) or, with {@code rowsInner}, its inner dimension
     * (weight gradient: {@code k × n = A_gᵀ·B_g}, inner cap).
     */
    static void buckets(CudaStream s, RowPlan plan, boolean rowsInner, boolean transB, int n, int k, IntToLongFunction a, int lda,
                        IntToLongFunction b, int ldb, IntToLongFunction c, int ldc, float beta) {
        for (RowPlan.Bucket bucket : plan.buckets()) {
            int[] members = bucket.experts();
            int cap = bucket.cap();
            int m = rowsInner ? k : cap;
            int inner = rowsInner ? cap : k;
            if (members.length == 1) {
                int g = members[0];
                s.gemm(rowsInner, transB, m, n, inner, 1f, a.applyAsLong(g), lda, b.applyAsLong(g), ldb, beta, c.applyAsLong(g), ldc,
                        Cublas.CUDA_R_16BF, Cublas.CUDA_R_32F);
                continue;
            }
            long[] ptrs = new long[3 * members.length];
            for (int j = 0; j < members.length; j++) {
                ptrs[j] = a.applyAsLong(members[j]);
                ptrs[members.length + j] = b.applyAsLong(members[j]);
                ptrs[2 * members.length + j] = c.applyAsLong(members[j]);
            }
            s.gemmBatched(rowsInner, transB, m, n, inner, ptrs, lda, ldb, ldc, beta, Cublas.CUDA_R_16BF, Cublas.CUDA_R_32F);
        }
    }

    /**
     * bf16 products into fp32 outputs: the ragged strategies (timed once per shape key) write with beta
     * 0; an accumulating call runs them one by one with its beta.
     */
    static void ragged(CudaStream s, String shapeKey, List<RaggedGemm.Product> products, float beta) {
        if (beta == 0f) {
            s.ragged().run(shapeKey, products, Cublas.CUDA_R_16BF, Cublas.CUDA_R_32F);
            return;
        }
        for (RaggedGemm.Product p : products) {
            s.gemm(p.transA(), p.transB(), p.m(), p.n(), p.k(), 1f, p.a(), p.lda(), p.b(), p.ldb(), beta, p.c(), p.ldc(),
                    Cublas.CUDA_R_16BF, Cublas.CUDA_R_32F);
        }
    }
}
