/**
 * Moving tensors' data between ranks: {@link moe4j.distributed.ProcessGroup} (the collectives expert
 * and data parallelism run on), its backends, {@link moe4j.distributed.DeviceMesh} (the named
 * parallelism dimensions and their groups) and the in-JVM launcher {@link moe4j.distributed.Distributed}.
 *
 * <p>The embedded backend runs the ranks as threads of one JVM and exchanges data through shared
 * memory, one copy per byte. Backends for ranks in different processes (MPI, NCCL) implement the same
 * interface; nothing in it assumes a peer's memory can be addressed.
 *
 * <p>This package knows tensors only as typed rows of memory: nothing of autograd or models.
 */
package moe4j.distributed;
