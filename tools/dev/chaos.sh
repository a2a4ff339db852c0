#!/usr/bin/env bash
# The fault campaign: frame-buffer under load while its parts are killed,
# restarted and cut off, and then every frame counted (docs/protocol.md: Delivery
# guarantees; README: High availability). Each scenario runs on servers of its own
# (free ports, a temporary directory) and ends with the accounting of
# tools/dev/chaos_helper.py: delivered + DLQ by reason + trimmed = injected,
# no duplicate, nothing pending. The last lines are the table.
#
# Scenarios:
#   kill9           N kill -9 of the gateway at random moments, injection flat out
#   redis-restart   Redis (AOF, appendfsync always) killed -9 and started again
#   redis-failover  Sentinel: the primary killed -9 (and, without --short, a
#                   SENTINEL FAILOVER back to it afterwards), injection paced
#   nats-restart    nats-server (JetStream, remote processors) stopped and started
#   nats-node-kill  a three-node JetStream cluster: the stream leader killed -9
#   processors      processors die mid-batch: one for good (rescued), others
#                   restarted; a remote one too
#   netcut          the gateway in its own network namespace: its link to Redis
#                   down for 5 s, then its link to NATS down for 5 s
#
# Usage: tools/dev/chaos.sh [--short] [--only LIST] [--kills N] [--seed S] [--keep]
#   --short     the quick campaign CI runs (about 2 minutes, fewer frames and kills)
#   --only      comma-separated scenarios (default: all, in the order above)
#   --kills N   kill -9s in kill9 (default 10; 3 with --short)
#   --seed S    seed of the random moments (default: from the clock; printed)
#   --cut-seconds N  how long netcut keeps each link down (default 5)
#   --keep      keep the temporary directory with every log
# Env: FB_BIN_DIR (default build/bin; relative to the repository root).
# Needs root (network namespaces), redis-server, redis-cli, nats-server,
# python3, curl and ip. Exit status 0 when every scenario passes.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
helper_py=$root/tools/dev/chaos_helper.py

short=0 only="" kills="" seed="" keep=0 cut_s=5
while [ $# -gt 0 ]; do
  case $1 in
    --short) short=1 ;;
    --only) only=$2; shift ;;
    --only=*) only=${1#--only=} ;;
    --kills) kills=$2; shift ;;
    --seed) seed=$2; shift ;;
    --cut-seconds) cut_s=$2; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "chaos.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
all_scenarios="kill9 redis-restart redis-failover nats-restart nats-node-kill processors netcut"
scenarios=${only//,/ }
scenarios=${scenarios:-$all_scenarios}
for s in $scenarios; do
  case " $all_scenarios " in *" $s "*) ;; *) echo "chaos.sh: no scenario '$s'" >&2; exit 2 ;; esac
done
seed=${seed:-$(( $(date +%s%N) % 1000000 ))}
RANDOM=$seed

