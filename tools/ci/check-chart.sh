#!/usr/bin/env bash
# Check the Helm chart, the Dockerfile and the package lists (see
# tools/ci/check-chart.js for what is checked). Installs what it needs and
# caches helm and the node packages, so a second run is quick and offline.
#
# Usage: tools/ci/check-chart.sh [CACHE_DIR]     (default: <repo>/.cache)
# Needs root for apt-get the first time (nodejs/npm if missing, and the
# build packages of tools/ci/packages.txt, whose runtime libraries it checks).
# CHART_OUT=DIR keeps the rendered manifests and NOTES for a look.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${1:-$repo/.cache}
mkdir -p "$cache"
[[ -e "$cache/.gitignore" ]] || echo '*' >"$cache/.gitignore"
cache=$(cd "$cache" && pwd)

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "check-chart: installing nodejs and npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm
fi

# The -dev -> runtime library check reads the installed -dev packages.
bash "$here/install-packages.sh"

helm=$(bash "$here/get-helm.sh" "$cache")

# Node packages (YAML parser, Kubernetes schemas, Dockerfile linter), pinned
# by tools/ci/node/package-lock.json and reinstalled when it changes.
nd="$cache/ci-node"
if [[ ! -d "$nd/node_modules" ]] || ! cmp -s "$here/node/package-lock.json" "$nd/package-lock.json"; then
  echo "check-chart: npm ci (tools/ci/node)"
  rm -rf "$nd"
  mkdir -p "$nd"
  cp "$here/node/package.json" "$here/node/package-lock.json" "$nd/"
  (cd "$nd" && npm ci --no-audit --no-fund --loglevel=error)
fi

HELM="$helm" NODE_PATH="$nd/node_modules" node "$here/check-chart.js"
