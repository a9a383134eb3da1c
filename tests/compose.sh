#!/usr/bin/env bash
# The docker-compose file for real, under rootful podman (../shared recipe,
# docs/operations.md), in two steps with separate time limits:
#
#   compose.sh prepare   one-time provisioning, cached for the next run:
#                        installs podman, podman-compose, debootstrap and runc
#                        when missing, makes the base image with debootstrap
#                        when missing, and builds the image from the
#                        Dockerfile (podman's layer cache makes an unchanged
#                        tree's build a few seconds). CTest runs it as the
#                        fixture compose_prepare, with its own generous limit.
#   compose.sh [run]     the test: brings up the broker and two workers, runs
#                        the client service, checks both workers took tasks,
#                        restarts the broker, waits until both workers are
#                        registered with the new broker, runs the client
#                        again, tears everything down. It provisions nothing:
#                        its time is the cluster's, never an install's or a
#                        build's.
#
# Exit status: 0 passed; 77 skipped (a capability is missing: the reason is
# the last line of output; `prepare` records it for `run`); anything else
# failed. Cleans up on every exit. Every step has its own bound, so a slow
# step earlier never shortens a later one; each phase prints its duration.
set -uo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:-run}
START=$(date +%s)
P=zxcompose$$
export ZEXEC_IMAGE=localhost/zexec-test:latest
export ZEXEC_BASE=localhost/debian:bookworm
# where prepare leaves its verdict for run: "ready" or "SKIP: reason"
STATE_DIR=${ZEXEC_COMPOSE_STATE:-/var/tmp/zexec-compose}
STATE=$STATE_DIR/state
skip() { echo "SKIP: $*"; [ "$MODE" = prepare ] && mkdir -p "$STATE_DIR" && echo "SKIP: $*" >"$STATE"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
PHASE_T=$START PHASE=""
# phase NAME: ends the previous phase (printing how long it took), starts NAME
phase() {
  local now; now=$(date +%s)
  [ -n "$PHASE" ] && echo "   $PHASE: $(( now - PHASE_T )) s"
  PHASE=$1 PHASE_T=$now
  [ "$1" = done ] || echo "== $1 (at $(( now - START )) s)"
}
t() { local lim=$1; shift; timeout -k 5 "$lim" "$@"; }

case "$MODE" in prepare|run) ;; *) echo "usage: compose.sh [prepare|run]" >&2; exit 64 ;; esac
[ "$(id -u)" -eq 0 ] || skip "not root: rootful podman is needed"

# podman asks for more than the sandbox's hard limits without the ulimits
# line (the recipe's fix); crun refuses a cgroup v1/v2 hybrid whose v2 tree
# has a controller ("cgroups in hybrid mode not supported"), runc does not.
# A private file, so the machine's own configuration is untouched.
conf() {
  CONF=$(mktemp /tmp/$P.containers.XXXXXX.conf)
  cat >"$CONF" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF
  export CONTAINERS_CONF=$CONF
}

# ---- prepare: everything that happens once per machine or per tree -------
prepare() {
  rm -f "$STATE"
  trap 'rm -f /tmp/$P.*; rm -rf /tmp/$P.rootfs.*' EXIT
  if ! command -v podman >/dev/null || ! command -v podman-compose >/dev/null ||
     ! command -v debootstrap >/dev/null || ! command -v runc >/dev/null; then
    command -v apt-get >/dev/null || skip "podman is not installed and there is no apt-get"
    phase "installing podman, podman-compose, debootstrap, runc"
    # waits for the dpkg lock rather than failing beside another install
    { t 600 apt-get -o DPkg::Lock::Timeout=300 update -qq &&
      DEBIAN_FRONTEND=noninteractive t 900 apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        podman podman-compose debootstrap runc; } >/tmp/$P.apt.log 2>&1 ||
      skip "podman could not be installed: $(tail -1 /tmp/$P.apt.log)"
  fi
  conf
  if ! podman image exists "$ZEXEC_BASE"; then
    phase "making the base image $ZEXEC_BASE with debootstrap"
    local mirror root
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    root=$(mktemp -d /tmp/$P.rootfs.XXXXXX)
    t 900 debootstrap --variant=minbase bookworm "$root" "$mirror" >/tmp/$P.deb.log 2>&1 ||
      { rm -rf "$root"; skip "debootstrap could not make a base image: $(tail -1 /tmp/$P.deb.log)"; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | podman import - "$ZEXEC_BASE" >/dev/null || { rm -rf "$root"; fail "podman import"; }
    rm -rf "$root"
  fi
  cd "$SRC"
  phase "building the image from the Dockerfile (cached layers are reused)"
  t 1200 podman build -q --build-arg BASE="$ZEXEC_BASE" -t "$ZEXEC_IMAGE" . >/tmp/$P.build.log 2>&1 ||
    { tail -30 /tmp/$P.build.log; fail "image build"; }
  # dangling images of earlier trees would fill the disk run after run
  podman image prune -f >/dev/null 2>&1
  phase done
  mkdir -p "$STATE_DIR" && echo ready >"$STATE"
  rm -f "$CONF"
  echo "prepared in $(( $(date +%s) - START )) s"
  exit 0
}
[ "$MODE" = prepare ] && prepare

# ---- run: the test proper --------------------------------------------------
if [ -f "$STATE" ] && grep -q '^SKIP' "$STATE"; then
  echo "$(cat "$STATE") (found by compose_prepare)"; exit 77
fi
command -v podman >/dev/null && command -v podman-compose >/dev/null ||
  fail "podman is not installed: run 'tests/compose.sh prepare' first (CTest's compose_prepare fixture does)"
conf
podman image exists "$ZEXEC_IMAGE" ||
  fail "no image $ZEXEC_IMAGE: run 'tests/compose.sh prepare' first (CTest's compose_prepare fixture does)"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
    echo "-- logs"
    for c in $(podman ps -a --format '{{.Names}}' --filter "label=io.podman.compose.project=$P" 2>/dev/null); do
      echo "--- $c"; podman logs --tail 30 "$c" 2>&1 | tail -30
    done
  fi
  (cd "$SRC" && timeout 60 podman-compose -p "$P" down -t 2 >/dev/null 2>&1)
  for c in $(podman ps -a -q --filter "label=io.podman.compose.project=$P" 2>/dev/null); do
    podman rm -f "$c" >/dev/null 2>&1
  done
  podman network rm -f "${P}_default" >/dev/null 2>&1
  rm -f "$CONF" /tmp/$P.*
  exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

cd "$SRC"
export ZEXEC_CLIENT_PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $(( 20000 + RANDOM % 20000 )))
phase "up: broker, 2 workers, client"
# --scale for Docker; podman-compose 1.0.3 takes the count from deploy.replicas
export ZEXEC_WORKERS=2
t 120 podman-compose -p "$P" up -d --scale worker=2 >/tmp/$P.up.log 2>&1 ||
  { cat /tmp/$P.up.log; fail "compose up"; }
