#!/usr/bin/env bash
# Check the chart's alerts and Grafana dashboard against promtool, a real
# gateway and a real Prometheus (see tools/ci/check-monitoring.py for what is
# checked). Needs a build (FB_BIN_DIR, else build-test/bin or build/bin),
# redis-server, nats-server, python3 with its yaml module, and Debian's
# prometheus package (promtool and prometheus), which it installs when
# missing and run as root. helm comes from tools/ci/get-helm.sh (and its cache).
#
# Usage: tools/ci/check-monitoring.sh [CACHE_DIR]     (default: <repo>/.cache)
# MONITORING_OUT=DIR keeps the rendered rules, /metrics and the logs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

# promtool and prometheus (with the build packages, which a build has anyway).
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  bash "$here/install-packages.sh" prometheus
fi

bin=${FB_BIN_DIR:-}
if [[ -z $bin ]]; then
  for d in "$repo/build-test/bin" "$repo/build/bin"; do
    if [[ -x $d/frame-buffer ]]; then
      bin=$d
      break
    fi
  done
fi
[[ -n $bin && -x $bin/frame-buffer ]] || {
  echo "check-monitoring: no built gateway (set FB_BIN_DIR, or build into build-test/ or build/)" >&2
  exit 1
}

helm=$(bash "$here/get-helm.sh" "$@")
keep=()
[[ -n ${MONITORING_OUT:-} ]] && keep=(--keep "$MONITORING_OUT")
exec python3 "$here/check-monitoring.py" --helm "$helm" --bin-dir "$bin" "${keep[@]}"
