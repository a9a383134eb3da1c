#!/usr/bin/env bash
# A pair of brokers (issue 18: the standby broker; docs/operations.md,
# "Running a pair"), with real processes:
#
#   1. failover under load (loopback): a primary and a backup with their own
#      journals, two workers and a `zexec map` given both endpoints; the
#      active broker is killed with SIGKILL while the map runs; the other
#      must take over, and the map must end with every result, each its own
#      task's, in order (0 lost, 0 hung). The killed broker is started again:
#      it must come back as the passive and copy the journal until it may
#      take over, so that the next kill hits the other one. KILLS rounds
#      (default 1); each prints the failover time: from the kill to the
#      other broker's "this broker is active now" (the script polls its log
#      every 50 ms), and the long form prints p50 and max. Then both active
#      at once: the active stopped (SIGSTOP) past the liveness window, a
#      client makes the passive active, the stopped one continued: the
#      backup must step down, restart itself and come back as the passive.
#   2. a partition between the two brokers only (network namespaces: hosts
#      b1, b2, w1, cl on one bridge; blackhole routes between b1 and b2,
#      the worker and the client still see both): for longer than the
#      liveness window while a map runs through the primary. The backup
#      must stay passive (no split brain: it never logs becoming active, and
#      it refuses a client with ERROR 3), the map must end whole, and after
#      the heal the primary must count the backup's copy as complete again. Needs root; without it (or without namespace, veth, bridge or
#      blackhole support) part 2 is skipped with the reason (the last line
#      says so) and part 1 decides.
#
#   failover.sh [KILLS [CUT]]   CI: failover.sh 1 5; long form: failover.sh 10 30;
#                               CUT 0: no part 2 (scripts/bench runs 10 0)
#
# Prints "RESULT failover.p50_s=..", "failover.max_s" and "failover.kills"
# lines for scripts/bench (bench/report.py).
#
# Heartbeat 1 s and liveness 3 everywhere (the defaults). Exit status: 0
# passed (the last line says whether part 2 ran), else failed.
set -uo pipefail
KILLS=${1:-1}
CUT=${2:-5}
BIN=${ZEXEC_BIN_DIR:-$(cd "$(dirname "$0")/../build/plain" 2>/dev/null && pwd)}
Z=$BIN/zexec
. "$(dirname "$0")/lib.sh"
T=zxfo$$
N=40

for a in "$KILLS" "$CUT"; do
  case "$a" in '' | *[!0-9]*) echo "usage: $0 [KILLS [CUT]] (a count, seconds)" >&2; exit 2 ;; esac
done
zxt_init "$T"
[ -x "$Z" ] && [ -x "$BIN/zexec-broker" ] && [ -x "$BIN/zexec-worker" ] ||
  fail "binaries not found in $BIN (set ZEXEC_BIN_DIR)"
export ZEXEC_PARENT_PID=$$
ACTIVE_RE='pair: this broker is active now'
COPY_RE='passive copy complete: may take over'

