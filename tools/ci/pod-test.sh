#!/usr/bin/env bash
# Runs the chart's pod for real: renders the chart with `helm template`,
# turns its StatefulSet's pod template into the Pod of its first replica
# (tools/ci/chart-pod.py) and runs it with `podman kube play` on the
# frame-buffer image, against this test's own redis-server (with a password)
# and nats-server (with a user and password) on free loopback ports. Checks:
#
#   - the environment of the process is the manifest's: every plain value,
#     the downward-API pod name (POD_NAME, and CONSUMER_NAME made from it),
#     and the Secret-backed settings (API_TOKEN, PROCESSOR_TOKEN,
#     REDIS_PASSWORD, NATS_USER, NATS_PASSWORD);
#   - they take effect: /api/v1/stats names the consumer and the routing
#     settings given, the start-up log says api_token=set, Redis and NATS
#     accept the credentials, a registration without the token is refused
#     and one with it is taken, the processor token registers but cannot
#     delete;
#   - the security context holds: uid/gid 10001, no capabilities at all,
#     no privilege escalation, seccomp on, a read-only root with a writable
#     /tmp (the chart's emptyDir), the memory limit;
#   - each probe's path answers 200 on the pod's port;
#   - the gateway stops on SIGTERM within the grace period, status 0.
#
# What podman kube play cannot express is printed as a NOTE line each.
#
# Usage: tools/ci/pod-test.sh
# Without podman it prints one SKIP line and exits 0. Builds the image as
# tools/ci/image-test.sh does (which runs this script after its own checks),
# or tests FB_IMAGE as it is with FB_IMAGE_NO_BUILD=1. helm comes from
# tools/ci/get-helm.sh (cached in .cache/). The packages it needs are in
# tools/ci/image-test-packages.txt. Settings: tools/ci/podman-lib.sh.
set -euo pipefail
me="pod-test"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
case ${1:-} in
  -h | --help)
    sed -n '2,30p' "${BASH_SOURCE[0]}"
    exit 0
    ;;
  '') ;;
  *)
    echo "$me: unknown argument $1 (see --help)" >&2
    exit 2
    ;;
esac

# shellcheck source=tools/ci/podman-lib.sh
source "$root/tools/ci/podman-lib.sh"
need_podman
python3 -c 'import yaml' 2>/dev/null || fail "python3's yaml module is missing: apt-get install -y python3-yaml"
command -v slirp4netns >/dev/null || fail "slirp4netns is missing: apt-get install -y slirp4netns"
make_workdir
t_all=$(now_ms)

runc_version=$(runc --version)
say "$(podman --version), ${runc_version%%$'\n'*}"
build_image
helm=$(bash "$root/tools/ci/get-helm.sh" "$root/.cache")

# ------------------------------------------------------------ servers
rand() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
redis_pass=$(rand)
nats_user=fb-$(rand | cut -c1-8)
nats_pass=$(rand)
api_token=$(rand)
processor_token=$(rand)
start_redis "$redis_pass"
start_nats "$nats_user" "$nats_pass"
http_port=$(free_port)
say "servers: redis-server (password) on 127.0.0.1:$redis_port, nats-server (user) on 127.0.0.1:$nats_port"

