#!/usr/bin/env bash
# Builds what the GPU machine needs to run moe4j's GPU tests and benchmarks, into DEST (default
# /work/main/.gpu, a git-ignored folder of the checkout that travels to the GPU machine):
#   jre.tar.xz        a jlink runtime of the JDK (the GPU machine has no Java)
#   app/              moe4j's jar, its runtime dependencies and the test classes
#   junit-console.jar JUnit's console launcher (matching the project's JUnit version)
#   peer/             the KempnerForge peer's scripts with its package unpacked
#   gpu-tests.sh      the script run there (scripts/gpu-tests.sh; one GPU)
#   gpu-tests-nccl.sh the two-GPU script (scripts/gpu-tests-nccl.sh: NCCL, expert parallelism, their benchmarks)
# Usage: scripts/gpu-bundle.sh [DEST]   (run from the repository root; builds with ./mvnw)
set -euo pipefail
DEST=${1:-/work/main/.gpu}
JDK=${JDK:-/usr/lib/jvm/temurin-25-jdk-amd64}
PEER=${PEER:-/work/shared/peers/kempnerforge}
JUNIT_PLATFORM=1.14.1
mkdir -p "$DEST"
if [ ! -f "$DEST/jre.tar.xz" ]; then
  rm -rf "$DEST/jre"
  "$JDK/bin/jlink" --add-modules java.base,jdk.incubator.vector,java.desktop,java.logging,java.management,jdk.management,jdk.unsupported \
    --strip-debug --no-man-pages --no-header-files --output "$DEST/jre"
  tar -C "$DEST" -cJf "$DEST/jre.tar.xz" jre
  rm -rf "$DEST/jre"
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  ./mvnw -q -DskipTests package
  ./mvnw -q test-compile
fi
rm -rf "$DEST/app" && mkdir -p "$DEST/app"
cp target/moe4j-*.jar "$DEST/app/moe4j.jar"
cp -r target/lib "$DEST/app/lib"
cp -r target/test-classes "$DEST/app/test-classes"
cp "$HOME/.m2/repository/org/junit/platform/junit-platform-console-standalone/$JUNIT_PLATFORM/junit-platform-console-standalone-$JUNIT_PLATFORM.jar" "$DEST/junit-console.jar"
rm -rf "$DEST/peer" && mkdir -p "$DEST/peer"
cp "$PEER"/*.py "$DEST/peer/"
tar -C "$DEST/peer" -xzf "$PEER"/kempnerforge-*.tar.gz
cp scripts/gpu-tests.sh "$DEST/gpu-tests.sh"
cp scripts/gpu-tests-nccl.sh "$DEST/gpu-tests-nccl.sh"
cp scripts/peer-groups.py "$DEST/peer-groups.py"
du -sh "$DEST"
