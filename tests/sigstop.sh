#!/usr/bin/env bash
# SIGSTOP/SIGCONT trials (issue 16): a worker stopped past its liveness, so
# the broker declares it lost and runs its tasks again on the other worker,
# then continued, so the results of the attempts it was running reach the
# broker late. Those results must be dropped (attempt tokens; the broker
# counts them as `stale_results`), and every future resolves exactly once.
#
#   sigstop.sh [TRIALS]     (default 20, the CI form; the long form is 1000)
#
# One broker (--heartbeat 0.1 --liveness 3: a peer is lost after 0.3 s of
# silence), two workers, w1 of 4 threads (the one stopped) and w2 of 16
# (room for w1's tasks beside its own, so their retries start at once), and
# the `zexec` command, all on free loopback ports. Each trial:
#
#   1. `zexec map sleep` of 16 tasks of about 0.5 s, each with its own
#      duration, which is also its result (so a result names its task)
#   2. as soon as the broker shows w1 running tasks: SIGSTOP w1, then wait
#      until the broker has dropped it from its table (lost), noting the
#      tasks it had assigned w1 until then
#   3. SIGCONT w1: on odd trials at once (its stale results race the
#      retries running on w2), on even trials after the map has ended (they
#      arrive for tasks already resolved)
#   4. checks: the map exits 0 within its bound (none hung) with 16
#      results, each its task's own, in order (none lost); the broker
#      resolved exactly 16 tasks in the trial (done + failed: none resolved
#      twice, none failed); w1 registers again; and every task w1 had ends
#      one way: dropped as a stale result (`stale_results`), or accepted
#      from w1 when it took the task back at READY before another attempt
#      had started (w1's done count)
#
# At the end the workers and the broker must exit 0 on SIGTERM (with an
# ASan build, ZEXEC_BIN_DIR=build/asan, that includes the leak check).
#
# Prints one line per trial (tasks, results, w1's tasks at the stop, stale
# results dropped) and the totals. Exit status: 0 passed, 77 skipped (reason
# printed last), else failed. Processes are stopped by PID on every exit.
set -uo pipefail
TRIALS=${1:-20}
BIN=${ZEXEC_BIN_DIR:-$(cd "$(dirname "$0")/../build/plain" 2>/dev/null && pwd)}
Z=$BIN/zexec
. "$(dirname "$0")/lib.sh"
K=16

case "$TRIALS" in '' | *[!0-9]* | 0) echo "usage: $0 [TRIALS]" >&2; exit 2 ;; esac
zxt_init zxstop
fail() { echo "FAIL: trial ${TRIAL:-0}: $*"; exit 1; }
[ -x "$Z" ] && [ -x "$BIN/zexec-broker" ] && [ -x "$BIN/zexec-worker" ] ||
  fail "binaries not found in $BIN (set ZEXEC_BIN_DIR)"
command -v timeout >/dev/null || skip "no timeout command (coreutils)"

CP=$(free_port) && WP=$(free_port) && [ "$CP" != "$WP" ] || skip "no free loopback port"
CEP=tcp://127.0.0.1:$CP
WEP=tcp://127.0.0.1:$WP
export ZEXEC_PARENT_PID=$$ # the daemons exit when this script is gone

"$BIN/zexec-broker" --clients "$CEP" --workers "$WEP" --heartbeat 0.1 --liveness 3 --retries 100 \
  >"$TMP/broker.log" 2>&1 &
PIDS+=("$!")
worker_start() { # node threads
  "$BIN/zexec-worker" --broker "$WEP" --node "$1" --threads "$2" --procs 0 --heartbeat 0.1 \
    >>"$TMP/$1.log" 2>&1 &
  PIDS+=("$!")
}
worker_start w1 4
W1=$!
worker_start w2 16

zx() { timeout -k 2 20 "$Z" "$@" --broker "$CEP"; }
status() { zx status --json --timeout 5 >"$TMP/st.json" 2>>"$TMP/status.log"; }
# a total from the last status
total() { grep -o "\"$1\":[0-9]*" "$TMP/st.json" | tail -1 | cut -d: -f2; }
# a field of w1's entry in the last status, empty when w1 is not listed
w1_field() { grep -o "\"node\":\"w1\"[^}]*\"$1\":[0-9]*" "$TMP/st.json" | grep -o '[0-9]*$'; }
w1_running() { w1_field running; }

zx status --wait-workers 2 --timeout 15 >/dev/null 2>&1 || fail "two workers did not register"
echo "broker on $CEP, workers w1 (stopped in each trial) and w2; $TRIALS trials of $K tasks"

# Polls until a condition holds, at most $1 seconds; 1 if it never does.
until_ok() {
  local end=$(($(date +%s) + $1))
  shift
  while ! "$@"; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.02
  done
}
w1_busy() { status && [ "$(w1_running)" ] && [ "$(w1_running)" -gt 0 ]; }
w1_busy_or_over() { w1_busy || ! kill -0 "$MAP" 2>/dev/null; }
# w1 no longer listed; until then, the most tasks the broker has assigned it
# (running or sent ahead), in $given: it dispatches nothing once w1 is lost
w1_gone() {
  status || return 1
  local a
  a=$(w1_field assigned)
  [ -z "$a" ] || { [ "$a" -le "$given" ] || given=$a; return 1; }
}
both_in() { status && [ "$(w1_running)" ] && [ "$(total running)" -eq 0 ]; }
# every task w1 was running at the stop has ended one way: its result
# accepted (w1 took it back at READY before another attempt started: w1's
# done count) or dropped as stale; the broker's running total is 0
settled() {
  status && [ "$(w1_field done)" ] &&
    [ $(($(w1_field done) - w1done0 + $(total stale_results) - stale0)) -eq "$1" ] &&
    [ "$(total running)" -eq 0 ]
}

