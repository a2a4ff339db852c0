#!/usr/bin/env bash
# The soak benchmark: frame-buffer at a steady 20,000 frames/s for a long
# time (30 minutes by default) with churn all along:
#   - processors registering and leaving (fresh ids, fb-processor --unregister),
#   - processors dying (kill -9: the gateway declares them dead and moves
#     their backlog), and a long-lived one killed and started again,
#   - routing strategy changes (PUT /api/v1/routing, every strategy in turn),
#   - dashboard WebSocket clients coming and going (readers and stalled ones),
#   - /metrics and /api/v1/stats scraped as Prometheus and a browser would.
# Every 10 s it samples the gateway's resident memory (VmRSS), its open file
# descriptors and the consumer lag (entries unread + pending in the input
# group). After the warm-up it compares the first third of the samples with
# the last third (RSS and lag by median, descriptors by minimum) and fails
# when any grew by 5% or more (lag against a floor of 1,000 entries). The
# last line is machine-readable: RESULT {...}.
#
# Usage: tools/dev/soak.sh [minutes]        (default 30)
# Env:   FB_BIN_DIR (default build/bin), FB_SOAK_RATE (20000 frames/s),
#        FB_SOAK_WARMUP_S (default: a sixth of the run, 60..300 s),
#        FB_SOAK_KEEP=1 keeps the temporary directory (logs and samples).
# Runs its own redis-server and nats-server on free loopback ports and stops
# everything it started on exit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
helper_py=$root/tools/dev/chaos_helper.py
minutes=${1:-30}
case $minutes in ''|*[!0-9]*) echo "usage: tools/dev/soak.sh [minutes]" >&2; exit 2 ;; esac
[ "$minutes" -ge 2 ] || { echo "soak.sh: at least 2 minutes" >&2; exit 2; }
rate=${FB_SOAK_RATE:-20000}
duration=$((minutes * 60))
warmup=${FB_SOAK_WARMUP_S:-$((duration / 6))}
[ "$warmup" -gt 300 ] && [ -z "${FB_SOAK_WARMUP_S:-}" ] && warmup=300
[ "$warmup" -lt 60 ] && [ -z "${FB_SOAK_WARMUP_S:-}" ] && warmup=60

