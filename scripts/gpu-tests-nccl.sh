#!/usr/bin/env bash
# Runs on a machine with two GPUs from a bundle built by scripts/gpu-bundle.sh (this file copied to
# BUNDLE/gpu-tests-nccl.sh): the NCCL process group's GPU tests, expert parallelism on two GPUs against its
# oracles, then moe4j's and the peer's all-to-all and EP benchmarks in the same call. Each step has its own
# time limit so that a hang in one still leaves the others' logs in $OUT.
set -u
B=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/moe4j-gpu-out}
mkdir -p "$OUT"
# never clear the environment: the machine keeps NVLink multicast off on purpose
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export MOE4J_CUDA_CACHE=/tmp/moe4j-cuda-cache
[ -x /tmp/jre/bin/java ] || tar -C /tmp -xJf "$B/jre.tar.xz"
JAVA=/tmp/jre/bin/java
FLAGS=(--add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -Djava.awt.headless=true)
CP="$B/app/moe4j.jar"
for j in "$B"/app/lib/*.jar; do CP="$CP:$j"; done
MOE4J=("$JAVA" "${FLAGS[@]}" -cp "$CP" moe4j.cli.Main)
step() { local limit=$1 log=$2; shift 2; echo "== $* (limit ${limit}s)"; timeout -k 5 "$limit" "$@" > "$OUT/$log" 2>&1; echo "   exit $?"; }

date -u > "$OUT/info.log"; nvidia-smi -L >> "$OUT/info.log" 2>&1; nvidia-smi topo -m >> "$OUT/info.log" 2>&1
step 70 gpu-tests.log "$JAVA" "${FLAGS[@]}" -Xss4m -jar "$B/junit-console.jar" execute --class-path "$B/app/test-classes:$CP" \
  --disable-banner --details=tree --select-class moe4j.distributed.nccl.NcclGpuTest --select-class moe4j.parallel.EpGpuTest
grep -E "tests (successful|failed|skipped|found)|✘|✔" "$OUT/gpu-tests.log" | head -40
step 30 verify-ep.log "${MOE4J[@]}" verify --device cuda --ep 2
grep -E "PASS|FAIL|rror" "$OUT/verify-ep.log" | head -20
step 20 bench-alltoall.log "${MOE4J[@]}" bench alltoall --backend nccl --ranks 2
grep -E "MOE4J_NCCL_A2A|rror" "$OUT/bench-alltoall.log"
step 25 peer-nccl-a2a.log torchrun --nproc_per_node=2 "$B/peer/nccl_a2a.py"
grep -E "NCCL_A2A|rror" "$OUT/peer-nccl-a2a.log"
{
  for s in "2048 7168 8 2 8192" "2048 1024 64 8 8192" "2048 768 128 8 8192" "7168 2048 64 8 4096"; do
    set -- $s
    timeout -k 5 25 "${MOE4J[@]}" bench ep --device cuda --ranks 2 --dim $1 --hidden $2 \
      --experts $3 --top-k $4 --tokens $5 --warmup 1 --iters 5
  done
} > "$OUT/bench-ep.log" 2>&1
grep -E "MOE4J_EP_GPU|rror" "$OUT/bench-ep.log" | head -12
(cd "$B" && PYTHONPATH=peer timeout -k 5 45 torchrun --nproc_per_node=2 peer/bench_ep_gpu.py) > "$OUT/bench-ep-peer.log" 2>&1
grep -E "KF_EP_GPU|rror" "$OUT/bench-ep-peer.log" | head -8