bin=${FB_BIN_DIR:-build/bin}
case $bin in /*) ;; *) bin=$root/$bin ;; esac
for b in frame-buffer fb-inject fb-processor; do
  [ -x "$bin/$b" ] || { echo "chaos.sh: $bin/$b not found: build first and set FB_BIN_DIR" >&2; exit 2; }
done
for t in redis-server redis-cli nats-server python3 curl ip; do
  command -v "$t" >/dev/null || { echo "chaos.sh: $t is not installed" >&2; exit 2; }
done
if [ "$(id -u)" != 0 ] && [[ " $scenarios " == *" netcut "* ]]; then
  echo "chaos.sh: netcut needs root (ip netns); run as root or leave it out with --only" >&2
  exit 2
fi

# Sizes: (short | full)
if [ $short = 1 ]; then
  kills=${kills:-3}
  n_kill=120000 n_redis=60000 n_failover=60000 n_nats=60000 n_node=50000 n_procs=60000
  cut_rate=4000 failover_rate=15000 drain_timeout=60 kill_gap_max=1500
else
  kills=${kills:-10}
  n_kill=500000 n_redis=300000 n_failover=300000 n_nats=300000 n_node=300000 n_procs=300000
  cut_rate=15000 failover_rate=20000 drain_timeout=180 kill_gap_max=2500
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fb-chaos.XXXXXX")
rows=$tmp/results.jsonl
: >"$rows"
: >"$tmp/pids"
: >"$tmp/netns"
: >"$tmp/links"
t_start=$EPOCHREALTIME

since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
say() { printf '[%6ss] %s\n' "$(since "$t_start")" "$*"; }
# In the background and waited for, so that a signal is handled at once.
helper() { python3 "$helper_py" "$@" & local p=$!; remember "$p" helper; wait "$p"; }

# ------------------------------------------------------------ processes ---
# Every process started is written to $tmp/pids with its start time (so a
# pid the system has since given to another program is never signalled);
# cleanup kills what is left (children first), removes the namespaces and
# links, then the directory.
# shellcheck source=tools/dev/proclib.sh
source "$root/tools/dev/proclib.sh"

cleanup() {
  local rc=$? pid st name ns link
  trap - EXIT INT TERM
  set +e  # clean up everything, whatever fails on the way
  if [ -s "$tmp/pids" ]; then
    while read -r pid st name; do
      if ours "$pid" "$st"; then kill_tree "$pid" KILL; fi
      wait "$pid" 2>/dev/null || true
    done < <(tac "$tmp/pids")
  fi
  while read -r ns; do [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null || true; done <"$tmp/netns"
  while read -r link; do [ -n "$link" ] && ip link del "$link" 2>/dev/null || true; done <"$tmp/links"
  if [ $keep = 1 ]; then
    echo "chaos.sh: logs kept in $tmp"
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


# stop PID [SIGNAL]: the signal (TERM), then KILL after 5 s; reaps it.
stop() {
  local pid=$1 sig=${2:-TERM} watchdog
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill "-$sig" "$pid" 2>/dev/null || true
  ( sleep 5; kill -KILL "$pid" 2>/dev/null ) &
  watchdog=$!
  wait "$pid" 2>/dev/null || true
  kill "$watchdog" 2>/dev/null || true
  wait "$watchdog" 2>/dev/null || true
}

kill9() { kill -9 "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# Kills (-9) every process the current scenario started (the list since
# $1): once its frames are counted nothing of it matters any more.
stop_since() {
  local from=$1 pid st name
  while read -r pid st name; do
    if ours "$pid" "$st"; then kill_tree "$pid" KILL; fi
    wait "$pid" 2>/dev/null || true
  done < <(tail -n +"$((from + 1))" "$tmp/pids" | tac)
}

rand_ms() { echo $(( $1 + (RANDOM * 32768 + RANDOM) % ($2 - $1 + 1) )); }
sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }


rcli() { local port=$1; shift; redis-cli -h 127.0.0.1 -p "$port" "$@"; }

# ---------------------------------------------------------------- servers ---
# start_redis DIR PORT BIND [ARGS...]: AOF with appendfsync always.
start_redis() {
  local dir=$1 port=$2 bind=$3
  shift 3
  mkdir -p "$dir"
  spawn redis "$dir/redis.log" redis-server --port "$port" --bind $bind --dir "$dir" \
    --save '' --appendonly yes --appendfsync always --daemonize no --protected-mode no "$@"
  REDIS_PID=$LAST_PID
  wait_for 10 "redis-server on $port" rcli "$port" ping
}

# start_nats DIR PORT ADDR: one JetStream server.
start_nats() {
  local dir=$1 port=$2 addr=$3
  mkdir -p "$dir/js"
  spawn nats "$dir/nats.log" nats-server -a "$addr" -p "$port" -js -sd "$dir/js"
  NATS_PID=$LAST_PID
  wait_for 10 "nats-server on $port" bash -c "exec 3<>/dev/tcp/$addr/$port"
}

# ---------------------------------------------------------------- gateway ---
# GW_ENV (VAR=value words), GW_PORT, GW_NS (network namespace or empty),
# GW_API (its base URL), GW_LOG are set by each scenario.
gw_start() {
  echo "===== start $(date +%T.%N) =====" >>"$GW_LOG"
  if [ -n "${GW_NS:-}" ]; then
    spawn gateway "$GW_LOG" ip netns exec "$GW_NS" env $GW_ENV PORT="$GW_PORT" "$bin/frame-buffer"
  else
    spawn gateway "$GW_LOG" env $GW_ENV PORT="$GW_PORT" "$bin/frame-buffer"
  fi
  GW_PID=$LAST_PID
}
gw_wait_ready() { wait_for "${1:-20}" "the gateway's /readyz" http_200 "$GW_API/readyz"; }
gw_kill9() { echo "===== kill -9 $(date +%T.%N) =====" >>"$GW_LOG"; kill9 "$GW_PID"; }

# register ID CAPS [nats]: registers with a queue cap far above any frame
# count, so that the campaign sees every frame (fb-processor then finds its
# id taken, 409, and keeps this registration).
register() {
  local id=$1 caps=$2 kind=${3:-redis} body code
  caps=\"${caps//,/\",\"}\"
  body="{\"id\":\"$id\",\"capabilities\":[$caps],\"capacity\":64,\"queue\":\"\",\"max_queue\":10000000,\"heartbeat_interval_ms\":$PROC_HB_MS"
  [ "$kind" = nats ] && body+=",\"transport\":\"nats\",\"subject\":\"frames.ready.$id\""
  body+="}"
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$GW_API/api/v1/processors/register" \
    -H 'Content-Type: application/json' -d "$body")
  case $code in 201|409) ;; *) say "registering $id: HTTP $code"; exit 1 ;; esac
}

# start_proc ID CAPS redis|nats [fb-processor options...]: its pid in PROC[ID].
declare -A PROC
start_proc() {
  local id=$1 caps=$2 kind=$3
  shift 3
  local args=(--api "$PROC_API" --id "$id" --capabilities "$caps" --capacity 64
    --heartbeat-ms "$PROC_HB_MS" --result-maxlen 0 --quiet)
  if [ "$kind" = nats ]; then
    args+=(--transport nats --jetstream --nats-url "$PROC_NATS" --redis-url "$(redis_url)")
  else
    args+=(--redis-url "$(redis_url)" --nats-url none)
  fi
  spawn "proc-$id" "$sdir/proc-$id.log" "$bin/fb-processor" "${args[@]}" "$@"
  PROC[$id]=$LAST_PID
}

# The Redis tools use: the primary, as the sentinels name it when there are any.
redis_port_now() {
  if [ -n "${SENTINEL_PORTS:-}" ]; then
    local s addr
    for s in $SENTINEL_PORTS; do
      addr=$(rcli "$s" sentinel get-master-addr-by-name fbmaster 2>/dev/null | tail -1)
      [ -n "$addr" ] && { echo "$addr"; return 0; }
    done
    return 1
  fi
  echo "$REDIS_PORT"
}
redis_url() { echo "redis://127.0.0.1:$(redis_port_now)/0"; }

# ---------------------------------------------------------------- injector ---
# inject_start TOTAL RATE: fb-inject until TOTAL frames were acknowledged,
# started again (at the primary of the moment) whenever Redis fails it. One
# frame in 28 is an 'animal', which no processor takes (DLQ no_processor),
# the others person, vehicle or face; every 997th entry is malformed.
TYPES="person,vehicle,face,person,vehicle,face,person,vehicle,face,person,vehicle,face,person,vehicle,face,person,vehicle,face,person,vehicle,face,person,vehicle,face,person,vehicle,face,animal"
inject_start() {
  local total=$1 rate=$2
  : >"$sdir/inject.count"
  (
    trap 'kill -TERM $child 2>/dev/null; wait $child; exit 0' TERM
    done_n=0 i=0
    while [ "$done_n" -lt "$total" ]; do
      i=$((i + 1))
      port=$(redis_port_now) || { sleep 0.2; continue; }
      "$bin/fb-inject" --redis-url "redis://127.0.0.1:$port/0" --frames $((total - done_n)) \
        --rate "$rate" --cameras 64 --types "$TYPES" --malformed-every 997 --quiet \
        >"$sdir/inject.$i.out" 2>&1 &
      child=$!
      remember "$child" fb-inject
      rc=0
      wait "$child" || rc=$?
      n=$(sed -n 's/^RESULT .*"injected":\([0-9]*\).*/\1/p' "$sdir/inject.$i.out")
      done_n=$((done_n + ${n:-0}))
      echo "$done_n" >"$sdir/inject.count"
      [ "$rc" = 0 ] && break
      sleep 0.2
    done
  ) &
  INJECT_PID=$!
  remember "$INJECT_PID" injector
}
inject_running() { kill -0 "$INJECT_PID" 2>/dev/null; }
inject_wait() { wait "$INJECT_PID" 2>/dev/null || true; INJECTED=$(cat "$sdir/inject.count"); }

