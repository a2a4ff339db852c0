#!/usr/bin/env bash
# Install the Debian packages that build frame-buffer (tools/ci/packages.txt),
# plus any extra package names given as arguments (e.g. the servers the
# integration tests start). The same list feeds the Dockerfile's build stage,
# so CI and the image cannot drift apart.
#
# Usage: tools/ci/install-packages.sh [--list FILE] [EXTRA_PACKAGE...]
#        tools/ci/install-packages.sh --print [--list FILE]   (print the list)
# Runs apt-get only for what is missing, so a second run is quick and offline.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
list="$here/packages.txt"
print=0
extra=()
while (($#)); do
  case $1 in
    --list) list=$2; shift 2 ;;
    --print) print=1; shift ;;
    -h | --help) sed -n '2,9p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) extra+=("$1"); shift ;;
  esac
done

# Package names from a list file: comments and blank lines dropped.
read_list() { sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^[[:space:]]*$/d' "$1"; }

mapfile -t pkgs < <(read_list "$list")
pkgs+=("${extra[@]}")
if ((print)); then
  printf '%s\n' "${pkgs[@]}"
  exit 0
fi

missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ "$status" == installed ]] || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-packages: all ${#pkgs[@]} packages already installed"
  exit 0
fi
echo "install-packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
