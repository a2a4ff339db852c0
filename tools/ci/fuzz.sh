#!/usr/bin/env bash
# The fuzz smoke (docs/fuzzing.md): builds the libFuzzer targets of
# tests/fuzz with clang (-DFB_FUZZ=ON, warnings as errors) in a build
# directory of their own, replays every input of
# tests/fuzz/regressions/<name>/ (inputs that once crashed), then runs each
# target for SECONDS from a copy of its seed corpus (the tree is not
# modified) with its dictionary, and prints one line per target: executions
# per second and coverage (cov: edges, ft: features) from libFuzzer's final
# stats. Exits non-zero when a replay or a target crashes; the input and
# the log are kept in <build>/fuzz-artifacts/<name>/.
#
# Usage: tools/ci/fuzz.sh [SECONDS]        (default 45 per target)
# Env:   FB_FUZZ_BUILD    build directory (default <repo>/build-fuzz)
#        FB_FUZZ_TARGETS  targets to run, e.g. "frame api" (default: all)
#        CC               compiler (default clang)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
secs=${1:-45}
build=${FB_FUZZ_BUILD:-$root/build-fuzz}
fuzz=$root/tests/fuzz
export CC=${CC:-clang}
[[ $secs =~ ^[0-9]+$ ]] || {
  echo "usage: tools/ci/fuzz.sh [SECONDS]" >&2
  exit 2
}

# The targets, as tests/fuzz/CMakeLists.txt lists them, and the longest
# input each is given: room for a realistic input and then some.
read -ra targets <<<"${FB_FUZZ_TARGETS:-$(sed -n 's/^set(FB_FUZZ_TARGETS \(.*\))$/\1/p' \
  "$fuzz/CMakeLists.txt")}"
declare -A max_len=([frame]=2048 [json]=2048 [register]=2048 [heartbeat]=1024 [routing]=512
  [api]=2048 [urls]=512)
command -v llvm-symbolizer >/dev/null ||
  echo "fuzz.sh: llvm-symbolizer is not on PATH: stacks will not name files and lines" >&2

echo "== building ${targets[*]/#/fuzz_} in $build"
cmake -S "$root" -B "$build" -DFB_FUZZ=ON -DFB_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  >/dev/null
cmake --build "$build" -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >/dev/null

work=$(mktemp -d "${TMPDIR:-/tmp}/fb-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
status=0

# Keeps a failed run's log (libFuzzer's crash-* input is already there) and
# shows what went wrong: the report, and the stack frames in our code.
failed() { # target log what
  local keep=$build/fuzz-artifacts/$1
  mkdir -p "$keep"
  cp "$2" "$keep/"
  echo "!! fuzz_$1: $3; log: $keep/$(basename "$2")"
  grep -E "ERROR:|check failed|runtime error|Test unit written| in [^ ]+ $root/" "$2" |
    head -16 | sed 's/^/   /'
  status=1
}

echo "== replaying tests/fuzz/regressions"
for t in "${targets[@]}"; do
  inputs=()
  [[ -d $fuzz/regressions/$t ]] && mapfile -t inputs < <(find "$fuzz/regressions/$t" -type f)
  ((${#inputs[@]})) || continue
  if "$build/bin/fuzz_$t" "${inputs[@]}" >"$work/$t.replay.log" 2>&1; then
    echo "fuzz_$t: ${#inputs[@]} regression inputs pass"
  else
    failed "$t" "$work/$t.replay.log" "a regression input crashes again"
  fi
done

echo "== fuzzing each target for $secs s"
for t in "${targets[@]}"; do
  cp -r "$fuzz/corpus/$t" "$work/corpus-$t"
  mkdir -p "$build/fuzz-artifacts/$t"
  log=$work/$t.log
  rc=0
  "$build/bin/fuzz_$t" "$work/corpus-$t" -dict="$fuzz/$t.dict" -max_len="${max_len[$t]:-1024}" \
    -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$build/fuzz-artifacts/$t/" >"$log" 2>&1 || rc=$?
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  execs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  printf 'fuzz_%-10s %8s exec/s  %10s runs  cov: %-5s ft: %-6s corpus: %-5s %s\n' "$t" \
    "${execs:-?}" "${runs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$( ((rc)) && echo CRASH || echo ok)"
  ((rc == 0)) || failed "$t" "$log" "crashed (exit $rc)"
done
exit $status