# ---------------------------------------------------------------- scenario ---
# begin NAME: a directory, fresh ports. finish: the accounting, then stops
# everything the scenario started.
begin() {
  SCEN=$1
  sdir=$tmp/$SCEN
  mkdir -p "$sdir"
  PIDS_FROM=$(wc -l <"$tmp/pids")
  SCEN_T0=$EPOCHREALTIME
  EVENTS=()
  SENTINEL_PORTS="" GW_NS="" REDIS_PORT="" PROC_HB_MS=1000
  read -r P1 P2 P3 P4 P5 P6 P7 P8 P9 P10 P11 P12 <<<"$(helper ports 12)"
  say "=== $SCEN"
}
event() { EVENTS+=("$*"); say "  $*"; }
events() { local e out=""; for e in "${EVENTS[@]}"; do out+="${out:+; }$e"; done; echo "$out"; }

finish() {
  local nats_arg=() secs joined rc=0
  [ -n "${ACCOUNT_NATS:-}" ] && nats_arg=(--nats "$ACCOUNT_NATS")
  secs=$(since "$SCEN_T0")
  joined=$(events)
  helper account --redis "127.0.0.1:$(redis_port_now)" "${nats_arg[@]}" --scenario "$SCEN" \
    --out "$rows" --timeout "$drain_timeout" --injector-count "${INJECTED:-0}" \
    --seconds "$secs" --events "$joined" || rc=1
  if [ $rc != 0 ]; then
    say "  $SCEN failed; the end of the gateway's log:"
    tail -n 30 "$GW_LOG" | sed 's/^/    /'
  fi
  stop_since "$PIDS_FROM"
  ACCOUNT_NATS=""
  return 0
}

