# shellcheck shell=bash
# Process bookkeeping shared by tools/dev/chaos.sh and tools/dev/soak.sh
# (sourced). Every process started is written to $tmp/pids with its start
# time, so that a pid the system has since given to another program is
# never signalled. The sourcing script defines $tmp and say().

start_time() { awk '{ print $22 }' "/proc/$1/stat" 2>/dev/null; }
remember() { echo "$1 $(start_time "$1") $2" >>"$tmp/pids"; }
ours() { [ -n "$2" ] && [ "$(start_time "$1")" = "$2" ]; }

# kill_tree PID [SIGNAL]: the signal (KILL) to PID's children, then to PID.
kill_tree() {
  local pid=$1 sig=${2:-KILL} child
  for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do kill_tree "$child" "$sig"; done
  kill "-$sig" "$pid" 2>/dev/null || true
}

# spawn NAME LOG CMD...: starts CMD in the background; its pid in LAST_PID.
spawn() {
  local name=$1 logf=$2
  shift 2
  "$@" >>"$logf" 2>&1 &
  LAST_PID=$!
  remember "$LAST_PID" "$name"
}

# wait_for SECONDS WHAT CMD...: polls CMD until it succeeds; 1 on timeout.
wait_for() {
  local secs=$1 what=$2 end
  shift 2
  end=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$end" ]; then
      say "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.1
  done
}

http_200() { [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1")" = 200 ]; }
