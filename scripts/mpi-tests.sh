#!/usr/bin/env bash
# Runs the MPI backend's checks (moe4j.distributed.mpi.MpiCollectivesCheck) as an mpirun job, or, in
# mode cli, the moe4j command line from the build directories on every rank (e.g. `cli verify --backend mpi`).
# Compiles nothing: run `./mvnw -o test-compile` first (the JUnit test MpiCollectivesTest does).
#
#   scripts/mpi-tests.sh [-np N] [check|stall|throw]
#   scripts/mpi-tests.sh [-np N] cli MOE4J-ARGS...
#
# Environment: MOE4J_COLLECTIVE_TIMEOUT (seconds) bounds each collective; MPIRUN_FLAGS adds flags.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

np=4
if [ "${1:-}" = "-np" ]; then np=$2; shift 2; fi
mode=${1:-check}
main=(moe4j.distributed.mpi.MpiCollectivesCheck "$mode")
if [ "$mode" = cli ]; then shift; main=(moe4j.cli.Main "$@"); fi

# MOE4J_JAVA: a java binary to use as is (e.g. a jlink runtime on a machine without a JDK)
java=${MOE4J_JAVA:-}
if [ -z "$java" ]; then
  . bin/find-java
  moe4j_find_java || exit 1
  java="$MOE4J_JAVA_HOME/bin/java"
fi

[ -d target/classes ] && [ -d target/test-classes/moe4j/distributed/mpi ] || {
  echo "mpi-tests: target/classes or target/test-classes missing: run ./mvnw -o test-compile first" >&2
  exit 2
}
cp_file=target/mpi-test.classpath
# MOE4J_DEPS_CLASSPATH: the dependencies' classpath, where Maven cannot run
if [ -n "${MOE4J_DEPS_CLASSPATH+set}" ]; then
  printf '%s\n' "$MOE4J_DEPS_CLASSPATH" >"$cp_file"
elif [ ! -s "$cp_file" ] || [ pom.xml -nt "$cp_file" ]; then
  ./mvnw -q -o dependency:build-classpath -Dmdep.outputFile="$cp_file" -Dmdep.includeScope=test >/dev/null
fi
classpath="target/classes:target/test-classes:$(cat "$cp_file")"

root_flags=()
[ "$(id -u)" -eq 0 ] && root_flags=(--allow-run-as-root)
[ -n "${MOE4J_COLLECTIVE_TIMEOUT:-}" ] && root_flags+=(-x MOE4J_COLLECTIVE_TIMEOUT)
# shellcheck disable=SC2086 # MPIRUN_FLAGS is a list of flags
exec mpirun "${root_flags[@]}" --oversubscribe -np "$np" ${MPIRUN_FLAGS:-} \
  "$java" --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-TieredCompilation \
  -Xmx512m -XX:+UseSerialGC -Xshare:auto \
  -cp "$classpath" "${main[@]}"