# Standard cast: three local processors and, with NATS, two remote ones.
local_procs() {
  register p1 person,vehicle && start_proc p1 person,vehicle redis
  register p2 person,vehicle,face && start_proc p2 person,vehicle,face redis
  register p3 vehicle,face && start_proc p3 vehicle,face redis
}
remote_procs() {
  register r1 face nats && start_proc r1 face nats
  register r2 face nats && start_proc r2 face nats
}

gw_env_base() {
  echo "CONSUMER_NAME=chaos-gw LOG_LEVEL=info DLQ_MAXLEN=100000000 ROUTING_STRATEGY=$1"
}

# ------------------------------------------------------------ the scenarios
scenario_kill9() {
  begin kill9
  REDIS_PORT=$P1
  start_redis "$sdir/redis" "$REDIS_PORT" 127.0.0.1 --appendonly no
  start_nats "$sdir/nats" "$P2" 127.0.0.1
  helper js-create --nats "127.0.0.1:$P2"
  GW_PORT=$P3 GW_API=http://127.0.0.1:$P3 GW_LOG=$sdir/gateway.log
  GW_ENV="$(gw_env_base least_loaded) REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 NATS_URL=nats://127.0.0.1:$P2 NATS_JETSTREAM=1"
  PROC_API=$GW_API PROC_NATS=nats://127.0.0.1:$P2
  gw_start && gw_wait_ready
  local_procs && remote_procs
  inject_start "$n_kill" 0
  local k gap gaps=""
  for k in $(seq "$kills"); do
    # Some kills land while the gateway is still recovering from the last.
    if [ $((RANDOM % 3)) = 0 ]; then gap=$(rand_ms 50 400); else gap=$(rand_ms 300 "$kill_gap_max"); fi
    sleep_ms "$gap"
    gw_kill9
    gaps+="${gaps:+, }$gap"
    event "kill -9 #$k after ${gap} ms ($(inject_running && echo "while injecting" || echo "injection over, backlog left"))"
    sleep_ms "$(rand_ms 0 300)"
    gw_start
  done
  gw_wait_ready 30
  inject_wait
  ACCOUNT_NATS=127.0.0.1:$P2
  EVENTS=("$kills kill -9 of the gateway (after $gaps ms), flat-out injection, Redis + JetStream targets")
  finish
}

scenario_redis_restart() {
  begin redis-restart
  REDIS_PORT=$P1
  start_redis "$sdir/redis" "$REDIS_PORT" 127.0.0.1
  GW_PORT=$P3 GW_API=http://127.0.0.1:$P3 GW_LOG=$sdir/gateway.log
  GW_ENV="$(gw_env_base round_robin) REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 NATS_URL=none"
  PROC_API=$GW_API
  gw_start && gw_wait_ready
  local_procs
  inject_start "$n_redis" 0
  local rounds=1 k
  [ $short = 0 ] && rounds=2
  for k in $(seq $rounds); do
    sleep_ms "$(rand_ms 500 1500)"
    kill9 "$REDIS_PID"
    event "redis-server kill -9 #$k"
    sleep 2
    start_redis "$sdir/redis" "$REDIS_PORT" 127.0.0.1
    gw_wait_ready 30
  done
  inject_wait
  EVENTS=("Redis (AOF, appendfsync always) killed -9 $rounds time(s) during flat-out injection, down 2 s each")
  finish
}

