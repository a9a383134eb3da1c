#!/usr/bin/env bash
# A zexec cluster across four "hosts": Linux network namespaces joined by veth
# pairs on one bridge (itself in a fifth namespace, so the machine's own
# network is never touched). The broker, two workers and the client each bind
# or connect to their own host's address, never loopback; they share a
# secret (zexec keygen --secret), as a real multi-host cluster should.
#
#   1. 2,000 echo tasks and 2,000 pid tasks through `zexec map`: every result
#      right, and both worker hosts ran tasks (node names in the pid results)
#   2. w1's link cut mid-run: its tasks are retried on w2, every one resolves;
#      link back: w1 rejoins and receives work again
#   3. the broker killed mid-run and started again on the same address: the
#      client and the workers reconnect and the run completes
#
# Exit status: 0 passed, 77 skipped (missing capability, reason printed
# last), else failed. Namespaces, links and processes go on every exit.
set -uo pipefail
BIN=${ZEXEC_BIN_DIR:-$(cd "$(dirname "$0")/../build/plain" 2>/dev/null && pwd)}
Z=$BIN/zexec
. "$(dirname "$0")/lib.sh"
T=zxmh$$
NET=10.231.7
zxt_init "$T"

[ -x "$Z" ] && [ -x "$BIN/zexec-broker" ] && [ -x "$BIN/zexec-worker" ] ||
  fail "binaries not found in $BIN (set ZEXEC_BIN_DIR)"
zxt_star "$T" "$NET" br w1 w2 cl
BR=$NET.1
on() { local h=$1; shift; ip netns exec "$T-$h" "$@"; }

"$Z" keygen --secret "$TMP/secret" >/dev/null || fail "zexec keygen --secret"
SEC=(--secret-file "$TMP/secret")
CEP=tcp://$BR:5570
WEP=tcp://$BR:5571
# Background processes are started as plain commands, never through the
# on() function: a backgrounded function is a subshell, $! would be its pid,
# and killing it would leave the daemon running. `ip netns exec` execs the
# daemon, so $! is the daemon. ZEXEC_PARENT_PID (this script) is the net
# under that: the daemons exit when the script is gone.
export ZEXEC_PARENT_PID=$$
broker_start() {
  ip netns exec "$T-br" "$BIN/zexec-broker" --clients "$CEP" --workers "$WEP" "${SEC[@]}" >>"$TMP/broker.log" 2>&1 &
  BPID=$!
  PIDS+=("$BPID")
}
worker_start() { # host
  ip netns exec "$T-$1" "$BIN/zexec-worker" --broker "$WEP" --node "$1" --threads 2 --procs 2 "${SEC[@]}" \
    >>"$TMP/$1.log" 2>&1 &
  PIDS+=("$!")
}
zx() { on cl "$Z" "$@" --broker "$CEP" "${SEC[@]}"; }
# node -> tasks done, from the broker's table (NODE PID THREADS PROCS FREE_T
# FREE_P RUNNING DONE ...)
done_of() { zx status | awk -v n="$1" '$1 == n && NF >= 11 {print $8}'; }

step "four hosts on $NET.0/24; broker on $BR"
broker_start
worker_start w1
worker_start w2
zx status --wait-workers 2 --timeout 30 >/dev/null || fail "two workers did not register"

step "2,000 echo tasks and 2,000 pid tasks from the client host"
seq 2000 | sed 's/.*/["&"]/' >"$TMP/in.jsonl"
zx map -q echo <"$TMP/in.jsonl" >"$TMP/out.jsonl" 2>"$TMP/map1.log" || fail "zexec map echo"
cmp -s "$TMP/in.jsonl" "$TMP/out.jsonl" || fail "echo results differ from the inputs"
seq 2000 | sed 's/.*/[]/' | zx map -q pid >"$TMP/pid.jsonl" 2>"$TMP/map2.log" || fail "zexec map pid"
[ "$(wc -l <"$TMP/pid.jsonl")" -eq 2000 ] || fail "pid: $(wc -l <"$TMP/pid.jsonl") results"
n1=$(grep -c '^\["w1",' "$TMP/pid.jsonl"); n2=$(grep -c '^\["w2",' "$TMP/pid.jsonl")
echo "pid results: w1 $n1, w2 $n2"
[ "$n1" -gt 0 ] && [ "$n2" -gt 0 ] && [ $((n1 + n2)) -eq 2000 ] || fail "both hosts must run tasks"

