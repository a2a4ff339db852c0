#!/usr/bin/env bash
# Builds frame-buffer with warnings as errors and runs every test: the cmocka
# unit tests and the integration tests, which start their own redis-server
# and nats-server on free loopback ports (so a running demo is never touched).
#
# Before that, the unit tests run in an AddressSanitizer + UBSan build, and
# the container image is built and run (tools/ci/image-test.sh; one line
# says it is skipped where podman is not installed).
#
# Usage: tools/dev/test.sh [ctest arguments, e.g. -L unit or -R api]
# Env:   FB_TEST_BUILD  build directory (default build-test)
#        FB_SANITIZE=0  skip the sanitizer pass
#        FB_IMAGE=0     skip the image test
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${FB_TEST_BUILD:-$root/build-test}

for tool in cmake redis-server nats-server python3 node npm chromium; do
  command -v "$tool" >/dev/null || {
    echo "test.sh: $tool is missing: run tools/dev/up.sh --install-only (or see README)" >&2
    exit 1
  }
done

# The dashboard's browser test drives Debian's Chromium with playwright-core.
if [ ! -d "$root/tests/browser/node_modules/playwright-core" ]; then
  (cd "$root/tests/browser" && npm ci --no-audit --no-fund)
fi

status=0
if [ "${FB_SANITIZE:-1}" != 0 ] && [ $# = 0 ]; then
  echo "== unit tests under AddressSanitizer + UBSan"
  cmake -S "$root" -B "$build-asan" -DFB_WERROR=ON -DFB_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
    >/dev/null
  cmake --build "$build-asan" -j"$(nproc)" --target test_client_unit \
    $(cd "$root/tests/unit" && ls test_*.c | sed 's/\.c$//')
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    ctest --test-dir "$build-asan" --output-on-failure -L unit || status=$?
fi

if [ "${FB_IMAGE:-1}" != 0 ] && [ $# = 0 ]; then
  echo "== the container image and the chart's pod"
  bash "$root/tools/ci/image-test.sh" || status=$?
fi

echo "== every test"
cmake -S "$root" -B "$build" -DFB_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j2 "$@" || status=$?
exit $status