# A primary, a replica and three sentinels (quorum 2, down-after 1 s), as
# the integration tests' RedisSentinelSet.
start_sentinel_set() {
  local i port dir
  SENTINEL_PORTS_LIST="$P4 $P5 $P6"
  for i in 0 1; do
    port=$([ $i = 0 ] && echo "$P1" || echo "$P2")
    dir=$sdir/redis-$i
    mkdir -p "$dir"
    {
      echo "port $port"; echo "bind 127.0.0.1"; echo "protected-mode no"; echo "daemonize no"
      echo "dir \"$dir\""; echo "save \"\""; echo "appendonly no"
      echo "replica-announce-ip 127.0.0.1"; echo "repl-diskless-sync-delay 0"
      [ $i = 1 ] && echo "replicaof 127.0.0.1 $P1"
    } >"$dir/redis.conf"
    spawn "redis-$i" "$dir/redis.log" redis-server "$dir/redis.conf"
    eval "DATA_PID_$port=$LAST_PID"
    wait_for 10 "redis $port" rcli "$port" ping
  done
  for port in $SENTINEL_PORTS_LIST; do
    dir=$sdir/sentinel-$port
    mkdir -p "$dir"
    {
      echo "port $port"; echo "bind 127.0.0.1"; echo "protected-mode no"; echo "daemonize no"
      echo "dir \"$dir\""
      echo "sentinel announce-ip 127.0.0.1"; echo "sentinel announce-port $port"
      echo "sentinel resolve-hostnames no"; echo "sentinel announce-hostnames no"
      echo "sentinel monitor fbmaster 127.0.0.1 $P1 2"
      echo "sentinel down-after-milliseconds fbmaster 1000"
      echo "sentinel failover-timeout fbmaster 5000"
      echo "sentinel parallel-syncs fbmaster 1"
    } >"$dir/sentinel.conf"
    spawn sentinel "$dir/sentinel.log" redis-server "$dir/sentinel.conf" --sentinel
    wait_for 10 "sentinel $port" rcli "$port" ping
    # The integration tests' timings (harness.SENTINEL_DEBUG): a new primary
    # is found and announced within about 2 s.
    rcli "$port" sentinel debug info-period 1000 publish-period 500 ping-period 400 >/dev/null
  done
  SENTINEL_PORTS=$SENTINEL_PORTS_LIST
  wait_for 30 "the sentinels to see the replica and each other" sentinel_set_healthy
}

sentinel_set_healthy() {
  local s p
  p=$(redis_port_now) || return 1
  [ "$(rcli "$p" role | head -1)" = master ] || return 1
  for s in $SENTINEL_PORTS; do
    [ "$(rcli "$s" sentinel get-master-addr-by-name fbmaster | tail -1)" = "$p" ] || return 1
    rcli "$s" sentinel master fbmaster | paste - - | grep -q $'^num-other-sentinels\t2$' || return 1
    rcli "$s" sentinel master fbmaster | paste - - | grep -q $'^num-slaves\t1$' || return 1
    rcli "$s" sentinel master fbmaster | paste - - | grep -q $'^flags\tmaster$' || return 1
    rcli "$s" sentinel replicas fbmaster | paste - - | grep -q $'^master-link-status\tok$' || return 1
  done
  rcli "$p" info replication | grep -q 'state=online'
}

# new_primary OLD: every sentinel names a primary other than OLD, which says master.
new_primary() {
  local s p=""
  for s in $SENTINEL_PORTS; do
    local q
    q=$(rcli "$s" sentinel get-master-addr-by-name fbmaster | tail -1)
    [ -n "$p" ] && [ "$q" != "$p" ] && return 1
    p=$q
  done
  [ "$p" != "$1" ] && [ "$(rcli "$p" role | head -1)" = master ]
}

restart_local_procs() {
  local id
  for id in p1 p2 p3; do kill9 "${PROC[$id]}"; done
  start_proc p1 person,vehicle redis
  start_proc p2 person,vehicle,face redis
  start_proc p3 vehicle,face redis
}

