#!/usr/bin/env bash
# Builds frame-buffer with warnings as errors and runs every test: the cmocka
# unit tests and the integration tests, which start their own redis-server
# and nats-server on free loopback ports (so a running demo is never touched).
#
# Usage: tools/dev/test.sh [ctest arguments, e.g. -L unit or -R api]
# Env:   FB_TEST_BUILD  build directory (default build-test)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${FB_TEST_BUILD:-$root/build-test}

for tool in cmake redis-server nats-server python3; do
  command -v "$tool" >/dev/null || {
    echo "test.sh: $tool is missing: run tools/dev/up.sh --install-only (or see README)" >&2
    exit 1
  }
done

cmake -S "$root" -B "$build" -DFB_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j2 "$@"
