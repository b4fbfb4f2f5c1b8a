#!/usr/bin/env bash
# Runs on a machine with two GPUs from a bundle built by scripts/gpu-bundle.sh (this file copied to
# BUNDLE/gpu-tests-nccl.sh). Logs go to $OUT, a summary to stdout. Each step has its own time limit so
# that a hang in one still leaves the others' logs in $OUT.
#   bash .gpu/gpu-tests-nccl.sh all  # the NCCL and two-GPU EP tests, verify --ep 2, then the benchmarks below
#   bash .gpu/gpu-tests-nccl.sh ep   # only the benchmarks (about 4 minutes): moe4j's all-to-all, moe4j's EP layer on
#                                    # the peer's four shapes in bf16 on a bf16 and an f32 wire, plain and deduplicated, then the peer's
#                                    # bench_ep_gpu.py at P=2 and nccl_a2a.py, all in this one call
set -u
MODE=${1:-all}
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
STARTED=$(date +%s)
step() {
  local limit=$1 log=$2; shift 2
  echo "== $* (limit ${limit}s, at $(( $(date +%s) - STARTED ))s)"
  timeout -k 5 "$limit" "$@" >> "$OUT/$log" 2>&1
  echo "   exit $?"
}
# the peer's four shapes (bench_ep_gpu.py): D H E K tokens-per-rank
SHAPES=("2048 7168 8 2 8192" "2048 1024 64 8 8192" "2048 768 128 8 8192" "7168 2048 64 8 4096")

{ date -u; nvidia-smi -L; nvidia-smi topo -m; } > "$OUT/info.log" 2>&1

if [ "$MODE" = all ]; then
  step 120 gpu-tests.log "$JAVA" "${FLAGS[@]}" -Xss4m -jar "$B/junit-console.jar" execute --class-path "$B/app/test-classes:$CP" \
    --disable-banner --details=tree --select-class moe4j.distributed.nccl.NcclGpuTest --select-class moe4j.parallel.EpGpuTest \
    --select-class moe4j.bench.EpBf16GpuTest \
    --select-method moe4j.kernels.cuda.CudaDeviceKernelsTest#convertBetweenF32AndBf16IsTheCpusBits
  grep -E "tests (successful|failed|skipped|found)|✘|✔" "$OUT/gpu-tests.log" | head -40
  step 30 verify-ep.log "${MOE4J[@]}" verify --device cuda --ep 2
  grep -E "PASS|FAIL|rror" "$OUT/verify-ep.log" | head -20
elif [ "$MODE" != ep ]; then
  echo "usage: gpu-tests-nccl.sh [all|ep]" >&2
  exit 2
fi

step 20 bench-alltoall.log "${MOE4J[@]}" bench alltoall --backend nccl --ranks 2
grep -E "MOE4J_NCCL_A2A|rror" "$OUT/bench-alltoall.log"
# moe4j's EP layer: bf16 products, rows on a bf16 wire (the default with bf16 products), then on an f32 wire,
# then deduplicated (a token travels once per rank that owns one of its experts) on both wires
for variant in "bf16" "f32" "bf16 --dedup" "f32 --dedup"; do
  set -- $variant
  wire=$1; shift
  extra=("$@")
  for s in "${SHAPES[@]}"; do
    set -- $s
    step 40 bench-ep.log "${MOE4J[@]}" bench ep --device cuda --ranks 2 --dtype bf16 --wire $wire "${extra[@]}" --dim $1 --hidden $2 \
      --experts $3 --top-k $4 --tokens $5 --warmup 3 --iters 10 --profiled 2 --json
  done
done
grep -E "MOE4J_EP_GPU|rror|Exception" "$OUT/bench-ep.log" | head -40
step 90 bench-ep-peer.log env PYTHONPATH="$B/peer" torchrun --nproc_per_node=2 "$B/peer/bench_ep_gpu.py"
grep -E "KF_EP_GPU|rror" "$OUT/bench-ep-peer.log" | head -8
step 25 peer-nccl-a2a.log torchrun --nproc_per_node=2 "$B/peer/nccl_a2a.py"
grep -E "NCCL_A2A|rror" "$OUT/peer-nccl-a2a.log"
echo "total $(( $(date +%s) - STARTED ))s"
