#!/usr/bin/env bash
# The long soak of issue 16: a cluster that runs tasks without a pause while
# one of its workers is killed (SIGKILL) and started again at a fixed
# interval. Not part of CTest (its point is the hours); docs/testing.md has
# the figures measured.
#
#   soak.sh [MINUTES] [KILL_EVERY_S]    (default 60 and 60: an hour, a
#                                        worker killed every minute)
#
# One broker (--heartbeat 0.2: a worker is lost 0.6 s after its death;
# --retries 100), three workers of 2 threads and 2 processes, and the
# `zexec` command, on free loopback ports, all stopped by PID. The client
# runs `zexec map sleep` batches of 200 tasks back to back, each task
# sleeping 0 to 49 ms with its duration as its result (so a result names
# its task), in pool "any" (both pools), alternately one input a task and
# chunks of 4. Every
# KILL_EVERY_S seconds one worker, in turn, gets SIGKILL and is started
# again under the same node name.
#
# Checks, per batch: the map exits 0 within its bound (none hung), with 200
# results in order, each its task's own (none lost, none mixed up); at the
# end: none failed, and its resident memory did not grow past twice its
# size after the first minute (bounded memory). Prints a line per minute and
# the totals. Exit status: 0 passed, else failed.
set -uo pipefail
MINUTES=${1:-60}
EVERY=${2:-60}
BIN=${ZEXEC_BIN_DIR:-$(cd "$(dirname "$0")/../build/plain" 2>/dev/null && pwd)}
Z=$BIN/zexec
. "$(dirname "$0")/lib.sh"
N=200
case "$MINUTES$EVERY" in *[!0-9]*) echo "usage: $0 [MINUTES] [KILL_EVERY_S]" >&2; exit 2 ;; esac
[ "$MINUTES" -gt 0 ] && [ "$EVERY" -gt 0 ] || { echo "usage: $0 [MINUTES] [KILL_EVERY_S]" >&2; exit 2; }
zxt_init zxsoak
W=()
zxt_on_cleanup() { PIDS+=("${W[@]}"); } # the workers of the moment
[ -x "$Z" ] && [ -x "$BIN/zexec-broker" ] && [ -x "$BIN/zexec-worker" ] ||
  fail "binaries not found in $BIN (set ZEXEC_BIN_DIR)"

CP=$(free_port) && WP=$(free_port) && [ "$CP" != "$WP" ] || fail "no free loopback port"
CEP=tcp://127.0.0.1:$CP
WEP=tcp://127.0.0.1:$WP
export ZEXEC_PARENT_PID=$$ # the daemons exit when this script is gone

"$BIN/zexec-broker" --clients "$CEP" --workers "$WEP" --heartbeat 0.2 --retries 100 \
  >"$TMP/broker.log" 2>&1 &
BROKER=$!
PIDS+=("$BROKER")
worker_start() { # index
  "$BIN/zexec-worker" --broker "$WEP" --node "soak$1" --threads 2 --procs 2 --heartbeat 0.2 \
    >>"$TMP/soak$1.log" 2>&1 &
  W[$1]=$!
}
for i in 0 1 2; do worker_start $i; done

zx() { timeout -k 2 20 "$Z" "$@" --broker "$CEP"; }
total() { zx status --json --timeout 5 2>/dev/null | grep -o "\"$1\":[0-9]*" | tail -1 | cut -d: -f2; }
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$BROKER/status"; }
zx status --wait-workers 3 --timeout 15 >/dev/null 2>&1 || fail "three workers did not register"
echo "soak: $MINUTES min, a worker killed every $EVERY s; broker on $CEP"

END=$((START + MINUTES * 60))
NEXT_KILL=$((START + EVERY))
SUB=0 RES=0 KILLS=0 BATCH=0 RSS0= MINUTE=0
while [ "$(date +%s)" -lt "$END" ]; do
  BATCH=$((BATCH + 1))
  : >"$TMP/in.jsonl"
  : >"$TMP/want"
  for j in $(seq $N); do
    d=$(printf '0.0%02d' $(((BATCH * 7 + j * 13) % 50)))
    echo "[$d]" >>"$TMP/in.jsonl"
    echo "$d" >>"$TMP/want"
  done
  chunk=1
  [ $((BATCH % 2)) -eq 0 ] && chunk=4
  timeout -k 2 120 "$Z" map -q --chunksize "$chunk" sleep --broker "$CEP" <"$TMP/in.jsonl" \
    >"$TMP/out.jsonl" 2>"$TMP/map.log" &
  MAP=$!
  while kill -0 "$MAP" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$NEXT_KILL" ]; then
      i=$((KILLS % 3))
      kill -9 "${W[$i]}" 2>/dev/null
      wait "${W[$i]}" 2>/dev/null
      worker_start "$i"
      KILLS=$((KILLS + 1))
      NEXT_KILL=$((NEXT_KILL + EVERY))
    fi
    sleep 0.05
  done
  wait "$MAP"
  rc=$?
  [ $rc -ne 124 ] || fail "batch $BATCH hung (a future never resolved)"
  [ $rc -eq 0 ] || fail "batch $BATCH failed (status $rc): $(tail -3 "$TMP/map.log")"
  got=$(grep -c . "$TMP/out.jsonl")
  [ "$got" -eq $N ] || fail "batch $BATCH: $got results of $N"
  paste -d ' ' "$TMP/want" "$TMP/out.jsonl" | awk '{ d = $1 - $2; if (d > 1e-9 || d < -1e-9) exit 1 }' ||
    fail "batch $BATCH: a result is not its task's"
  SUB=$((SUB + N)) RES=$((RES + got))
  el=$(($(date +%s) - START))
  if [ $((el / 60)) -gt "$MINUTE" ]; then
    MINUTE=$((el / 60))
    [ -n "$RSS0" ] || RSS0=$(rss_kb)
    echo "minute $MINUTE: $SUB tasks, $RES results, $KILLS workers killed, broker RSS $(rss_kb) kB"
  fi
done
[ -n "$RSS0" ] || RSS0=$(rss_kb)
done_n=$(total done) failed_n=$(total failed) stale=$(total stale_results) regs=$(total registrations)
RSS1=$(rss_kb)
echo "totals: $BATCH batches, $SUB tasks submitted, $RES results (each its own, in order)," \
  "$KILLS workers killed; broker done $done_n failed $failed_n stale_results $stale" \
  "registrations $regs; broker RSS $RSS0 kB after the first minute, $RSS1 kB at the end" \
  "($(($(date +%s) - START)) s)"
[ "$failed_n" -eq 0 ] || fail "$failed_n tasks failed"
[ "$RSS1" -le $((RSS0 * 2)) ] || fail "the broker grew from $RSS0 kB to $RSS1 kB"
echo "soak: passed"
exit 0