# ------------------------------------------------------------ render
# The pod gets its own network namespace, as on Kubernetes, through
# slirp4netns; allow_host_loopback lets it reach the host's loopback at
# 10.0.2.2, where Kubernetes would use the Services of Redis and NATS.
host=10.0.2.2
release=fbpt$$
repo=${FB_IMAGE%:*}
tag=${FB_IMAGE##*:}
cat >"$workdir/values.yaml" <<EOF
replicaCount: 1
image:
  repository: "$repo"
  tag: "$tag"
redis:
  url: "redis://$host:$redis_port/0"
nats:
  url: "nats://$host:$nats_port"
config:
  port: $http_port
  consumerNamePrefix: "podtest-"
  routingStrategy: consistent_hash
  overloadPolicy: reject
  batchSize: 64
  heartbeatTimeoutMs: 45000
  logFormat: json
secret:
  apiToken: "$api_token"
  processorToken: "$processor_token"
  redisPassword: "$redis_pass"
  natsUser: "$nats_user"
  natsPassword: "$nats_pass"
EOF
"$helm" template "$release" "$root/charts/frame-buffer" -f "$workdir/values.yaml" \
  >"$workdir/rendered.yaml" || fail "helm template failed"
python3 "$root/tools/ci/chart-pod.py" "$workdir/rendered.yaml" "$workdir" >"$workdir/notes" ||
  fail "could not make a Pod of the StatefulSet"
sed "s/^/$me: /" "$workdir/notes"
note "network: the pod runs on slirp4netns (its own network namespace; its port is published on the host) and reaches the test's servers at $host; on Kubernetes they are Services"

facts=$workdir/facts.json
pod=$(json_get "$facts" 'd["pod"]')
ctr=$pod-$(json_get "$facts" 'd["container"]')
for f in "$workdir"/secret-*.json; do
  [[ -e $f ]] || continue
  s=${f##*/secret-}
  s=${s%.json}
  podman secret rm "$s" >/dev/null 2>&1 || true
  podman secret create "$s" "$f" >/dev/null
  cleanup_secrets+=("$s")
done

# ---------------------------------------------------------------- play
cleanup_pods+=("$pod")
t_play=$(now_ms)
podman kube play --network slirp4netns:allow_host_loopback=true "$workdir/pod.yaml" \
  >"$workdir/kube-play.log" 2>&1 || {
  cat "$workdir/kube-play.log" >&2
  fail "podman kube play failed"
}
api=http://127.0.0.1:$http_port
if ! ready_ms=$(wait_200 "$api/readyz" 30 "$t_play"); then
  podman logs "$ctr" >&2 || true
  fail "the pod did not become ready within 30 s"
fi
ready_s=$(awk -v m="$ready_ms" 'BEGIN { printf "%.2f", m / 1000 }')
ok "podman kube play: $pod ready (/readyz 200) $ready_s s after kube play started"

# ------------------------------------------------------------ probes
mapfile -t probes < <(json_get "$workdir/probes.json" '"\n".join("%s %s %s" % (p["kind"], p["path"], p["port"]) for p in d)')
((${#probes[@]})) || fail "the chart's container has no probes"
for p in "${probes[@]}"; do
  read -r kind path port <<<"$p"
  [[ $port == "$http_port" ]] || fail "$kind's port $port is not the gateway's port $http_port"
  code=$(http_code "http://127.0.0.1:$port$path")
  [[ $code == 200 ]] || fail "$kind $path answers $code"
  ok "$kind: GET $path on port $port answers 200"
done

# ------------------------------------------------------- environment
pid=$(podman inspect --format '{{.State.Pid}}' "$ctr")
# Compared in Python; secret values are never printed.
python3 - "$workdir/expected-env.json" "/proc/$pid/environ" <<'EOF' || fail "the process's environment is not the manifest's"
import json, sys
want = json.load(open(sys.argv[1]))
got = dict(kv.split("=", 1) for kv in open(sys.argv[2], "rb").read().decode().split("\0") if "=" in kv)
secret = {"API_TOKEN", "PROCESSOR_TOKEN", "REDIS_PASSWORD", "NATS_USER", "NATS_PASSWORD",
          "REDIS_SENTINEL_PASSWORD", "NATS_TOKEN"}
bad = 0
for k, v in want.items():
    if got.get(k) != v:
        bad += 1
        shown = "(secret)" if k in secret else "%r, expected %r" % (got.get(k), v)
        print("pod-test: env %s: %s" % (k, "missing" if k not in got else shown), file=sys.stderr)
for k in sorted(secret & set(want)):
    if got.get(k) == want[k]:
        print("pod-test: ok: env %s arrives from the Secret" % k)
sys.exit(1 if bad else 0)
EOF
ok "the process has all $(json_get "$workdir/expected-env.json" 'len(d)') variables of the manifest, with the manifest's values"

http_code "$api/api/v1/stats" >/dev/null
stats=$workdir/stats.json
cp "$workdir/body" "$stats"
consumer=$(json_get "$stats" 'd["consumer"]')
[[ $consumer == "podtest-$pod" ]] || fail "the consumer is '$consumer', expected podtest-$pod (prefix + downward-API pod name)"
ok "downward API: the consumer is $consumer (consumerNamePrefix + the pod's name)"
routing=$(json_get "$stats" '"%s %s %s" % (d["routing"]["strategy"], d["routing"]["overload_policy"], d["routing"]["batch_size"])')
[[ $routing == "consistent_hash reject 64" ]] || fail "routing settings in /api/v1/stats: $routing, expected consistent_hash reject 64"
ok "the chart's settings took effect: strategy, overload policy, batch size ($routing)"
logs=$(podman logs "$ctr" 2>&1)
[[ $logs == *"api_token=set"* ]] || fail "the start-up log does not say api_token=set"
[[ $logs == *"redis=redis://***@$host:$redis_port/0"* ]] || fail "the start-up log does not show the Redis password hidden"
for secret in "$redis_pass" "$api_token" "$processor_token" "$nats_pass"; do
  [[ $logs != *"$secret"* ]] || fail "a secret appears in the log"
done
http_code "$api/health" >/dev/null
conns=$(json_get "$workdir/body" 'd["connections"]')
[[ $conns == *"'redis': True"* && $conns == *"'nats': True"* ]] ||
  fail "not connected with the Secret's credentials: $conns"
ok "Secret-backed settings in effect: Redis (requirepass) and NATS (user/password) accept them, api_token=set in the log, no secret in it"
body='{"id":"pod-proc","capabilities":["person"],"capacity":2,"queue":""}'
code=$(http_code -X POST -H 'Content-Type: application/json' -d "$body" "$api/api/v1/processors/register")
[[ $code == 401 ]] || fail "a registration without the API token answered $code, expected 401"
code=$(http_code -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $api_token" \
  -d "$body" "$api/api/v1/processors/register")
[[ $code == 201 ]] || fail "a registration with the API token answered $code: $(cat "$workdir/body")"
ok "API_TOKEN: a registration without it is refused (401), with it taken (201)"
body='{"id":"pod-proc-2","capabilities":["person"],"capacity":2,"queue":""}'
code=$(http_code -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $processor_token" \
  -d "$body" "$api/api/v1/processors/register")
[[ $code == 201 ]] || fail "a registration with the processor token answered $code: $(cat "$workdir/body")"
code=$(http_code -X DELETE -H "Authorization: Bearer $processor_token" "$api/api/v1/processors/pod-proc-2")
[[ $code == 401 ]] || fail "a DELETE with the processor token answered $code, expected 401"
code=$(http_code -X DELETE -H "Authorization: Bearer $api_token" "$api/api/v1/processors/pod-proc-2")
[[ $code == 204 ]] || fail "a DELETE with the API token answered $code, expected 204"
ok "PROCESSOR_TOKEN: takes a registration (201) but not a DELETE (401), which the API token may (204)"

# -------------------------------------------------- security context
read -r run_uid run_gid < <(json_get "$facts" '"%s %s" % (d["podSecurityContext"]["runAsUser"], d["podSecurityContext"]["runAsGroup"])')
st=/proc/$pid/status
field() { awk -v k="$1:" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "$st"; }
[[ $(field Uid) == "$run_uid $run_uid $run_uid $run_uid" ]] || fail "uids: $(field Uid), expected $run_uid"
[[ $(field Gid) == "$run_gid $run_gid $run_gid $run_gid" ]] || fail "gids: $(field Gid), expected $run_gid"
for c in CapInh CapPrm CapEff CapBnd CapAmb; do
  [[ $(field $c) == 0000000000000000 ]] || fail "$c is $(field $c): capabilities left after drop ALL"
done
[[ $(field NoNewPrivs) == 1 ]] || fail "NoNewPrivs is $(field NoNewPrivs) with allowPrivilegeEscalation: false"
[[ $(field Seccomp) == 2 ]] || fail "no seccomp filter (Seccomp: $(field Seccomp)) with seccompProfile RuntimeDefault"
ok "uid $run_uid, gid $run_gid, no capabilities (inheritable, permitted, effective, bounding, ambient), no_new_privs, seccomp filter"
[[ $(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$ctr") == true ]] || fail "the root is not read-only"
out=$(podman exec "$ctr" /usr/bin/touch /probe 2>&1) && fail "the pod could write to its root file system"
[[ $out == *"Read-only file system"* ]] || fail "writing to the root failed, but not as read-only: $out"
if [[ " $(json_get "$facts" '" ".join(d["volumeMounts"])') " == *" /tmp "* ]]; then
  podman exec "$ctr" /usr/bin/touch /tmp/probe || fail "the emptyDir on /tmp is not writable by uid $run_uid"
  ok "read-only root; /tmp (the chart's emptyDir) writable"
else
  ok "read-only root"
fi
limit=$(json_get "$facts" 'd["limits"].get("memory", "")')
if [[ -n $limit ]]; then
  bytes=$(python3 -c 'import sys; v = sys.argv[1]; u = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
n = v.rstrip("KMGi"); print(int(n) * u.get(v[len(n):], 1))' "$limit")
  got=$(podman inspect --format '{{.HostConfig.Memory}}' "$ctr")
  [[ $got == "$bytes" ]] || fail "memory limit $got, expected $limit ($bytes)"
  ok "memory limit $limit applied"
fi

# -------------------------------------------------------------- stop
# As the kubelet does: SIGTERM to the container, SIGKILL after the grace.
grace=$(json_get "$facts" 'd["terminationGracePeriodSeconds"]')
t_stop=$(now_ms)
# (podman's complaints about the healthcheck timer it could not make go to the log)
podman stop -t "$grace" "$ctr" >/dev/null 2>>"$workdir/kube-play.log"
stop_s=$(secs_since "$t_stop")
status=$(podman inspect --format '{{.State.ExitCode}}' "$ctr")
logs=$(podman logs "$ctr" 2>&1)
((status == 0)) || fail "the gateway exited with status $status on SIGTERM: $(tail -3 <<<"$logs")"
[[ $logs == *'"stopped"'* ]] || fail "no clean stop in the log: $(tail -3 <<<"$logs")"
ok "SIGTERM: stopped cleanly (status 0) in $stop_s s (grace ${grace} s)"
podman pod rm -f -t 2 "$pod" >/dev/null 2>&1 || true

cat <<EOF
$me: --------------------------------------------------------------
$me: pod              $pod from the chart's StatefulSet ($FB_IMAGE)
$me: kube play->ready $ready_s s
$me: SIGTERM to exit  $stop_s s
$me: NOTEs            $(grep -c '^NOTE' "$workdir/notes") things podman kube play cannot express, and the network (above)
$me: pod checks       passed in $(secs_since "$t_all") s
$me: --------------------------------------------------------------
EOF