bin=${FB_BIN_DIR:-build/bin}
case $bin in /*) ;; *) bin=$root/$bin ;; esac
for b in frame-buffer fb-inject fb-processor; do
  [ -x "$bin/$b" ] || { echo "soak.sh: $bin/$b not found: build first and set FB_BIN_DIR" >&2; exit 2; }
done
for t in redis-server redis-cli nats-server python3 curl; do
  command -v "$t" >/dev/null || { echo "soak.sh: $t is not installed" >&2; exit 2; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fb-soak.XXXXXX")
: >"$tmp/pids"
t0=$EPOCHREALTIME
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }'; }
say() { printf '[%5ss] %s\n' "$(since "$t0")" "$*"; }
helper() { python3 "$helper_py" "$@"; }
# shellcheck source=tools/dev/proclib.sh
source "$root/tools/dev/proclib.sh"

cleanup() {
  local rc=$? pid st name
  trap - EXIT INT TERM
  set +e  # clean up everything, whatever fails on the way
  while read -r pid st name; do
    if ours "$pid" "$st"; then kill_tree "$pid"; fi
    wait "$pid" 2>/dev/null || true
  done < <(tac "$tmp/pids")
  if [ "${FB_SOAK_KEEP:-0}" = 1 ]; then echo "soak.sh: logs kept in $tmp"; else rm -rf "$tmp"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


read -r RP NP GP <<<"$(helper ports 3)"
spawn redis "$tmp/redis.log" redis-server --port "$RP" --bind 127.0.0.1 --dir "$tmp" \
  --save '' --appendonly no --daemonize no
wait_for 10 redis redis-cli -p "$RP" ping
mkdir -p "$tmp/js"
spawn nats "$tmp/nats.log" nats-server -a 127.0.0.1 -p "$NP" -js -sd "$tmp/js"
wait_for 10 nats bash -c "exec 3<>/dev/tcp/127.0.0.1/$NP"

api=http://127.0.0.1:$GP
# Death noticed after 5 s without a heartbeat; a dead processor's unacked
# frames moved once idle 5 s.
spawn gateway "$tmp/gateway.log" env REDIS_URL="redis://127.0.0.1:$RP/0" \
  NATS_URL="nats://127.0.0.1:$NP" NATS_JETSTREAM=1 PORT="$GP" CONSUMER_NAME=soak \
  HEARTBEAT_TIMEOUT_MS=5000 CLAIM_IDLE_MS=5000 LOG_LEVEL=info "$bin/frame-buffer"
gw=$LAST_PID
wait_for 20 "the gateway" http_200 "$api/readyz"

proc() { # proc ID CAPS [options]: an fb-processor in the background; pid in LAST_PID
  local id=$1 caps=$2
  shift 2
  spawn "proc-$id" "$tmp/proc-$id.log" "$bin/fb-processor" --api "$api" --id "$id" \
    --capabilities "$caps" --capacity 64 --heartbeat-ms 1000 --redis-url "redis://127.0.0.1:$RP/0" \
    --result-maxlen 100000 --quiet "$@"
}
declare -A BASE
for id in s1 s2 s3 s4; do
  proc "$id" person,vehicle,face --nats-url none
  BASE[$id]="$LAST_PID $(start_time "$LAST_PID")"
done
proc r1 face --transport nats --jetstream --nats-url "nats://127.0.0.1:$NP"
sleep 1

say "soak: $minutes min at $rate frames/s, warm-up ${warmup} s; gateway pid $gw, API $api; logs in $tmp"
# Nine in ten frames for the processors, one in ten 'animal' (no processor:
# DLQ, capped by DLQ_MAXLEN); one entry in 5,000 malformed. The input stream
# is capped at 600,000 entries (30 s of input), far above any lag.
types="person,vehicle,face,person,vehicle,face,person,vehicle,face,animal"
spawn inject "$tmp/inject.log" "$bin/fb-inject" --redis-url "redis://127.0.0.1:$RP/0" \
  --frames 0 --rate "$rate" --cameras 200 --types "$types" --malformed-every 5000 \
  --maxlen 600000 --quiet

# Part of the warm-up: 1,300 routing changes in a row. The gateway keeps
# its events in buffers of fixed size allocated at start (an outbox of 1,024
# events on their way to Redis, a ring of the last 256 for the dashboard,
# about 0.9 kB each); their pages become resident as events first pass
# through them. At the churn's 20-30 events a minute that alone took about
# 40 minutes and looked like growth (+9% over a 30-minute run with a 5-minute
# warm-up); 1,300 events make every slot used once before the measure.
helper routing-burst --url "$api" --n 1300 >>"$tmp/warmup.log"

# Dashboard clients, all run long.
spawn ws "$tmp/ws.log" python3 "$helper_py" ws-churn --url "$api" --seconds "$duration" --clients 6 \
  --stats "$tmp/ws.json"

# ------------------------------------------------------------------ churn
churn() {
  local n=0 now end=$((SECONDS + duration)) id pid st strategies=(round_robin least_loaded
    weighted_round_robin consistent_hash) s=0 victim
  declare -A live=() dead=()
  while [ "$SECONDS" -lt "$end" ]; do
    sleep 5
    now=$SECONDS
    # A new processor every 5 s while fewer than 4 churn processors live.
    if [ "${#live[@]}" -lt 4 ]; then
      n=$((n + 1))
      id=churn-$n-$RANDOM
      "$bin/fb-processor" --api "$api" --id "$id" --capabilities person,face --capacity 32 \
        --heartbeat-ms 1000 --redis-url "redis://127.0.0.1:$RP/0" --nats-url none \
        --result-maxlen 10000 --unregister --quiet >>"$tmp/churn.log" 2>&1 &
      remember $! churn-proc
      live[$id]="$! $(start_time $!) $((now + 20 + RANDOM % 40))"
      echo "$now register $id" >>"$tmp/churn.events"
    fi
    # Each leaves at its time: three in four stop (stopping heartbeat,
    # DELETE), one in four is killed -9 and cleaned up later.
    for id in "${!live[@]}"; do
      read -r pid st until_t <<<"${live[$id]}"
      [ "$now" -ge "$until_t" ] || continue
      if ! ours "$pid" "$st"; then
        echo "$now exited-early $id" >>"$tmp/churn.events"
        dead[$id]=$((now + 10))
      elif [ $((RANDOM % 4)) = 0 ]; then
        kill -KILL "$pid" 2>/dev/null || true
        dead[$id]=$((now + 30))
        echo "$now kill-9 $id" >>"$tmp/churn.events"
      else
        kill -TERM "$pid" 2>/dev/null || true
        echo "$now stop $id" >>"$tmp/churn.events"
        dead[$id]=$((now + 10))
      fi
      wait "$pid" 2>/dev/null || true
      unset "live[$id]"
    done
    # Cleaning up after those that left: the registration (already gone for
    # the ones that stopped) and their stream.
    for id in "${!dead[@]}"; do
      [ "$now" -ge "${dead[$id]}" ] || continue
      curl -s -o /dev/null -X DELETE "$api/api/v1/processors/$id" || true
      redis-cli -p "$RP" del "frames:ready:$id" >/dev/null || true
      unset "dead[$id]"
    done
    # A strategy change every 15 s.
    if [ $((now % 15)) -lt 5 ]; then
      s=$(((s + 1) % 4))
      curl -s -o /dev/null -X PUT "$api/api/v1/routing" -H 'Content-Type: application/json' \
        -d "{\"strategy\":\"${strategies[$s]}\"}" || true
      echo "$now strategy ${strategies[$s]}" >>"$tmp/churn.events"
    fi
    # A long-lived processor killed -9 every 2 minutes, back 8 s later (by
    # then it is dead: its backlog was moved).
    if [ $((now % 120)) -lt 5 ] && [ "$now" -gt 10 ]; then
      victim=s$((1 + RANDOM % 4))
      echo "$now kill-9-restart $victim" >>"$tmp/churn.events"
      echo "$victim" >"$tmp/victim"
    fi
  done
}
churn >"$tmp/churn.out" 2>&1 &
churn_pid=$!
remember "$churn_pid" churn
churn_st=$(start_time "$churn_pid")

# ---------------------------------------------------------------- sampling
samples=$tmp/samples.jsonl
: >"$samples"
metric() { awk -v m="$1" '$1 == m { print $2; exit }' "$tmp/metrics.txt"; }
next_sample=0 victim="" victim_back=0
end=$((SECONDS + duration))
start_s=$SECONDS
while [ "$SECONDS" -lt "$end" ]; do
  kill -0 "$gw" 2>/dev/null || { say "the gateway exited"; exit 1; }
  # The base processor the churn picked: kill -9 now, start again in 8 s.
  if [ -s "$tmp/victim" ] && [ -z "$victim" ]; then
    victim=$(cat "$tmp/victim")
    : >"$tmp/victim"
    read -r vpid vst <<<"${BASE[$victim]}"
    if ours "$vpid" "$vst"; then kill -KILL "$vpid"; fi
    wait "$vpid" 2>/dev/null || true
    victim_back=$((SECONDS + 8))
  fi
  if [ -n "$victim" ] && [ "$SECONDS" -ge "$victim_back" ]; then
    proc "$victim" person,vehicle,face --nats-url none
    BASE[$victim]="$LAST_PID $(start_time "$LAST_PID")"
    victim=""
  fi
  if [ "$SECONDS" -ge "$next_sample" ]; then
    next_sample=$((SECONDS + 10))
    curl -s -m 5 "$api/metrics" >"$tmp/metrics.txt" || : >"$tmp/metrics.txt"
    curl -s -m 5 -o /dev/null "$api/api/v1/stats" || true
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$gw/status")
    fds=$(ls "/proc/$gw/fd" | wc -l)
    lag=$(metric frame_buffer_consumer_lag)
    pend=$(metric frame_buffer_input_pending)
    consumed=$(metric frame_buffer_frames_consumed_total)
    threads=$(awk '/^Threads:/ { print $2 }' "/proc/$gw/status")
    cpu=$(awk '{ print $14 + $15 }' "/proc/$gw/stat")
    rmem=$(redis-cli -p "$RP" info memory | awk -F: '/^used_memory:/ { print $2 + 0 }')
    procs=$(curl -s -m 5 "$api/api/v1/processors/" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo -1)
    printf '{"t":%d,"rss_kb":%d,"fds":%d,"lag":%d,"consumer_lag":%d,"pending":%d,"consumed":%d,"threads":%d,"cpu_ticks":%d,"redis_mem":%d,"processors":%d}\n' \
      $((SECONDS - start_s)) "${rss:-0}" "$fds" $(( ${lag:-0} + ${pend:-0} )) "${lag:-0}" "${pend:-0}" \
      "${consumed:-0}" "${threads:-0}" "${cpu:-0}" "${rmem:-0}" "$procs" >>"$samples"
    if [ $(( (SECONDS - start_s) % 300 )) -lt 10 ]; then
      say "rss ${rss} kB, fds $fds, lag $(( ${lag:-0} + ${pend:-0} )), consumed ${consumed:-0}, processors $procs"
    fi
  fi
  sleep 1
done

if ours "$churn_pid" "$churn_st"; then kill -TERM "$churn_pid"; fi
say "done; churn: $(awk '{ print $2 }' "$tmp/churn.events" | sort | uniq -c | awk '{ printf "%s %s, ", $2, $1 }')dashboard clients $(cat "$tmp/ws.json" 2>/dev/null)"
report=$(helper soak-report "$samples" --warmup "$warmup") && ok=1 || ok=0
python3 - "$report" "$samples" "$rate" "$minutes" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
rows = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
rate, minutes = int(sys.argv[3]), int(sys.argv[4])
if "error" in r:
    print("soak: %s" % r["error"])
    sys.exit(0)
print("soak: %d min at %d frames/s, %d samples, warm-up %d s" % (minutes, rate, r["samples"], r["warmup_s"]))
done = rows[-1]["consumed"] - rows[0]["consumed"]
secs = rows[-1]["t"] - rows[0]["t"]
cpu = (rows[-1]["cpu_ticks"] - rows[0]["cpu_ticks"]) / 100.0
print("  frames consumed: %d in %d s (%.0f/s); gateway CPU %.1f s (%.1f%% of a core)" % (
    done, secs, done / max(secs, 1), cpu, 100.0 * cpu / max(secs, 1)))
for name, label, unit in (("rss_kb", "RSS (median)", "kB"), ("fds", "open fds (minimum)", ""),
                          ("lag", "lag, unread + pending (median)", "")):
    m = r[name]
    print("  %-32s first third %s, last third %s: %+.2f%% (range %s..%s)" % (
        label, m["first"], m["last"], m["growth_pct"], m["min"], m["max"]))
print("  => %s" % ("PASS (growth under 5%)" if r["pass"] else "FAIL (growth of 5% or more)"))
PY
echo "RESULT $report"
[ $ok = 1 ]
