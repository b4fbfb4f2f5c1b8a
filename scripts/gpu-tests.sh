#!/usr/bin/env bash
# Runs on the GPU machine from the bundle that scripts/gpu-bundle.sh builds (this file is copied to
# BUNDLE/gpu-tests.sh). Logs go to $OUT (the folder whose files come back), a summary to stdout.
#   bash .gpu/gpu-tests.sh probe   # GPU, libraries, moe4j info, kernel compile + binding tests
#   bash .gpu/gpu-tests.sh all     # all GPU tests, verify, then moe4j's and the peer's benchmarks
#   bash .gpu/gpu-tests.sh tests   # only the GPU tests (every class tagged gpu; two-GPU ones need two) and verify
#   bash .gpu/gpu-tests.sh bench   # only the benchmarks
#   bash .gpu/gpu-tests.sh grouped # the expert products alone on the peer's ragged groups, beside its ceiling
#   bash .gpu/gpu-tests.sh train   # the training tests, then the GPU configs trained on 1 GPU and (if present) 2
#                                  # (STEPS=N steps each, default 10; CONFIGS="fine coarse" picks configs/gpu-*.toml)
#   bash .gpu/gpu-tests.sh mpi     # one process per GPU under mpirun: verify --ep 2, and a small training run
#                                  # against the same run as two rank threads of one JVM
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
FLAGS=(--add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-TieredCompilation -Djava.awt.headless=true)
CP="$B/app/moe4j.jar"
for j in "$B"/app/lib/*.jar; do CP="$CP:$j"; done
moe4j() { "$JAVA" "${FLAGS[@]}" -cp "$CP" moe4j.cli.Main "$@"; }
junit() {
  "$JAVA" "${FLAGS[@]}" -Xss4m -jar "$B/junit-console.jar" execute --class-path "$B/app/test-classes:$CP" \
    --disable-banner --details=tree "$@"
}
SHAPES=("2048 7168 8 2 8192" "2048 1024 64 8 8192" "2048 768 128 8 8192" "7168 2048 64 8 4096")

if [ "$MODE" = probe ]; then
  { nvidia-smi; nvidia-smi topo -m; ls -l /usr/local/cuda/lib64/ | grep -E 'cublas|nvrtc' ;
    python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.device_count())'; } 2>&1 | tee "$OUT/probe.log"
  moe4j info 2>&1 | tee -a "$OUT/probe.log"
  junit --select-class moe4j.kernels.cuda.CudaKernelsGpuTest 2>&1 | tee "$OUT/kernels-test.log" | tail -40
  junit --select-class moe4j.devicecheck.CudaLayerTest 2>&1 | tee "$OUT/layer-test.log" | tail -25
  moe4j verify --device cuda 2>&1 | tee "$OUT/verify.log" | tail -30
  moe4j bench moe-layer --device cuda --dtype bf16 --dim 2048 --hidden 1024 --experts 64 --top-k 8 --tokens 8192 2>&1 | tee "$OUT/bench-probe.log"
  exit 0
fi

if [ "$MODE" = all ] || [ "$MODE" = tests ]; then
  moe4j info 2>&1 | tee "$OUT/info.log" | tail -6
  timeout -k 5 "${TESTS_LIMIT:-900}" "$JAVA" "${FLAGS[@]}" -Xss4m -jar "$B/junit-console.jar" execute \
    --class-path "$B/app/test-classes:$CP" --disable-banner --details=tree --include-tag gpu \
    --scan-class-path "$B/app/test-classes" > "$OUT/gpu-tests.log" 2>&1
  echo "GPU tests: exit $?"
  grep -E "tests (successful|failed|skipped|found)|✘" "$OUT/gpu-tests.log" | head -30
  moe4j verify --device cuda 2>&1 | tee "$OUT/verify.log" | grep -E "PASS|FAIL"
  [ "$MODE" = tests ] && exit 0
fi

if [ "$MODE" = train ]; then
  GPUS=$(nvidia-smi -L | wc -l)
  junit --select-class moe4j.cli.CudaTrainingTest --select-class moe4j.kernels.cuda.CudaDeviceKernelsTest 2>&1 > "$OUT/train-tests.log"
  grep -E "tests (successful|failed|skipped|found)|✘|worst single-step" "$OUT/train-tests.log" | head -30
  # the attention of the GPU configs' shape alone: tensor cores (bf16) and the exact kernels (f32)
  moe4j bench attention --device cuda --dtype bf16 2>&1 | tee "$OUT/bench-attention.log" | tail -4
  moe4j bench attention --device cuda --dtype f32 --iters 3 2>&1 | tee -a "$OUT/bench-attention.log" | tail -4
  for c in ${CONFIGS:-fine coarse}; do
    for ep in 1 2; do
      [ "$ep" -le "$GPUS" ] || continue
      moe4j train --config "$B/../configs/gpu-$c.toml" --ep $ep --steps "${STEPS:-10}" --output-dir "$OUT/train-$c-ep$ep" --json \
        > "$OUT/train-$c-ep$ep.log" 2>&1
      grep -vE '^\{' "$OUT/train-$c-ep$ep.log" | tail -32
    done
  done
  exit 0
fi

if [ "$MODE" = mpi ]; then
  # the launcher passes the environment on; NVLink multicast stays off in every process
  MPI=(mpirun --allow-run-as-root --oversubscribe -np 2 -x NCCL_NVLS_ENABLE -x TORCH_SYMM_MEM_DISABLE_MULTICAST
       -x NVSHMEM_DISABLE_NVLS -x MOE4J_CUDA_CACHE "$JAVA" "${FLAGS[@]}" -cp "$CP" moe4j.cli.Main)
  timeout -k 5 90 "${MPI[@]}" verify --device cuda --ep 2 > "$OUT/mpi-verify.log" 2>&1; echo "mpirun verify: exit $?"
  grep -E "PASS|FAIL|rror" "$OUT/mpi-verify.log" | head -12
  sed -e 's/^steps = 20/steps = 12/' "$B/../configs/gpu-fine.toml" | sed -e 's/^dim = 2048/dim = 256/' -e 's/^n_layers = 8/n_layers = 2/' \
    -e 's/^max_seq_len = 2048/max_seq_len = 256/' -e 's/^seq_len = 2048/seq_len = 256/' -e 's/^dtype = "bf16"/dtype = "f32"/' > /tmp/small.toml
  timeout -k 5 120 "${MPI[@]}" train --config /tmp/small.toml --ep 2 --output-dir "$OUT/mpi-train" > "$OUT/mpi-train.log" 2>&1
  echo "mpirun train: exit $?"; grep -E "ranks:|final loss|tokens/s|rror" "$OUT/mpi-train.log"
  moe4j train --config /tmp/small.toml --ep 2 --output-dir "$OUT/jvm-train" > "$OUT/jvm-train.log" 2>&1
  echo "one JVM train: exit $?"; grep -E "ranks:|final loss|tokens/s|rror" "$OUT/jvm-train.log"
  # the two launches run the same computation: every step's loss must agree
  python3 - "$OUT/mpi-train/metrics.jsonl" "$OUT/jvm-train/metrics.jsonl" <<'PY'
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
worst = max(abs(x - y) / abs(y) for x, y in zip(a, b)) if a and len(a) == len(b) else float("inf")
print(f"mpirun vs one JVM: {len(a)} and {len(b)} steps, worst relative loss difference {worst:.2e}", "PASS" if worst <= 1e-4 else "FAIL")
PY
  exit 0
fi

if [ "$MODE" = grouped ]; then
  # the groups grouped_mm_ceiling.py draws (same seed, same order), then moe4j and the peer on them
  python3 "$B/peer-groups.py" > "$OUT/peer-groups.txt"
  while read -r D H E K T COUNTS; do
    moe4j bench moe-layer --device cuda --dtype bf16 --dim $D --hidden $H --experts $E --top-k $K --tokens $T --expert-counts "$COUNTS"
  done < "$OUT/peer-groups.txt" 2>&1 | tee "$OUT/grouped-moe4j.log" | grep -E "MOE4J_CUDA|error"
  python3 "$B/peer/grouped_mm_ceiling.py" 2>&1 | tee "$OUT/grouped-mm-ceiling.log"
  exit 0
fi

# benchmarks: moe4j (bf16, then f32 on the first shape) beside the peer, in the same call
{
  date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
  for s in "${SHAPES[@]}"; do
    set -- $s
    moe4j bench moe-layer --device cuda --dtype bf16 --dim $1 --hidden $2 --experts $3 --top-k $4 --tokens $5 --iters 20
  done
  # the compact layout (ragged products, strategy timed per shape) for comparison, and f32 (TF32 off)
  for i in 0 1; do
    set -- ${SHAPES[$i]}
    moe4j bench moe-layer --device cuda --dtype bf16 --layout compact --dim $1 --hidden $2 --experts $3 --top-k $4 --tokens $5 --iters 20
  done
  set -- ${SHAPES[1]}
  moe4j bench moe-layer --device cuda --dtype f32 --dim $1 --hidden $2 --experts $3 --top-k $4 --tokens $5 --iters 10
} 2>&1 | tee "$OUT/bench-moe4j.log" | grep -E "MOE4J_CUDA|error"
(cd "$B" && PYTHONPATH=peer torchrun --nproc_per_node=1 peer/bench_ep_gpu.py) 2>&1 | tee "$OUT/bench-peer.log" | grep -E "KF_EP_GPU|Error"
python3 "$B/peer/grouped_mm_ceiling.py" 2>&1 | tee "$OUT/grouped-mm-ceiling.log"
