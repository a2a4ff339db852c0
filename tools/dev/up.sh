#!/usr/bin/env bash
# Installs what frame-buffer needs (Debian 12), builds it, and starts the
# whole system on this machine: redis-server and nats-server on loopback, the
# gateway, two sample processors and an injector at a camera-like rate. Then
# prints the dashboard's URL. Everything runs in the background with its log
# in .run/; `tools/dev/up.sh stop` stops it all.
#
# Usage: tools/dev/up.sh [--install-only | stop | status]
# Env:   FB_PORT (8002), FB_REDIS_PORT (6379), FB_NATS_PORT (4222),
#        FB_RATE (frames/s injected, default 300: 20 cameras at 15 fps)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
run=$root/.run
build=$root/build
port=${FB_PORT:-8002}
redis_port=${FB_REDIS_PORT:-6379}
nats_port=${FB_NATS_PORT:-4222}
rate=${FB_RATE:-300}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

stop_all() {
  [ -d "$run" ] || { echo "nothing is running"; return 0; }
  for pidfile in "$run"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      echo "stopped $(basename "$pidfile" .pid) (pid $pid)"
    fi
    rm -f "$pidfile"
  done
}

status() {
  for pidfile in "$run"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    state=stopped
    kill -0 "$pid" 2>/dev/null && state=running
    printf '%-14s pid %-7s %s\n' "$(basename "$pidfile" .pid)" "$pid" "$state"
  done
}

install() {
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  say "installing Debian packages (build tools, libraries, redis-server, nats-server)"
  # Node.js (for the browser test) only from Debian when there is none yet.
  local node=()
  command -v node >/dev/null || node=(nodejs npm)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive bash "$root/tools/ci/install-packages.sh" \
    redis-server nats-server python3 curl chromium "${node[@]}"
}

# Starts `name` in the background unless it is already running.
start() {
  local name=$1
  shift
  if [ -e "$run/$name.pid" ] && kill -0 "$(cat "$run/$name.pid")" 2>/dev/null; then
    echo "$name is already running"
    return
  fi
  "$@" >"$run/$name.log" 2>&1 &
  echo $! >"$run/$name.pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 100); do port_open "$1" && return 0; sleep 0.1; done
  echo "up.sh: nothing is listening on port $1 after 10 s; see $run/$2.log" >&2
  exit 1
}

case ${1:-} in
  stop) stop_all; exit 0 ;;
  status) status; exit 0 ;;
  --install-only) install; exit 0 ;;
  "") ;;
  *) sed -n '2,11p' "${BASH_SOURCE[0]}"; exit 2 ;;
esac

install
say "building into $build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)"
mkdir -p "$run"

if port_open "$redis_port"; then
  say "using the Redis already listening on 127.0.0.1:$redis_port"
else
  say "starting redis-server on 127.0.0.1:$redis_port"
  start redis redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$run" \
    --appendonly yes --save ''
  wait_port "$redis_port" redis
fi
if port_open "$nats_port"; then
  say "using the NATS server already listening on 127.0.0.1:$nats_port"
else
  say "starting nats-server -js on 127.0.0.1:$nats_port"
  mkdir -p "$run/nats"
  start nats nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$run/nats"
  wait_port "$nats_port" nats
fi

export REDIS_URL=redis://127.0.0.1:$redis_port/0
export NATS_URL=nats://127.0.0.1:$nats_port
say "starting the gateway on port $port"
start gateway env PORT="$port" CONSUMER_NAME=local-1 ${FB_WRAP:-} "$build/bin/frame-buffer"
wait_port "$port" gateway

api=http://127.0.0.1:$port
say "starting two sample processors and the injector ($rate frames/s)"
start processor-a "$build/bin/fb-processor" --api "$api" --id tracker-a \
  --capabilities person,vehicle --capacity 8 --work-ms 2 --heartbeat-ms 5000
start processor-b "$build/bin/fb-processor" --api "$api" --id detector-b \
  --capabilities person,face --capacity 4 --work-ms 4 --heartbeat-ms 5000
sleep 1
start injector "$build/bin/fb-inject" --frames 0 --rate "$rate" --cameras 20 \
  --types person,vehicle,face

cat <<MSG

frame-buffer is running.
  dashboard   http://127.0.0.1:$port/
  API         $api/api/v1/processors/
  metrics     $api/metrics
  logs        $run/*.log
  stop        tools/dev/up.sh stop
MSG
