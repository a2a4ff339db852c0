# shellcheck shell=bash disable=SC2154  # me and root come from the caller
# Shared by tools/ci/image-test.sh and tools/ci/pod-test.sh (sourced, not
# run): podman set up for this machine, the local Debian base image, the
# frame-buffer image, the test's own redis-server and nats-server on free
# loopback ports, and the clean-up of everything a test started.
#
# The caller sets `me` (its name for messages) and `root` (the repository)
# before sourcing. Settings from the environment:
#   FB_IMAGE            the image to build and test (default
#                       localhost/frame-buffer:test)
#   FB_IMAGE_NO_BUILD=1 test FB_IMAGE as it is, without building it
#   FB_BASE_REBUILD=1   make the base image again even when it is current
#   FB_DEBIAN_MIRROR    the Debian mirror the base image is made from
#                       (default http://deb.debian.org)
#   FB_KEEP=1           keep the work directory and the containers at the end

FB_IMAGE=${FB_IMAGE:-localhost/frame-buffer:test}
BASE_IMAGE=docker.io/library/debian:bookworm-slim
BASE_LABEL=frame-buffer.debian-snapshot
RECIPE_LABEL=frame-buffer.base-recipe
DEBIAN_MIRROR=${FB_DEBIAN_MIRROR:-http://deb.debian.org}

# --------------------------------------------------------------- output
say() { printf '%s: %s\n' "$me" "$*"; }
ok() { printf '%s: ok: %s\n' "$me" "$*"; }
note() { printf '%s: NOTE: %s\n' "$me" "$*"; }
fail() {
  printf '%s: FAIL: %s\n' "$me" "$*" >&2
  exit 1
}
# Milliseconds on the monotonic clock, and seconds between two of them.
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.2f", (b - a) / 1000 }'; }

# --------------------------------------------------------- prerequisites
# podman missing: one line and exit 0, so the callers may run us anyway.
need_podman() {
  if ! command -v podman >/dev/null; then
    echo "$me: SKIP: podman is not installed (to run it: tools/ci/install-packages.sh --list tools/ci/image-test-packages.txt)"
    exit 0
  fi
  local tool
  for tool in runc curl python3 redis-server nats-server; do
    command -v "$tool" >/dev/null ||
      fail "podman is here but $tool is not: tools/ci/install-packages.sh --list tools/ci/image-test-packages.txt"
  done
}

# The work directory (logs, rendered manifests, containers.conf) under
# build-image/, kept when a check fails so its logs can be read.
workdir=
make_workdir() {
  mkdir -p "$root/build-image"
  workdir=$(mktemp -d "$root/build-image/$me.XXXXXX")
  # crun (podman's default) fails here on setrlimit and on hybrid cgroups,
  # and podman's default nofile (1048576) is above what a container host may
  # grant: runc and explicit limits for every container podman makes,
  # including those of `podman build` and `podman kube play`, which take no
  # --ulimit of their own.
  cat >"$workdir/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF
  export CONTAINERS_CONF="$workdir/containers.conf"
}

# ------------------------------------------------------------- clean-up
cleanup_pids=()
cleanup_ctrs=()
cleanup_pods=()
cleanup_secrets=()
cleanup() {
  local status=$?
  if [[ ${FB_KEEP:-0} == 1 ]]; then
    say "FB_KEEP=1: left running: containers ${cleanup_ctrs[*]:-none}, pods ${cleanup_pods[*]:-none}, pids ${cleanup_pids[*]:-none}"
    return
  fi
  local x
  for x in "${cleanup_pods[@]}"; do podman pod rm -f -t 2 "$x" >/dev/null 2>&1 || true; done
  for x in "${cleanup_ctrs[@]}"; do podman rm -f -t 2 "$x" >/dev/null 2>&1 || true; done
  for x in "${cleanup_secrets[@]}"; do podman secret rm "$x" >/dev/null 2>&1 || true; done
  for x in "${cleanup_pids[@]}"; do kill "$x" 2>/dev/null || true; done
  for x in "${cleanup_pids[@]}"; do wait "$x" 2>/dev/null || true; done
  if [[ -n $workdir ]]; then
    if ((status == 0)); then
      rm -rf "$workdir"
    else
      echo "$me: logs and manifests kept in $workdir" >&2
    fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A command that fails outside a check (set -e) still says what it was.
set -E
trap 'printf "%s: FAIL: %s, line %s: %s\n" "$me" "${BASH_SOURCE[0]##*/}" "$LINENO" "$BASH_COMMAND" >&2' ERR

# ------------------------------------------------------------- servers
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something accepts on 127.0.0.1:$1, at most $2 seconds.
wait_port() {
  local port=$1 deadline=$(($(now_ms) + ${2:-10} * 1000))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    (($(now_ms) < deadline)) || return 1
    sleep 0.05
  done
}

# redis-server on a free loopback port: sets redis_port. $1: a password
# (requirepass), or empty.
redis_port=
start_redis() {
  local pass=${1:-} args
  redis_port=$(free_port)
  mkdir -p "$workdir/redis"
  args=(--port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$workdir/redis"
    --logfile "$workdir/redis/redis.log")
  [[ -z $pass ]] || args+=(--requirepass "$pass")
  redis-server "${args[@]}" >/dev/null 2>&1 &
  cleanup_pids+=($!)
  wait_port "$redis_port" 10 || fail "redis-server did not start: $(tail -5 "$workdir/redis/redis.log")"
}

# nats-server with JetStream on a free loopback port: sets nats_port.
# $1 $2: a user and password, or nothing.
nats_port=
start_nats() {
  local args
  nats_port=$(free_port)
  mkdir -p "$workdir/nats"
  args=(-a 127.0.0.1 -p "$nats_port" -js -sd "$workdir/nats" -l "$workdir/nats/nats.log")
  [[ -z ${1:-} ]] || args+=(--user "$1" --pass "$2")
  nats-server "${args[@]}" >/dev/null 2>&1 &
  cleanup_pids+=($!)
  wait_port "$nats_port" 10 || fail "nats-server did not start: $(tail -5 "$workdir/nats/nats.log")"
}

# ------------------------------------------------------------ HTTP
# GET $1 and print the status code; the body goes to $workdir/body.
http_code() { curl -s -o "$workdir/body" -w '%{http_code}' --max-time 5 "$@" || echo 000; }

# Waits until GET $1 answers 200, at most $2 seconds; prints how long it
# took in milliseconds (from $3, a now_ms value, when given).
wait_200() {
  local url=$1 deadline=$(($(now_ms) + ${2:-20} * 1000)) from=${3:-$(now_ms)}
  until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url") == 200 ]]; do
    (($(now_ms) < deadline)) || return 1
    sleep 0.02
  done
  echo $(($(now_ms) - from))
}

# Field $2 (a Python expression on `d`) of the JSON file $1.
json_get() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

# -------------------------------------------------------- base image
# The Debian snapshot the host's apt sees: the newest Date of the bookworm,
# bookworm-updates and bookworm-security indexes, as 20250520T000000Z. The
# base image is made again when the archive has moved past the one it was
# made from. Prints nothing when apt has no indexes for them.
debian_snapshot() {
  local f d newest=
  for f in /var/lib/apt/lists/*_dists_bookworm_InRelease \
    /var/lib/apt/lists/*_dists_bookworm-updates_InRelease \
    /var/lib/apt/lists/*_dists_bookworm-security_InRelease; do
    [[ -f $f ]] || continue
    d=$(sed -n '/^Date: /{s///p;q}' "$f")
    [[ -n $d ]] || continue
    d=$(date -u -d "$d" +%Y%m%dT%H%M%SZ)
    [[ $d > $newest ]] && newest=$d
  done
  echo "$newest"
}

# Makes docker.io/library/debian:bookworm-slim on a machine with no registry:
# a minbase bookworm with merged /usr, without documentation (copyrights
# kept), man pages, info and locales, its apt lists and caches dropped; the
# dpkg and apt settings stay in the image, so packages installed on top are
# trimmed the same way and leave no .deb behind. Reused while its snapshot label is not older than the
# host's; an image of that name pulled from a registry (no label) is used as
# it is.
ensure_base() {
  local want have start dates recipe have_recipe
  want=$(debian_snapshot)
  # The recipe below, hashed: a change to it makes the base again.
  recipe=$(declare -f ensure_base | sha256sum | cut -c1-12)
  if [[ -z $want ]]; then
    say "no bookworm apt indexes on the host: apt-get update"
    apt-get update -qq || fail "apt-get update failed"
    want=$(debian_snapshot)
  fi
  if podman image exists "$BASE_IMAGE" && [[ ${FB_BASE_REBUILD:-0} != 1 ]]; then
    have=$(podman image inspect --format "{{index .Labels \"$BASE_LABEL\"}}" "$BASE_IMAGE")
    if [[ -z $have || $have == "<no value>" ]]; then
      say "base: $BASE_IMAGE (not made here: used as it is)"
      return
    fi
    have_recipe=$(podman image inspect --format "{{index .Labels \"$RECIPE_LABEL\"}}" "$BASE_IMAGE")
    if [[ $have_recipe != "$recipe" ]]; then
      say "base: $BASE_IMAGE was made by another recipe ($have_recipe, now $recipe): made again"
    elif [[ ! $have < $want ]]; then
      say "base: $BASE_IMAGE, Debian snapshot $have (reused)"
      return
    else
      say "base: $BASE_IMAGE is of snapshot $have, the archive is at $want: made again"
    fi
  fi
  command -v mmdebstrap >/dev/null || fail "mmdebstrap is missing: apt-get install -y mmdebstrap"
  old_base=$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)
  start=$(now_ms)
  dates="$workdir/base-dates"
  local tar="$workdir/rootfs.tar"
  # As in Debian's own slim images: no downloaded .deb and no package cache
  # left behind by an apt-get install on top of the base.
  cat >"$workdir/apt-clean.conf" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  say "base: mmdebstrap --variant=minbase bookworm from $DEBIAN_MIRROR"
  # shellcheck disable=SC2016  # "$1" is the hooks' own argument
  mmdebstrap --variant=minbase --format=tar --quiet \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/groff/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/usr/share/linda/*' \
    --aptopt='Acquire::Languages "none"' \
    --customize-hook="sed -n 's/^Date: //p' \"\$1\"/var/lib/apt/lists/*_InRelease > '$dates'" \
    --customize-hook="cp '$workdir/apt-clean.conf' \"\$1\"/etc/apt/apt.conf.d/docker-clean" \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/log/*.log "$1"/var/log/apt/*' \
    bookworm "$tar" \
    "deb $DEBIAN_MIRROR/debian bookworm main" \
    "deb $DEBIAN_MIRROR/debian bookworm-updates main" \
    "deb $DEBIAN_MIRROR/debian-security bookworm-security main" \
    >"$workdir/mmdebstrap.log" 2>&1 || {
    tail -20 "$workdir/mmdebstrap.log" >&2
    fail "mmdebstrap failed"
  }
  # The snapshot the image really holds (the mirror may have moved since the
  # host's apt-get update).
  local got d
  got=$want
  while read -r d; do
    d=$(date -u -d "$d" +%Y%m%dT%H%M%SZ)
    [[ $d > $got ]] && got=$d
  done <"$dates"
  podman import --quiet \
    --change 'CMD ["bash"]' \
    --change "LABEL $BASE_LABEL=$got" \
    --change "LABEL $RECIPE_LABEL=$recipe" \
    "$tar" "$BASE_IMAGE" >/dev/null || fail "podman import failed"
  rm -f "$tar"
  say "base: made $BASE_IMAGE, Debian snapshot $got, $(image_mb "$BASE_IMAGE") MB, in $(secs_since "$start") s"
}

# Size of image $1 in MB (10^6 bytes, as podman images shows them).
image_mb() { awk -v b="$(podman image inspect --format '{{.Size}}' "$1")" 'BEGIN { printf "%.1f", b / 1e6 }'; }

# -------------------------------------------------------- the image
# Builds FB_IMAGE from the repository's Dockerfile; sets build_secs.
build_secs=
old_base=
build_image() {
  if [[ ${FB_IMAGE_NO_BUILD:-0} == 1 ]]; then
    podman image exists "$FB_IMAGE" || fail "FB_IMAGE_NO_BUILD=1 but there is no image $FB_IMAGE"
    say "image: $FB_IMAGE as it is (FB_IMAGE_NO_BUILD=1)"
    return
  fi
  ensure_base
  local start
  start=$(now_ms)
  say "image: podman build --format docker --runtime runc -t $FB_IMAGE $root"
  # --format docker keeps the Dockerfile's SHELL (and with it pipefail);
  # the OCI format drops it.
  if ! podman build --format docker --runtime runc --layers \
    --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
    -t "$FB_IMAGE" -f "$root/Dockerfile" "$root" >"$workdir/build.log" 2>&1; then
    tail -40 "$workdir/build.log" >&2
    fail "podman build failed (the whole log: $workdir/build.log)"
  fi
  build_secs=$(secs_since "$start")
  say "image: built $FB_IMAGE in $build_secs s"
  # The base image replaced above, unless something still uses it.
  [[ -z $old_base ]] || podman rmi "$old_base" >/dev/null 2>&1 || true
}

# Runs FB_IMAGE (or $image) as podman run would in production here:
# read-only root, its own user, host network, the limits above.
# Usage: run_ctr NAME [podman run options...] -- [command args...]
run_ctr() {
  local name=$1
  shift
  local opts=()
  while (($#)) && [[ $1 != -- ]]; do
    opts+=("$1")
    shift
  done
  [[ ${1:-} == -- ]] && shift
  podman rm -f "$name" >/dev/null 2>&1 || true
  cleanup_ctrs+=("$name")
  podman run -d --name "$name" --runtime runc \
    --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
    --network=host --read-only --read-only-tmpfs=false \
    "${opts[@]}" "$FB_IMAGE" "$@" >/dev/null
}
