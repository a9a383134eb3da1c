#!/usr/bin/env bash
# The partition matrix of issue 16: a zexec cluster on four "hosts" (network
# namespaces on one bridge, as in tests/multihost.sh: broker br, workers w1
# and w2, client cl; their own addresses, never loopback), cut apart in four
# ways while a `zexec map` runs, each with a cut shorter than the liveness
# window and one longer:
#
#   worker   w1 alone          | br w2 cl
#   client   cl alone          | br w1 w2
#   broker   br alone          | w1 w2 cl
#   halves   br w1             | w2 cl
#
#   partition.sh [SHORT LONG]   cut lengths in seconds (default 1 5: the CI
#                               form); the long form is `partition.sh 10 30`
#
# The liveness window is 3 s everywhere (heartbeat 1 s, liveness 3: the
# broker's and the workers' defaults, and the client library's), so the CI
# form's 1 s cut is shorter than it and its 5 s cut longer; the long form's
# 10 s and 30 s cuts are both longer (the issue's partitions). A cut is a
# pair of blackhole routes between every host of one side and every host of
# the other, so nothing crosses it either way and each side stays whole.
#
# Each case: 24 `sleep` tasks of about 0.3 s, each with its own duration,
# which is also its result; the cut once some results are in (the run is
# mid-way); the cut healed after its length; then the map must end within
# 60 s of the heal (0 hung), exit 0 with 24 results, each its own, in order
# (0 lost), and the broker must have resolved exactly 24 tasks (0 resolved
# twice: done + failed, failed 0) -- except when the client was cut off
# from the broker past its liveness (client alone, halves; long cuts): the
# broker forgets its session and a result it resolves meanwhile reaches no
# one; on the client's return it sends its unresolved tasks again and the
# workers re-send results not acknowledged before the cut (docs/protocol.md),
# so the broker may resolve some twice (once into the lost session) while
# the client takes one result each; there the broker's count is printed
# (at least 24), not asserted to be 24. Both workers must be
# registered again before the next case.
#
# Prints one line per case and a table. Exit status: 0 passed, 77 skipped
# (missing capability, reason printed last), else failed. Namespaces, routes
# and processes go on every exit.
set -uo pipefail
SHORT=${1:-1}
LONG=${2:-5}
BIN=${ZEXEC_BIN_DIR:-$(cd "$(dirname "$0")/../build/plain" 2>/dev/null && pwd)}
Z=$BIN/zexec
. "$(dirname "$0")/lib.sh"
T=zxpt$$
NET=10.231.8
N=24

for a in "$SHORT" "$LONG"; do
  case "$a" in '' | *[!0-9.]*) echo "usage: $0 [SHORT LONG] (seconds)" >&2; exit 2 ;; esac
done
zxt_init "$T"
[ -x "$Z" ] && [ -x "$BIN/zexec-broker" ] && [ -x "$BIN/zexec-worker" ] ||
  fail "binaries not found in $BIN (set ZEXEC_BIN_DIR)"
zxt_star "$T" "$NET" br w1 w2 cl
ip -n "$T-br" route add blackhole "${ADDR[cl]}/32" 2>"$TMP/bh.err" ||
  skip "no blackhole routes: $(cat "$TMP/bh.err")"
ip -n "$T-br" route del blackhole "${ADDR[cl]}/32"

"$Z" keygen --secret "$TMP/secret" >/dev/null || fail "zexec keygen --secret"
SEC=(--secret-file "$TMP/secret") # not loopback: the broker refuses to run open
CEP=tcp://${ADDR[br]}:5570
WEP=tcp://${ADDR[br]}:5571
# Daemons are started with `ip netns exec` directly (it execs them, so $! is
# the daemon, never a subshell); ZEXEC_PARENT_PID (this script) is the net
# under that: they exit when the script is gone.
export ZEXEC_PARENT_PID=$$
ip netns exec "$T-br" "$BIN/zexec-broker" --clients "$CEP" --workers "$WEP" --heartbeat 1 --liveness 3 \
  --retries 100 "${SEC[@]}" >>"$TMP/broker.log" 2>&1 &
PIDS+=("$!")
for h in w1 w2; do
  ip netns exec "$T-$h" "$BIN/zexec-worker" --broker "$WEP" --node "$h" --threads 2 --procs 0 \
    --heartbeat 1 "${SEC[@]}" >>"$TMP/$h.log" 2>&1 &
  PIDS+=("$!")
done
zx() { ip netns exec "$T-cl" timeout -k 2 40 "$Z" "$@" --broker "$CEP" "${SEC[@]}"; }
total() { # a total of the broker's status
  zx status --json --timeout 10 2>>"$TMP/status.log" | grep -o "\"$1\":[0-9]*" | tail -1 | cut -d: -f2
}
zx status --wait-workers 2 --timeout 30 >/dev/null 2>&1 || fail "two workers did not register"