scenario_redis_failover() {
  begin redis-failover
  start_sentinel_set
  local sent
  sent=$(echo "$SENTINEL_PORTS" | sed 's/\([0-9]*\)/127.0.0.1:\1/g; s/ /,/g')
  GW_PORT=$P7 GW_API=http://127.0.0.1:$P7 GW_LOG=$sdir/gateway.log
  GW_ENV="$(gw_env_base consistent_hash) REDIS_URL=redis://127.0.0.1:$P1/0 REDIS_SENTINELS=$sent REDIS_SENTINEL_MASTER=fbmaster NATS_URL=none"
  PROC_API=$GW_API
  gw_start && gw_wait_ready
  local_procs
  # Paced: what the injector writes to a primary in its last moments is lost
  # with it (asynchronous replication) before the gateway can see it.
  inject_start "$n_failover" "$failover_rate"
  sleep_ms "$(rand_ms 800 1500)"
  local old t0
  old=$(redis_port_now)
  t0=$EPOCHREALTIME
  eval "kill9 \$DATA_PID_$old"
  wait_for 30 "a new primary" new_primary "$old"
  event "primary $old killed -9, new primary $(redis_port_now) after $(since "$t0") s"
  # The sample processors know one Redis address: start them on the new primary.
  restart_local_procs
  gw_wait_ready 30
  if [ $short = 0 ]; then
    # The old primary back as a replica, then a SENTINEL FAILOVER to it under load.
    local dir=$sdir/redis-$([ "$old" = "$P1" ] && echo 0 || echo 1)
    spawn "redis-back" "$dir/redis.log" redis-server "$dir/redis.conf" --replicaof 127.0.0.1 "$(redis_port_now)"
    eval "DATA_PID_$old=$LAST_PID"
    wait_for 60 "the old primary back as a replica" sentinel_set_healthy
    local cur
    cur=$(redis_port_now)
    until rcli "${SENTINEL_PORTS%% *}" sentinel failover fbmaster | grep -q OK; do sleep 0.2; done
    wait_for 30 "the primary to move back" new_primary "$cur"
    event "SENTINEL FAILOVER $cur -> $(redis_port_now) under load"
    restart_local_procs
    gw_wait_ready 30
  fi
  inject_wait
  EVENTS=("Sentinel, $failover_rate frames/s: $(events)")
  finish
}

scenario_nats_restart() {
  begin nats-restart
  REDIS_PORT=$P1
  start_redis "$sdir/redis" "$REDIS_PORT" 127.0.0.1 --appendonly no
  start_nats "$sdir/nats" "$P2" 127.0.0.1
  helper js-create --nats "127.0.0.1:$P2"
  GW_PORT=$P3 GW_API=http://127.0.0.1:$P3 GW_LOG=$sdir/gateway.log
  GW_ENV="$(gw_env_base weighted_round_robin) REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 NATS_URL=nats://127.0.0.1:$P2 NATS_JETSTREAM=1"
  PROC_API=$GW_API PROC_NATS=nats://127.0.0.1:$P2
  gw_start && gw_wait_ready
  local_procs && remote_procs
  inject_start "$n_nats" 0
  local rounds=1 k sig
  [ $short = 0 ] && rounds=2
  for k in $(seq $rounds); do
    sleep_ms "$(rand_ms 700 1500)"
    sig=TERM
    [ "$k" = 2 ] && sig=KILL
    stop "$NATS_PID" $sig
    event "nats-server stopped (SIG$sig) for 2 s"
    sleep 2
    start_nats "$sdir/nats" "$P2" 127.0.0.1
  done
  inject_wait
  ACCOUNT_NATS=127.0.0.1:$P2
  EVENTS=("nats-server (JetStream, remote processors) restarted: $(events)")
  finish
}