SUB=0 RES=0 GIVEN=0 STALE=0 BACK=0 IDLE=0
for TRIAL in $(seq "$TRIALS"); do
  status || fail "no status"
  done0=$(total done) failed0=$(total failed) stale0=$(total stale_results) w1done0=$(w1_field done)
  : >"$TMP/in.jsonl"
  : >"$TMP/want"
  for j in $(seq $K); do
    echo "[0.5$j$((TRIAL % 10))]" >>"$TMP/in.jsonl"
    echo "0.5$j$((TRIAL % 10))" >>"$TMP/want"
  done
  # bounded: a hung future ends the map with timeout's status 124
  timeout -k 2 30 "$Z" map -q sleep --broker "$CEP" <"$TMP/in.jsonl" >"$TMP/out.jsonl" \
    2>"$TMP/map.log" &
  MAP=$!
  # long tasks go only to free slots, and w2 has room for all 16: when it
  # asks first the broker may place every one there (seen once in about 60
  # trials on a loaded machine). Such a trial checks only the map's results
  # and is not counted; too many of them fail the run.
  until_ok 10 w1_busy_or_over || fail "w1 was given no task and the map did not end"
  if ! w1_busy; then
    wait "$MAP" || fail "the map failed (status $?) in a trial where w1 ran nothing"
    [ "$(grep -c . "$TMP/out.jsonl")" -eq $K ] || fail "a trial where w1 ran nothing lost results"
    IDLE=$((IDLE + 1))
    [ $((IDLE * 2)) -le "$TRIALS" ] || fail "w1 ran nothing in $IDLE trials"
    echo "trial $TRIAL: $K submitted, all placed on w2 (w1 ran nothing): not counted"
    continue
  fi
  kill -STOP "$W1"
  given=0
  until_ok 10 w1_gone || fail "the broker did not declare the stopped w1 lost"
  if [ $((TRIAL % 2)) -eq 1 ]; then
    kill -CONT "$W1"
    wait "$MAP"
    rc=$?
  else
    wait "$MAP"
    rc=$?
    kill -CONT "$W1"
  fi
  [ $rc -ne 124 ] || fail "the map hung (a future never resolved)"
  [ $rc -eq 0 ] || fail "the map failed (status $rc): $(tail -3 "$TMP/map.log")"
  got=$(grep -c . "$TMP/out.jsonl")
  [ "$got" -eq $K ] || fail "$got results of $K"
  # each result is its own task's duration, in order
  paste -d ' ' "$TMP/want" "$TMP/out.jsonl" | awk '{ d = $1 - $2; if (d > 1e-9 || d < -1e-9) exit 1 }' ||
    fail "a result is not its task's: $(paste -d ' ' "$TMP/want" "$TMP/out.jsonl" | tr '\n' ' ')"
  until_ok 15 both_in || fail "w1 did not register again after SIGCONT"
  until_ok 10 settled "$given" ||
    fail "w1 had $given tasks at the stop: $(($(w1_field done) - w1done0)) results accepted from it," \
      "$(($(total stale_results) - stale0)) dropped as stale"
  dd=$(($(total done) - done0)) df=$(($(total failed) - failed0)) ds=$(($(total stale_results) - stale0))
  da=$(($(w1_field done) - w1done0))
  [ "$df" -eq 0 ] || fail "$df tasks failed"
  [ "$dd" -eq $K ] || fail "the broker resolved $dd tasks for $K submitted (a result accepted twice?)"
  echo "trial $TRIAL: $K submitted, $got results (each once), w1 had $given at the stop:" \
    "$ds stale dropped, $da taken back (no other attempt had started)"
  SUB=$((SUB + K)) RES=$((RES + got)) GIVEN=$((GIVEN + given)) STALE=$((STALE + ds)) BACK=$((BACK + da))
done
status
echo "totals: $SUB submitted, $RES results, $GIVEN tasks on the stopped worker: $STALE stale results" \
  "dropped, $BACK taken back; $IDLE trial(s) not counted (w1 ran nothing); broker done $(total done) failed $(total failed) registrations $(total registrations)" \
  "($(($(date +%s) - START)) s)"
# the workers, then the broker, end cleanly on SIGTERM (under ASan, with
# leak checking: nothing the stale paths kept is left behind)
TRIAL=end
for i in 1 2 0; do
  p=${PIDS[$i]}
  kill -TERM "$p"
  for _ in $(seq 400); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$p" 2>/dev/null && fail "pid $p did not end on SIGTERM"
  wait "$p"
  rc=$?
  [ $rc -eq 0 ] || fail "pid $p ended with status $rc on SIGTERM"
done
echo "sigstop: $TRIALS trials passed"
exit 0