B=${P}_broker_1
CL=${P}_client_1
# a status call may wait up to 120 s (--wait-workers ... --timeout): after a
# broker restart the broker has a new address, and podman 4.3's name service
# has been seen to give it out only 20-45 s later (other times at once); the
# workers re-resolve the name at each reconnect and come back then
st() { t 130 podman exec "$B" zexec status --broker tcp://127.0.0.1:5570 "$@"; }
st --wait-workers 2 --timeout 60 >/dev/null || fail "two workers did not register"
phase "the client service"
rc=$(t 120 podman wait "$CL") || fail "the client did not finish"
out=$(podman logs "$CL" 2>&1)
echo "$out" | sed 's/^/client: /'
[ "$rc" = 0 ] || fail "the client service exited $rc"
echo "$out" | grep -q '^map: 1 4 9 16 25$' || fail "the client's output is wrong"

phase "both workers take tasks"
# 24 sleeps of 0.3 s are more than one worker's slots (2+2 plus prefetch)
t 60 podman exec "$B" sh -c 'for i in $(seq 24); do echo "[0.3]"; done |
  zexec map -q --broker tcp://127.0.0.1:5570 sleep >/dev/null' || fail "zexec map sleep"
table=$(st) || fail "zexec status"
echo "$table"
# NODE PID THREADS PROCS FREE_T FREE_P RUNNING DONE ...: DONE is column 8
busy=$(echo "$table" | awk '/^NODE/{w=1; next} w && NF >= 11 && $8 > 0 {n++} END{print n+0}')
[ "$busy" -eq 2 ] || fail "$busy of 2 workers ran tasks"
# healthchecks call zexec status: run the broker's and a worker's (three
# tries, as the compose file's retries: the machine may be loaded)
hc() { for _ in 1 2 3; do t 30 podman healthcheck run "$1" >/dev/null 2>&1 && return 0; sleep 1; done; return 1; }
hc "$B" || fail "the broker's healthcheck"
hc "${P}_worker_1" || fail "worker 1's healthcheck"

phase "restarting the broker container"
# stop then start: `podman restart` of a container with a restart policy
# races podman 4.3's own restart of it, and now and then leaves it running
# without its process
t 60 podman stop -t 2 "$B" >/dev/null 2>&1 || fail "podman stop broker"
t 60 podman start "$B" >/dev/null 2>&1 || fail "podman start broker"
for _ in $(seq 20); do
  [ "$(podman inspect "$B" --format '{{.State.Status}}' 2>/dev/null)" = running ] && break
  sleep 1
done
podman ps -a --format '{{.Names}} {{.Status}}' --filter "label=io.podman.compose.project=$P"
phase "waiting for both workers to register with the new broker (bound 120 s)"
# the condition is zexec status's own: two workers registered; its bound is
# fixed, whatever the earlier phases took
t0=$(date +%s)
st --wait-workers 2 --timeout 120 >/dev/null ||
  { podman top "$B" 2>&1 | head -5; fail "the workers did not reconnect to the new broker within 120 s"; }
echo "both workers back after $(( $(date +%s) - t0 )) s"
phase "the client service again"
rc=$(t 120 podman start -a "$CL" >/tmp/$P.client2.log 2>&1; echo $?)
sed 's/^/client again: /' /tmp/$P.client2.log
[ "$rc" = 0 ] || fail "the second client run exited $rc"
grep -q '^map: 1 4 9 16 25$' /tmp/$P.client2.log || fail "the second client's output is wrong"
phase done
echo "passed in $(( $(date +%s) - START )) s"
exit 0
