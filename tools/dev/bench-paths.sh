#!/usr/bin/env bash
# Times the gateway's three output paths — Redis, core NATS and JetStream —
# each against fb-bench's bare loop for the same path, in turns within one
# run, and prints one line a round and path: frames/s of both, their ratio,
# and the gateway's CPU per frame. On a shared machine only these same-round
# ratios mean anything.
#
# Usage: tools/dev/bench-paths.sh [ROUNDS]  (default 3)
# Env:   FB_BIN_DIR   where fb-bench and frame-buffer are (default build/bin)
#        BENCH_REDIS  a Redis of your own (default redis://127.0.0.1:6401)
#        BENCH_NATS   a nats-server -js of your own (default nats://127.0.0.1:14223)
#        FRAMES       frames a run (default 200000)
# fb-bench deletes the keys and the JetStream stream it uses: never point it
# at servers that matter.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${FB_BIN_DIR:-$root/build/bin}
rounds=${1:-3}
frames=${FRAMES:-200000}
S=("$bin/fb-bench" --redis-url "${BENCH_REDIS:-redis://127.0.0.1:6401}"
   --nats-url "${BENCH_NATS:-nats://127.0.0.1:14223}" --frames "$frames")

# The value of "key" in fb-bench's RESULT line on stdin.
field() { sed -n 's/^RESULT //p' | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

printf '%-6s %-10s %12s %12s %7s %12s\n' round path baseline gateway ratio "cpu/frame"
for ((r = 1; r <= rounds; r++)); do
  for path in redis nats jetstream; do
    args=()
    case $path in
      nats) args=(--transport nats) ;;
      jetstream) args=(--transport nats --jetstream) ;;
    esac
    base=$("${S[@]}" --mode baseline "${args[@]}" 2>/dev/null | field frames_per_s)
    out=$("${S[@]}" --gateway "$bin/frame-buffer" "${args[@]}" 2>/dev/null | grep '^RESULT')
    gw=$(field frames_per_s <<<"$out")
    cpu=$(field cpu_s <<<"$out")
    python3 - "$r" "$path" "$base" "$gw" "$cpu" "$frames" <<'PY'
import sys
r, path, base, gw, cpu, n = sys.argv[1:]
print("%-6s %-10s %12d %12d %7.2f %9.2f µs" % (r, path, float(base), float(gw),
      float(gw) / float(base), float(cpu) / float(n) * 1e6))
PY
  done
done
