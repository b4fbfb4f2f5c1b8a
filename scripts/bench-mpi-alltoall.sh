#!/usr/bin/env bash
# All-to-all throughput of moe4j's MPI backend next to a C program making the same MPI_Alltoallv
# (bench/alltoallv.c, compiled here with mpicc), in the same run: 2 and 4 processes, 1-64 MiB per rank.
#
#   scripts/bench-mpi-alltoall.sh [ITERS] [RANKS...]      defaults: 20 iterations, 2 and 4 ranks
#
# Environment: SIZES (MiB per rank, default "1 4 16 64"), REPS, MOE4J_JAVA_OPTS (extra JVM flags),
# MPIRUN_FLAGS (extra mpirun flags).
# Each rank count runs REPS times (default 3, env REPS), C and Java in alternating order, so that
# load changes on a shared machine hit both alike. Needs ./mvnw -o compile first. Prints each
# program's raw lines, then a table with, per program and size, the best time over all repetitions,
# the median of the repetitions' medians, and moe4j's bandwidth as a fraction of C's (best vs best).
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

iters=${1:-20}
shift || true
ranks=("$@")
[ ${#ranks[@]} -gt 0 ] || ranks=(2 4)
read -r -a sizes <<<"${SIZES:-1 4 16 64}"   # MiB per rank

# MOE4J_JAVA: a java binary to use as is (e.g. a jlink runtime on a machine without a JDK)
java=${MOE4J_JAVA:-}
if [ -z "$java" ]; then
  . bin/find-java
  moe4j_find_java || exit 1
  java="$MOE4J_JAVA_HOME/bin/java"
fi

[ -d target/classes/moe4j/distributed/mpi ] || { echo "bench-mpi-alltoall: run ./mvnw -o compile first" >&2; exit 2; }
cp_file=target/mpi-main.classpath
# MOE4J_DEPS_CLASSPATH: the dependencies' classpath, where Maven cannot run
if [ -n "${MOE4J_DEPS_CLASSPATH+set}" ]; then
  printf '%s\n' "$MOE4J_DEPS_CLASSPATH" >"$cp_file"
elif [ ! -s "$cp_file" ] || [ pom.xml -nt "$cp_file" ]; then
  ./mvnw -q -o dependency:build-classpath -Dmdep.outputFile="$cp_file" -Dmdep.includeScope=runtime >/dev/null
fi
classpath="target/classes:$(cat "$cp_file")"

mkdir -p target/bench
mpicc -O2 -o target/bench/alltoallv bench/alltoallv.c

root_flags=()
[ "$(id -u)" -eq 0 ] && root_flags=(--allow-run-as-root)
out=target/bench/mpi-alltoall.txt
: >"$out"
echo "load before: $(uptime)"
run_c() {
  # shellcheck disable=SC2086
  mpirun "${root_flags[@]}" --oversubscribe -np "$1" ${MPIRUN_FLAGS:-} target/bench/alltoallv "$iters" "${sizes[@]}" | tee -a "$out"
}
run_java() {
  # shellcheck disable=SC2086
  mpirun "${root_flags[@]}" --oversubscribe -np "$1" ${MPIRUN_FLAGS:-} \
    "$java" --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-TieredCompilation \
    -Xmx1g -XX:+UseSerialGC ${MOE4J_JAVA_OPTS:-} -cp "$classpath" moe4j.distributed.mpi.MpiAllToAllBenchmark "$iters" "${sizes[@]}" 2>&1 |
    grep -v '^WARNING: Using incubator' | tee -a "$out"
}
for p in "${ranks[@]}"; do
  for ((rep = 0; rep < ${REPS:-3}; rep++)); do
    if ((rep % 2 == 0)); then run_c "$p"; run_java "$p"; else run_java "$p"; run_c "$p"; fi
  done
done
echo "load after: $(uptime)"

echo
awk '
  $1 == "c" || $1 == "java" {
    key = $2 " " $3; id = $1 SUBSEP key
    if (!(id in best) || $4 < best[id]) { best[id] = $4; gbs[id] = $6 }
    meds[id] = meds[id] " " $5
    if (!(key in seen)) { seen[key] = 1; order[n++] = key }
  }
  function median(list,   v, m, i, j, t) {
    m = split(list, v, " ")
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
    return v[int((m + 1) / 2)]
  }
  END {
    for (id in meds) med[id] = median(meds[id])
    printf "%5s %7s | %10s %10s %8s | %10s %10s %8s | %9s\n", "ranks", "MiB/rank", "C best ms", "C median", "C GB/s", "moe4j best", "moe4j med", "GB/s", "moe4j/C"
    for (i = 0; i < n; i++) {
      k = order[i]; split(k, a, " ")
      printf "%5s %7s | %10.3f %10.3f %8.2f | %10.3f %10.3f %8.2f | %8.1f%%\n", a[1], a[2], best["c", k], med["c", k], gbs["c", k], best["java", k], med["java", k], gbs["java", k], 100 * best["c", k] / best["java", k]
    }
  }' "$out"