scenario_nats_node_kill() {
  begin nats-node-kill
  REDIS_PORT=$P1
  start_redis "$sdir/redis" "$REDIS_PORT" 127.0.0.1 --appendonly no
  # Three nodes: client ports P4-P6, cluster ports P7-P9, monitoring P10-P12.
  local i cl routes urls="" mons=""
  local cports=($P4 $P5 $P6) clports=($P7 $P8 $P9) mports=($P10 $P11 $P12)
  for i in 0 1 2; do
    urls+="${urls:+,}nats://127.0.0.1:${cports[$i]}"
    mons+="${mons:+,}${mports[$i]}"
  done
  NODE_CMD=()
  for i in 0 1 2; do
    routes=""
    for cl in 0 1 2; do [ $cl != $i ] && routes+="${routes:+,}nats://127.0.0.1:${clports[$cl]}"; done
    mkdir -p "$sdir/n$i/js"
    NODE_CMD[$i]="nats-server -n n$i -a 127.0.0.1 -p ${cports[$i]} -m ${mports[$i]} --cluster_name fbchaos --cluster nats://127.0.0.1:${clports[$i]} --routes $routes -js -sd $sdir/n$i/js"
    spawn "nats-n$i" "$sdir/n$i/nats.log" ${NODE_CMD[$i]}
    eval "NODE_PID_$i=$LAST_PID"
  done
  helper nats-cluster-wait --monitor "$mons"
  helper js-create --nats "127.0.0.1:${cports[0]}" --replicas 3
  GW_PORT=$P3 GW_API=http://127.0.0.1:$P3 GW_LOG=$sdir/gateway.log
  GW_ENV="$(gw_env_base least_loaded) REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 NATS_URL=$urls NATS_JETSTREAM=1 NATS_JS_REPLICAS=3"
  PROC_API=$GW_API PROC_NATS=$urls
  gw_start && gw_wait_ready
  local_procs && remote_procs
  inject_start "$n_node" 0
  sleep_ms "$(rand_ms 800 1500)"
  local leader idx
  leader=$(helper js-leader --nats "$urls")
  idx=${leader#n}
  eval "kill9 \$NODE_PID_$idx"
  event "node $leader (leader of FRAMES) killed -9"
  sleep 3
  spawn "nats-n$idx" "$sdir/n$idx/nats.log" ${NODE_CMD[$idx]}
  eval "NODE_PID_$idx=$LAST_PID"
  event "node $leader started again 3 s later"
  inject_wait
  helper nats-cluster-wait --monitor "$mons" --timeout 60 || true
  ACCOUNT_NATS=$urls
  EVENTS=("three-node JetStream cluster (FRAMES R3), remote processors: $(events)")
  finish
}

scenario_processors() {
  begin processors
  REDIS_PORT=$P1
  start_redis "$sdir/redis" "$REDIS_PORT" 127.0.0.1 --appendonly no
  start_nats "$sdir/nats" "$P2" 127.0.0.1
  helper js-create --nats "127.0.0.1:$P2"
  GW_PORT=$P3 GW_API=http://127.0.0.1:$P3 GW_LOG=$sdir/gateway.log
  # Death is noticed after 3 s of silence, and what a dead processor read
  # but did not acknowledge is moved once idle 2 s.
  GW_ENV="$(gw_env_base round_robin) REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 NATS_URL=nats://127.0.0.1:$P2 NATS_JETSTREAM=1 HEARTBEAT_TIMEOUT_MS=3000 CLAIM_IDLE_MS=2000"
  PROC_API=$GW_API PROC_NATS=nats://127.0.0.1:$P2 PROC_HB_MS=500
  gw_start && gw_wait_ready
  local id
  for id in pa pb pc pd; do register $id person,vehicle,face; done
  register r1 face nats
  register r2 face nats
  local da db dr
  da=$(rand_ms 2000 $((n_procs / 8))) db=$(rand_ms 2000 $((n_procs / 8))) dr=$(rand_ms 500 $((n_procs / 40)))
  start_proc pa person,vehicle,face redis --die-after "$da"
  start_proc pb person,vehicle,face redis --die-after "$db"
  start_proc pc person,vehicle,face redis
  start_proc pd person,vehicle,face redis
  start_proc r1 face nats --die-after "$dr"
  start_proc r2 face nats
  inject_start "$n_procs" 0
  # pc: kill -9 at a random moment, back 1 s later.
  sleep_ms "$(rand_ms 300 1500)"
  kill9 "${PROC[pc]}"
  event "pc killed -9, restarted 1 s later"
  sleep 1
  start_proc pc person,vehicle,face redis
  # pb and r1 die by --die-after with frames in hand; they come back.
  local left=300 restarted_b=0 restarted_r=0
  while [ $left -gt 0 ] && { [ $restarted_b = 0 ] || [ $restarted_r = 0 ]; }; do
    if [ $restarted_b = 0 ] && ! kill -0 "${PROC[pb]}" 2>/dev/null; then
      wait "${PROC[pb]}" 2>/dev/null || true
      sleep 0.5
      start_proc pb person,vehicle,face redis
      event "pb died mid-batch (--die-after $db), restarted"
      restarted_b=1
    fi
    if [ $restarted_r = 0 ] && ! kill -0 "${PROC[r1]}" 2>/dev/null; then
      wait "${PROC[r1]}" 2>/dev/null || true
      sleep 0.5
      start_proc r1 face nats
      event "remote r1 died mid-batch (--die-after $dr), restarted"
      restarted_r=1
    fi
    sleep 0.2
    left=$((left - 1))
  done
  wait_for 60 "pa to die" bash -c "! kill -0 ${PROC[pa]}"
  event "pa died mid-batch (--die-after $da) for good: the gateway moves its backlog"
  inject_wait
  ACCOUNT_NATS=127.0.0.1:$P2
  EVENTS=("processors killed mid-batch: $(events)")
  finish
}

# The gateway alone in a namespace with three links to the host: one to
# Redis, one to NATS, one for its API (so the processors' heartbeats are not
# cut with the other two).
scenario_netcut() {
  begin netcut
  local tag=$(( $$ % 10000 )) k ns
  for k in $(seq 1 250); do
    NET=10.213.$(( (tag + k) % 250 + 1 ))
    ip -4 addr | grep -q " $NET\." || ip -4 route | grep -q "^$NET\." || break
  done
  ns=fbchaos$tag
  ip netns add "$ns"
  echo "$ns" >>"$tmp/netns"
  ip -n "$ns" link set lo up
  local i name
  for i in 0 1 2; do  # 0: Redis, 1: NATS, 2: API
    name=fbc${tag}h$i
    ip link add "$name" type veth peer name "fbc${tag}n$i"
    echo "$name" >>"$tmp/links"
    ip link set "fbc${tag}n$i" netns "$ns"
    ip addr add "$NET.$((i * 4 + 1))/30" dev "$name"
    ip -n "$ns" addr add "$NET.$((i * 4 + 2))/30" dev "fbc${tag}n$i"
    ip link set "$name" up
    ip -n "$ns" link set "fbc${tag}n$i" up
  done
  local redis_ip=$NET.1 nats_ip=$NET.5 api_ip=$NET.10
  REDIS_PORT=$P1
  start_redis "$sdir/redis" "$REDIS_PORT" "127.0.0.1 $redis_ip" --appendonly no
  start_nats "$sdir/nats" "$P2" "$nats_ip"
  helper js-create --nats "$nats_ip:$P2"
  GW_NS=$ns GW_PORT=$P3 GW_API=http://$api_ip:$P3 GW_LOG=$sdir/gateway.log
  GW_ENV="$(gw_env_base least_loaded) REDIS_URL=redis://$redis_ip:$REDIS_PORT/0 NATS_URL=nats://$nats_ip:$P2 NATS_JETSTREAM=1"
  PROC_API=$GW_API PROC_NATS=nats://$nats_ip:$P2
  gw_start && gw_wait_ready
  local_procs && remote_procs
  local secs=$((2 * cut_s + 8))
  inject_start $((cut_rate * secs)) "$cut_rate"
  sleep 3
  ip link set "fbc${tag}h0" down
  sleep "$cut_s"
  ip link set "fbc${tag}h0" up
  event "link to Redis down for $cut_s s"
  wait_for 30 "the gateway ready again" http_200 "$GW_API/readyz" || true
  sleep 2
  ip link set "fbc${tag}h1" down
  sleep "$cut_s"
  ip link set "fbc${tag}h1" up
  event "link to NATS down for $cut_s s"
  inject_wait
  ACCOUNT_NATS=$nats_ip:$P2
  EVENTS=("gateway in a network namespace, ${cut_rate} frames/s: $(events)")
  finish
}

# ------------------------------------------------------------------- main
say "frame-buffer fault campaign ($([ $short = 1 ] && echo short || echo full)), seed $seed, binaries $bin"
say "scenarios: $scenarios; temporary directory $tmp"
for s in $scenarios; do
  "scenario_${s//-/_}"
done

echo
echo "frame-buffer fault campaign: $([ $short = 1 ] && echo 'short (--short)' || echo full), seed $seed, $(since "$t_start") s"
status=0
helper table "$rows" || status=1
if [ $status = 0 ]; then echo "ALL PASS"; else echo "SOME SCENARIOS FAILED"; fi
exit $status
