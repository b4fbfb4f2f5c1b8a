package moe4j.distributed;

/** How {@link ProcessGroup#allReduce} and {@link ProcessGroup#reduceScatter} combine the ranks' values. */
public enum ReduceOp {
    /** Sum in rank order (0, 1, ..., P-1), so every run and every rank gets the same bits. */
    SUM,
    /** The rank-order sum divided by the group size; floating tensors only. */
    AVG,
    /** Element-wise maximum. */
    MAX
}
