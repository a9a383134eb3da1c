# lib.sh - what the shell tests share (sourced, never run): their exits,
# temporary directory, free loopback ports, the processes they started
# (stopped by PID on every exit) and the network namespaces they made.
#
#   . "$(dirname "$0")/lib.sh"
#   zxt_init NAME          START, TMP=/tmp/NAME.XXXXXX, PIDS=(), NETNS=(),
#                          and the EXIT/INT/TERM traps
#   skip MSG / fail MSG    exit 77 / exit 1 with the reason printed last
#   step MSG               a phase line with the seconds since start
#   free_port              a loopback TCP port nothing listens on
#   zxt_star T NET HOSTS.. namespaces T-sw (a bridge) and T-HOST for each
#                          host, HOST at NET.1, NET.2, ... (ADDR[HOST])
#
# On exit every PID in PIDS is continued (a stopped process does not die of
# SIGKILL until then) and killed, waited for, every namespace in NETNS is
# deleted, and on failure the tail of each $TMP/*.log is printed. A script
# may define zxt_on_cleanup to stop processes it tracks elsewhere.
# ZEXEC_KEEP_TMP=1 keeps the directory as /tmp/NAME-keep.

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
step() { echo "== $* ($(($(date +%s) - START)) s)"; }

zxt_cleanup() {
  local rc=$? p n
  trap - EXIT INT TERM
  declare -F zxt_on_cleanup >/dev/null && zxt_on_cleanup
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  for n in "${NETNS[@]}"; do ip netns del "$n" 2>/dev/null; done
  if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
    for p in "$TMP"/*.log; do [ -f "$p" ] && { echo "--- $p"; tail -15 "$p"; }; done
  fi
  [ -n "${ZEXEC_KEEP_TMP:-}" ] && rm -rf "/tmp/$ZXT_NAME-keep" && cp -r "$TMP" "/tmp/$ZXT_NAME-keep"
  rm -rf "$TMP"
  exit $rc
}

zxt_init() {
  ZXT_NAME=$1
  START=$(date +%s)
  TMP=$(mktemp -d "/tmp/$1.XXXXXX")
  PIDS=()
  NETNS=()
  trap zxt_cleanup EXIT
  trap 'exit 1' INT TERM
}

# A random port that refuses a connect; the caller binds it at once. It is
# chosen below the kernel's ephemeral range: a port from that range can be
# taken by any outgoing connection (a worker reconnecting every 100 ms) before
# the caller binds it (common/net.c).
free_port() {
  local p lo=32768
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
  [ "$lo" -gt 12000 ] || lo=32768
  for _ in $(seq 50); do
    p=$((10000 + RANDOM % (lo - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  return 1
}

# A star network in namespaces: every host's eth0 on one bridge. Skips
# (77) where the kernel or the user cannot make it.
declare -A ADDR
zxt_star() {
  local t=$1 net=$2 n=1 h
  shift 2
  [ "$(id -u)" -eq 0 ] || skip "not root: network namespaces need root"
  command -v ip >/dev/null || skip "no ip command (iproute2)"
  ip netns add "$t-sw" 2>"$TMP/netns.err" || skip "cannot make network namespaces: $(cat "$TMP/netns.err")"
  NETNS+=("$t-sw")
  ip -n "$t-sw" link add br0 type bridge 2>"$TMP/br.err" || skip "no bridge support: $(cat "$TMP/br.err")"
  ip -n "$t-sw" link set br0 up
  for h in "$@"; do
    ip netns add "$t-$h" || fail "netns $h"
    NETNS+=("$t-$h")
    ip link add "$t$h" type veth peer name eth0 netns "$t-$h" 2>"$TMP/veth.err" ||
      skip "no veth support: $(cat "$TMP/veth.err")"
    ip link set "$t$h" netns "$t-sw"
    ip -n "$t-sw" link set "$t$h" master br0 up
    ip -n "$t-$h" addr add "$net.$n/24" dev eth0
    ip -n "$t-$h" link set eth0 up
    ip -n "$t-$h" link set lo up
    ADDR[$h]=$net.$n
    n=$((n + 1))
  done
}
