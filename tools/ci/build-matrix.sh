#!/usr/bin/env bash
# Build frame-buffer with warnings as errors in every build type it ships,
# with gcc and with clang: Release (what the Dockerfile builds), RelWithDebInfo
# (what the tests run), Debug, and the AddressSanitizer + UBSan build (Debug
# with -DFB_SANITIZE=ON). Each (compiler, type) pair is configured and built
# in its own directory, build-matrix-<compiler>-<type>, with every target
# (the tests too), and the first failure stops the run with its status.
#
# gcc at -O3 (Release) sees format truncations that -O2 does not, and clang
# warns about things gcc does not: a single configuration in CI misses both.
#
# Usage: tools/ci/build-matrix.sh [-k] [COMPILER...]   (default: gcc clang)
#   -k      keep going after a failure (past a failing file too) and report
#           every failing pair at the end, for a look at all the warnings at
#           once; the status is still 1
# Env:   FB_MATRIX_TYPES  build types to build (default:
#                         "Release RelWithDebInfo Debug Sanitize")
#        FB_MATRIX_DIR    where the build directories go (default: the repo)
#        JOBS             parallel jobs (default: nproc)
# A second run only rebuilds what changed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
keep_going=0
if [[ ${1:-} == -k ]]; then
  keep_going=1
  shift
fi
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,20p' "${BASH_SOURCE[0]}"
  exit 0
fi
compilers=("$@")
((${#compilers[@]})) || compilers=(gcc clang)
read -r -a types <<<"${FB_MATRIX_TYPES:-Release RelWithDebInfo Debug Sanitize}"
outdir=${FB_MATRIX_DIR:-$root}
jobs=${JOBS:-$(nproc)}

for cc in "${compilers[@]}"; do
  command -v "$cc" >/dev/null || {
    echo "build-matrix: compiler $cc is missing (apt-get install -y $cc)" >&2
    exit 1
  }
done

failed=()
start_all=$SECONDS
for cc in "${compilers[@]}"; do
  for type in "${types[@]}"; do
    case $type in
      Sanitize) cmake_type=Debug sanitize=ON ;;
      Release | RelWithDebInfo | Debug | MinSizeRel) cmake_type=$type sanitize=OFF ;;
      *)
        echo "build-matrix: unknown build type $type" >&2
        exit 2
        ;;
    esac
    dir="$outdir/build-matrix-$cc-${type,,}"
    echo "== build-matrix: $cc $type ($dir)"
    start=$SECONDS
    # A directory configured with another compiler cannot be switched over.
    if [[ -f "$dir/CMakeCache.txt" ]] &&
      ! grep -qx "CMAKE_C_COMPILER:[A-Z]*=$(command -v "$cc")" "$dir/CMakeCache.txt"; then
      rm -rf "$dir"
    fi
    mkdir -p "$dir"
    status=0
    CC=$cc cmake -S "$root" -B "$dir" -DCMAKE_C_COMPILER="$(command -v "$cc")" \
      -DCMAKE_BUILD_TYPE="$cmake_type" -DFB_WERROR=ON -DFB_SANITIZE="$sanitize" \
      >"$dir/configure.log" 2>&1 || status=$?
    if ((status)); then
      cat "$dir/configure.log" >&2
    else
      keep=()
      if ((keep_going)); then
        # Go on past a failing file too, to see every warning of the pair.
        if [[ -f "$dir/build.ninja" ]]; then keep=(-- -k 0); else keep=(-- -k); fi
      fi
      cmake --build "$dir" -j"$jobs" "${keep[@]}" || status=$?
    fi
    if ((status)); then
      echo "build-matrix: FAILED: $cc $type (status $status)" >&2
      ((keep_going)) || exit "$status"
      failed+=("$cc $type")
    else
      echo "build-matrix: ok: $cc $type in $((SECONDS - start)) s"
    fi
  done
done

if ((${#failed[@]})); then
  printf 'build-matrix: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "build-matrix: all ${#compilers[@]}x${#types[@]} builds passed with -Werror in $((SECONDS - start_all)) s"