# waits until file $1 holds at least $2 lines matching $3, at most $4 s; 0 if so
wait_log() {
  local f=$1 n=$2 re=$3 limit=$4 t0
  t0=$(date +%s)
  while [ "$(grep -c -- "$re" "$f" 2>/dev/null)" -lt "$n" ]; do
    [ $(($(date +%s) - t0)) -lt "$limit" ] || return 1
    sleep 0.05
  done
}
count() { grep -c -- "$2" "$1" 2>/dev/null; }
# a sanitizer build (ZEXEC_BIN_DIR=build/asan) reports into the logs
sanitizers_clean() {
  local bad
  bad=$(grep -l -E "AddressSanitizer|LeakSanitizer|runtime error:" "$TMP"/*.log 2>/dev/null)
  [ -z "$bad" ] || fail "a sanitizer report in: $bad"
}
now() { date +%s.%N; }

# inputs: N sleep tasks of about 0.2 s, each its own duration (its result)
for j in $(seq $N); do
  printf '[0.2%02d]\n' "$j" >>"$TMP/in.jsonl"
  printf '0.2%02d\n' "$j" >>"$TMP/want"
done
# checks a map's output against want: "ok" or what is wrong
verdict() { # out rc hung
  local got
  got=$(grep -c . "$1")
  [ "$3" -eq 0 ] || { echo "hung"; return; }
  [ "$2" -eq 0 ] || { echo "map status $2"; return; }
  [ "$got" -eq $N ] || { echo "$((N - got)) lost"; return; }
  paste -d ' ' "$TMP/want" "$1" | awk '{ d = $1 - $2; if (NF != 2 || d > 1e-9 || d < -1e-9) exit 1 }' ||
    { echo "a result is not its task's"; return; }
  echo ok
}
# waits for pid $1 at most $2 s (then kills it); sets RC and HUNG
wait_map() {
  local t0
  t0=$(date +%s)
  HUNG=0
  while kill -0 "$1" 2>/dev/null; do
    if [ $(($(date +%s) - t0)) -ge "$2" ]; then
      HUNG=1
      kill -9 "$1"
      break
    fi
    sleep 0.05
  done
  wait "$1"
  RC=$?
}

# ---- 1. failover under load (loopback) ------------------------------------------------
PP=$(free_port) || fail "no free port"
declare -a CP WP ROLE PID LOG
for i in 0 1; do
  CP[$i]=$(free_port) || fail "no free port"
  WP[$i]=$(free_port) || fail "no free port"
  mkdir -p "$TMP/j$i"
done
ROLE[0]=--primary
ROLE[1]=--backup
CL="tcp://127.0.0.1:${CP[0]},tcp://127.0.0.1:${CP[1]}"
WL="tcp://127.0.0.1:${WP[0]},tcp://127.0.0.1:${WP[1]}"
INC=0
start_broker() { # i: a new incarnation with its own log
  local i=$1
  INC=$((INC + 1))
  LOG[$i]=$TMP/b$i.$INC.log
  "$BIN/zexec-broker" "${ROLE[$i]}" --peer "tcp://127.0.0.1:$PP" --journal "$TMP/j$i" \
    --clients "tcp://127.0.0.1:${CP[$i]}" --workers "tcp://127.0.0.1:${WP[$i]}" \
    --heartbeat 1 --liveness 3 --retries 100 >"${LOG[$i]}" 2>&1 &
  PID[$i]=$!
  PIDS+=("$!")
}
step "pair on loopback: primary clients :${CP[0]}, backup clients :${CP[1]}, peer :$PP"
start_broker 0
start_broker 1
for h in w1 w2; do
  "$BIN/zexec-worker" --broker "$WL" --node "$h" --threads 2 --procs 0 --heartbeat 1 \
    >"$TMP/$h.log" 2>&1 &
  PIDS+=("$!")
done
wait_log "${LOG[0]}" 1 "$ACTIVE_RE" 60 || fail "the primary did not become active"
wait_log "${LOG[1]}" 1 "$COPY_RE" 60 || fail "the backup did not complete its copy"
"$Z" status --broker "$CL" --wait-workers 2 --timeout 60 >/dev/null 2>"$TMP/status.err" ||
  fail "two workers did not register: $(tail -1 "$TMP/status.err")"
ACT=0
TIMES=()
FAILED=0
for round in $(seq "$KILLS"); do
  PAS=$((1 - ACT))
  step "round $round: map of $N through the pair; kill -9 the ${ROLE[$ACT]#--} (active)"
  actives=$(count "${LOG[$PAS]}" "$ACTIVE_RE")
  : >"$TMP/out.jsonl"
  "$Z" map -q sleep --broker "$CL" <"$TMP/in.jsonl" >"$TMP/out.jsonl" 2>"$TMP/map.$round.log" &
  map=$!
  PIDS+=("$map")
  for _ in $(seq 600); do [ "$(grep -c . "$TMP/out.jsonl")" -ge 6 ] && break; sleep 0.05; done
  before=$(grep -c . "$TMP/out.jsonl")
  [ "$before" -lt $N ] || fail "round $round: the map ended before the kill; make it longer"
  kill -9 "${PID[$ACT]}"
  killed=$(now)
  wait "${PID[$ACT]}" 2>/dev/null
  if ! wait_log "${LOG[$PAS]}" $((actives + 1)) "$ACTIVE_RE" 60; then
    kill -9 "$map"
    fail "round $round: the ${ROLE[$PAS]#--} did not take over within 60 s"
  fi
  took=$(awk -v a="$killed" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
  TIMES+=("$took")
  wait_map "$map" 120
  v=$(verdict "$TMP/out.jsonl" "$RC" "$HUNG")
  printf 'round %2d: killed the %s with %2d of %d results in; the %s took over in %5s s; map: %s\n' \
    "$round" "${ROLE[$ACT]#--}" "$before" $N "${ROLE[$PAS]#--}" "$took" "$v"
  [ "$v" = ok ] || FAILED=$((FAILED + 1))
  # the killed one comes back as the passive and copies the new active's journal
  start_broker "$ACT"
  wait_log "${LOG[$ACT]}" 1 "$COPY_RE" 120 ||
    fail "round $round: the restarted ${ROLE[$ACT]#--} did not complete its copy"
  if [ "$(count "${LOG[$ACT]}" "$ACTIVE_RE")" -ne 0 ]; then
    fail "round $round: the restarted ${ROLE[$ACT]#--} became active beside the active one"
  fi
  ACT=$PAS
done
SORTED=$(printf '%s\n' "${TIMES[@]}" | sort -g)
P50=$(echo "$SORTED" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
MAX=$(echo "$SORTED" | tail -1)
echo "failover time over $KILLS kills: p50 $P50 s, max $MAX s"
echo "RESULT failover.p50_s=$P50 s"
echo "RESULT failover.max_s=$MAX s"
echo "RESULT failover.kills=$KILLS kills"
[ "$FAILED" -eq 0 ] || fail "$FAILED of $KILLS rounds lost or misplaced results"
sanitizers_clean

# ---- 1b. both active at once, then the backup steps down ---------------------------------
# The active is stopped (SIGSTOP) past the liveness window and a client asks
# the passive, which by the rule takes over; once the stopped one is
# continued, both are active and hear each other: the backup must step
# down, start itself again (execv: same pid, same log) and come back as
# the passive with a complete copy, leaving the primary the only active.
PAS=$((1 - ACT))
step "both active: stop the ${ROLE[$ACT]#--}, a client makes the ${ROLE[$PAS]#--} active, continue"
silent=$(count "${LOG[$PAS]}" "standby: peer silent")
actives=$(count "${LOG[$PAS]}" "$ACTIVE_RE")
kill -STOP "${PID[$ACT]}"
wait_log "${LOG[$PAS]}" $((silent + 1)) "standby: peer silent" 60 ||
  fail "both active: the ${ROLE[$PAS]#--} did not see the stopped peer go silent"
"$Z" status --broker "tcp://127.0.0.1:${CP[$PAS]}" --timeout 30 >/dev/null 2>"$TMP/status2.err" ||
  fail "both active: the ${ROLE[$PAS]#--} did not serve a client: $(tail -1 "$TMP/status2.err")"
[ "$(count "${LOG[$PAS]}" "$ACTIVE_RE")" -eq $((actives + 1)) ] ||
  fail "both active: the ${ROLE[$PAS]#--} served without becoming active"
starts=$(count "${LOG[1]}" "waiting to learn which broker is active")
copies=$(count "${LOG[1]}" "$COPY_RE")
kill -CONT "${PID[$ACT]}"
wait_log "${LOG[1]}" 1 "pair: this broker steps down" 60 || fail "both active: the backup did not step down"
wait_log "${LOG[1]}" $((starts + 1)) "waiting to learn which broker is active" 30 ||
  fail "both active: the backup did not start again"
kill -0 "${PID[1]}" 2>/dev/null || fail "both active: the backup's process is gone"
wait_log "${LOG[1]}" $((copies + 1)) "$COPY_RE" 120 ||
  fail "both active: the backup did not come back as a complete passive"
"$Z" status --broker "$CL" --timeout 30 2>"$TMP/status3.err" | grep -q "pair active (primary" ||
  fail "both active: the primary is not the one active: $(tail -1 "$TMP/status3.err")"
echo "both active: the backup stepped down, restarted itself as the passive; the primary serves"
sanitizers_clean
for i in 0 1; do kill -9 "${PID[$i]}" 2>/dev/null; done

# ---- 2. a partition between the brokers only -------------------------------------------
partition() {
  local NET=10.231.9
  zxt_star "$T" "$NET" b1 b2 w1 cl
  ip -n "$T-b1" route add blackhole "${ADDR[b2]}/32" 2>"$TMP/bh.err" ||
    skip "no blackhole routes: $(cat "$TMP/bh.err")"
  ip -n "$T-b1" route del blackhole "${ADDR[b2]}/32"
  "$Z" keygen --secret "$TMP/secret" >/dev/null || fail "zexec keygen --secret"
  local SEC=(--secret-file "$TMP/secret") # not loopback: the broker refuses to run open
  local h i=0 hosts=(b1 b2) cl wl
  cl="tcp://${ADDR[b1]}:5570,tcp://${ADDR[b2]}:5570"
  wl="tcp://${ADDR[b1]}:5571,tcp://${ADDR[b2]}:5571"
  for h in b1 b2; do
    mkdir -p "$TMP/p$h"
    ip netns exec "$T-$h" "$BIN/zexec-broker" "${ROLE[$i]}" --peer "tcp://${ADDR[b1]}:5573" \
      --journal "$TMP/p$h" --clients "tcp://${ADDR[$h]}:5570" --workers "tcp://${ADDR[$h]}:5571" \
      --heartbeat 1 --liveness 3 --retries 100 "${SEC[@]}" >"$TMP/p$h.log" 2>&1 &
    PIDS+=("$!")
    i=$((i + 1))
  done
  ip netns exec "$T-w1" "$BIN/zexec-worker" --broker "$wl" --node w1 --threads 4 --procs 0 \
    --heartbeat 1 "${SEC[@]}" >"$TMP/pw1.log" 2>&1 &
  PIDS+=("$!")
  wait_log "$TMP/pb1.log" 1 "$ACTIVE_RE" 60 || fail "partition: the primary did not become active"
  wait_log "$TMP/pb2.log" 1 "$COPY_RE" 60 || fail "partition: the backup did not complete its copy"
  ip netns exec "$T-cl" "$Z" status --broker "$cl" "${SEC[@]}" --wait-workers 1 --timeout 60 \
    >/dev/null 2>"$TMP/pstatus.err" || fail "partition: the worker did not register"
  step "partition: cut b1 | b2 for $CUT s while a map runs (clients and the worker see both)"
  : >"$TMP/pout.jsonl"
  ip netns exec "$T-cl" "$Z" map -q sleep --broker "$cl" "${SEC[@]}" <"$TMP/in.jsonl" \
    >"$TMP/pout.jsonl" 2>"$TMP/pmap.log" &
  local map=$!
  PIDS+=("$map")
  for _ in $(seq 600); do [ "$(grep -c . "$TMP/pout.jsonl")" -ge 4 ] && break; sleep 0.05; done
  local copies backs
  copies=$(count "$TMP/pb1.log" "the passive has a complete copy")
  backs=$(count "$TMP/pb2.log" "standby: peer is back")
  ip -n "$T-b1" route add blackhole "${ADDR[b2]}/32" || fail "route b1 -> b2"
  ip -n "$T-b2" route add blackhole "${ADDR[b1]}/32" || fail "route b2 -> b1"
  sleep "$CUT" # the outage itself, not a synchronisation
  wait_log "$TMP/pb2.log" 1 "standby: peer silent" 30 ||
    fail "partition: the backup never noticed the cut (make CUT longer than the liveness window)"
  ip -n "$T-b1" route del blackhole "${ADDR[b2]}/32"
  ip -n "$T-b2" route del blackhole "${ADDR[b1]}/32"
  step "partition: healed"
  wait_map "$map" 120
  local v
  v=$(verdict "$TMP/pout.jsonl" "$RC" "$HUNG")
  [ "$v" = ok ] || fail "partition: map: $v"
  [ "$(count "$TMP/pb2.log" "$ACTIVE_RE")" -eq 0 ] || fail "partition: the backup became active: split brain"
  # a client asking the backup itself before the brokers hear each other
  # again would make it active (the rule: the peer silent and a client
  # here); the check waits for the link
  wait_log "$TMP/pb2.log" $((backs + 1)) "standby: peer is back" 60 ||
    fail "partition: the brokers did not hear each other again after the heal"
  local msg
  msg=$(ip netns exec "$T-cl" "$Z" status --broker "tcp://${ADDR[b2]}:5570" "${SEC[@]}" --timeout 5 2>&1)
  case "$msg" in *passive*) ;; *) fail "partition: the backup did not refuse a client as passive: $msg" ;; esac
  # the primary acknowledged alone while the backup was cut off; it counts
  # the backup again once its copy holds everything
  wait_log "$TMP/pb1.log" $((copies + 1)) "the passive has a complete copy" 120 ||
    fail "partition: the backup's copy was not complete again after the heal"
  [ "$(count "$TMP/pb1.log" "$ACTIVE_RE")" -eq 1 ] || fail "partition: the primary changed state"
  sanitizers_clean
  echo "partition: b1 | b2 for $CUT s: backup stayed passive, map ok ($N results), copy resumed after the heal"
}
# part 2 may skip alone (a missing capability): part 1 has passed by now
skip() {
  echo "partition part skipped: $*"
  step "failover: $KILLS kills passed; partition part skipped: $*"
  exit 0
}
[ "$CUT" -gt 0 ] || skip "CUT 0"
[ "$(id -u)" -eq 0 ] || skip "not root: network namespaces need root"
command -v ip >/dev/null || skip "no ip command (iproute2)"
partition
step "failover: $KILLS kills passed, partition passed"
exit 0