step "cutting w1's link in the middle of a run"
seq 400 | sed 's/.*/[0.05]/' >"$TMP/sleep.jsonl"
ip netns exec "$T-cl" "$Z" map -q sleep --broker "$CEP" "${SEC[@]}" <"$TMP/sleep.jsonl" >"$TMP/out2.jsonl" \
  2>"$TMP/map3.log" &
MAP=$!
PIDS+=("$MAP")
for _ in $(seq 100); do [ "$(wc -l <"$TMP/out2.jsonl")" -ge 40 ] && break; sleep 0.1; done
[ "$(wc -l <"$TMP/out2.jsonl")" -lt 400 ] || fail "the run ended before the cut; make it longer"
ip -n "$T-w1" link set eth0 down
w2_before=$(done_of w2)
wait "$MAP" || fail "the map across the cut failed: $(tail -3 "$TMP/map3.log")"
[ "$(grep -c . "$TMP/out2.jsonl")" -eq 400 ] || fail "$(wc -l <"$TMP/out2.jsonl") of 400 results"
w2_after=$(done_of w2)
echo "w2 done: $w2_before at the cut, $w2_after after the run"
[ "$w2_after" -gt "$w2_before" ] || fail "w2 took no tasks after the cut"
grep -q "lost\|silent\|gone" "$TMP/broker.log" || echo "(the broker log does not name w1's loss)"

step "w1's link back: it rejoins and receives work"
w1_before=$(done_of w1)
ip -n "$T-w1" link set eth0 up
for _ in $(seq 150); do
  w1_now=$(done_of w1)
  [ -n "$w1_now" ] && break
  sleep 0.2
done
[ -n "${w1_now:-}" ] || fail "w1 did not rejoin within 30 s"
seq 400 | sed 's/.*/[]/' | zx map -q pid >"$TMP/pid2.jsonl" 2>"$TMP/map4.log" || fail "map pid after rejoin"
n1=$(grep -c '^\["w1",' "$TMP/pid2.jsonl")
echo "after the rejoin w1 ran $n1 of 400 (its done count was ${w1_before:-gone} when cut)"
[ "$n1" -gt 0 ] || fail "w1 receives no work after rejoining"

step "killing the broker mid-run and starting it again on $BR"
ip netns exec "$T-cl" "$Z" map -q sleep --broker "$CEP" "${SEC[@]}" <"$TMP/sleep.jsonl" >"$TMP/out3.jsonl" \
  2>"$TMP/map5.log" &
MAP=$!
PIDS+=("$MAP")
for _ in $(seq 100); do [ "$(wc -l <"$TMP/out3.jsonl")" -ge 40 ] && break; sleep 0.1; done
kill -9 "$BPID"
wait "$BPID" 2>/dev/null
sleep 1 # a real outage: the broker is away for a moment, not a synchronisation
broker_start
wait "$MAP" || fail "the map across the broker restart failed: $(tail -3 "$TMP/map5.log")"
[ "$(grep -c . "$TMP/out3.jsonl")" -eq 400 ] || fail "$(wc -l <"$TMP/out3.jsonl") of 400 results"
zx status --wait-workers 2 --timeout 30 >/dev/null || fail "both workers reconnect to the new broker"
seq 200 | sed 's/.*/[]/' | zx map -q pid >"$TMP/pid3.jsonl" 2>"$TMP/map6.log" || fail "map pid after restart"
[ "$(grep -c '^\["w[12]",' "$TMP/pid3.jsonl")" -eq 200 ] || fail "pid results after the restart"
step "passed"
exit 0