# sever "A hosts" "B hosts": nothing crosses between the two sides; heal undoes it
sever() {
  local a b
  for a in $1; do for b in $2; do
    ip -n "$T-$a" route add blackhole "${ADDR[$b]}/32" || fail "route $a -> $b"
    ip -n "$T-$b" route add blackhole "${ADDR[$a]}/32" || fail "route $b -> $a"
  done; done
}
heal() {
  local a b
  for a in $1; do for b in $2; do
    ip -n "$T-$a" route del blackhole "${ADDR[$b]}/32"
    ip -n "$T-$b" route del blackhole "${ADDR[$a]}/32"
  done; done
}

FAILED=0
ROWS=()
case_run() { # name "A hosts" "B hosts" seconds
  local name=$1 a=$2 b=$3 secs=$4 tag="$1 ${4}s"
  step "$tag: cut {$a} | {$b} for $secs s"
  local done0 failed0
  done0=$(total done) failed0=$(total failed)
  [ -n "$done0" ] || fail "$tag: no status before the cut"
  : >"$TMP/in.jsonl"
  : >"$TMP/want"
  for j in $(seq $N); do
    printf '[0.3%02d]\n' "$j" >>"$TMP/in.jsonl"
    printf '0.3%02d\n' "$j" >>"$TMP/want"
  done
  ip netns exec "$T-cl" "$Z" map -q sleep --broker "$CEP" "${SEC[@]}" <"$TMP/in.jsonl" >"$TMP/out.jsonl" \
    2>"$TMP/map.log" &
  local map=$!
  PIDS+=("$map")
  for _ in $(seq 300); do [ "$(grep -c . "$TMP/out.jsonl")" -ge 4 ] && break; sleep 0.05; done
  local before
  before=$(grep -c . "$TMP/out.jsonl")
  [ "$before" -lt $N ] || fail "$tag: the run ended before the cut; make it longer"
  sever "$a" "$b"
  sleep "$secs" # the outage itself, not a synchronisation
  heal "$a" "$b"
  local healed hung=0 rc
  healed=$(date +%s)
  while kill -0 "$map" 2>/dev/null; do
    if [ $(($(date +%s) - healed)) -ge 60 ]; then
      hung=1
      kill -9 "$map"
      break
    fi
    sleep 0.05
  done
  wait "$map"
  rc=$?
  local got lost own=1 twice verdict=ok
  got=$(grep -c . "$TMP/out.jsonl")
  lost=$((N - got))
  paste -d ' ' "$TMP/want" "$TMP/out.jsonl" | awk '{ d = $1 - $2; if (NF != 2 || d > 1e-9 || d < -1e-9) exit 1 }' ||
    own=0
  zx status --wait-workers 2 --timeout 30 >/dev/null 2>&1 || {
    verdict="workers not back"
  }
  local dd df
  dd=$(($(total done) - done0)) df=$(($(total failed) - failed0))
  twice=$((dd + df - N))
  [ "$hung" -eq 0 ] || verdict="hung"
  [ "$hung" -eq 1 ] || [ "$rc" -eq 0 ] || verdict="map status $rc: $(tail -1 "$TMP/map.log")"
  [ "$lost" -eq 0 ] || verdict="$lost lost"
  [ "$own" -eq 1 ] || verdict="a result is not its task's"
  [ "$df" -eq 0 ] || verdict="$df failed"
  # the client's session outlived: the client on the other side from the
  # broker, for longer than the liveness window
  local apart=0 lost_session=0
  case " $a " in *" br "*) case " $a " in *" cl "*) ;; *) apart=1 ;; esac ;;
  *) case " $a " in *" cl "*) apart=1 ;; esac ;; esac
  [ "$apart" -eq 1 ] && awk -v s="$secs" 'BEGIN { exit !(s > 3) }' && lost_session=1
  if [ "$twice" -ne 0 ] && { [ "$lost_session" -eq 0 ] || [ "$twice" -lt 0 ]; }; then
    verdict="broker resolved $((dd + df)) for $N"
  fi
  local row
  row=$(printf '%-7s %5s s  %2d before the cut  %2d results  lost %d  hung %d  broker resolved %d  %s' \
    "$name" "$secs" "$before" "$got" "$lost" "$hung" $((dd + df)) "$verdict")
  echo "$row"
  ROWS+=("$row")
  [ "$verdict" = ok ] || FAILED=$((FAILED + 1))
}

step "four hosts on $NET.0/24; broker on ${ADDR[br]}; cuts of $SHORT s and $LONG s"
for secs in "$SHORT" "$LONG"; do
  case_run worker "w1" "br w2 cl" "$secs"
  case_run client "cl" "br w1 w2" "$secs"
  case_run broker "br" "w1 w2 cl" "$secs"
  case_run halves "br w1" "w2 cl" "$secs"
done
echo "== matrix ($(($(date +%s) - START)) s; $N tasks a case):"
printf '%s\n' "${ROWS[@]}"
[ "$FAILED" -eq 0 ] || fail "$FAILED of ${#ROWS[@]} cases failed"
step "partition: ${#ROWS[@]} cases passed"
exit 0
