#!/usr/bin/env bash
# bench/cli_bench.sh - issue 15's batch benchmark: N tiny jobs (`true`) on 4
# process slots, `zexec run` against `xargs -P4` and GNU parallel `-j4` on
# the same machine, in the same run. zexec gets one broker and one worker
# (--allow-exec --procs 4 --threads 1) on loopback, started and stopped by
# PID; the same inputs go to all three, each timed from start to exit.
#
#   bench/cli_bench.sh [--quick] --bin-dir DIR     (DIR: zexec, zexec-broker, zexec-worker)
#
# Prints RESULT lines (cli.<runner>_wall seconds, cli.jobs) and WRONG: ...
# (exit 2) when a runner did not run every job successfully: zexec's job
# log must have N rows with exit 0, xargs and parallel must exit 0.
set -uo pipefail
quick=0 bin=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --bin-dir) bin=$2; shift ;;
    *) echo "usage: $0 [--quick] --bin-dir DIR" >&2; exit 64 ;;
  esac
  shift
done
[ -x "$bin/zexec" ] || { echo "ERROR: no $bin/zexec" >&2; exit 1; }
n=10000; [ $quick = 1 ] && n=200
tmp=$(mktemp -d /tmp/zx_cli_bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cport=$(free_port); wport=$(free_port)
while [ "$wport" = "$cport" ]; do wport=$(free_port); done
export ZEXEC_BROKER=tcp://127.0.0.1:$cport
"$bin/zexec-broker" --clients "$ZEXEC_BROKER" --workers "tcp://127.0.0.1:$wport" --quiet &
pids+=($!)
"$bin/zexec-worker" --broker "tcp://127.0.0.1:$wport" --node bench --allow-exec --procs 4 \
  --threads 1 --quiet &
pids+=($!)
"$bin/zexec" status --wait-workers 1 --timeout 30 >/dev/null || { echo "ERROR: no worker" >&2; exit 1; }

seq "$n" >"$tmp/inputs"
echo "RESULT cli.jobs=$n jobs"
now() { date +%s.%N; }
wall() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }
wrong=0

t0=$(now)
xargs -P4 -n1 true <"$tmp/inputs"; rc=$?
t1=$(now)
[ $rc = 0 ] || { echo "WRONG: xargs exited $rc"; wrong=1; }
echo "RESULT cli.xargs_wall=$(wall "$t0" "$t1") s"

t0=$(now)
"$bin/zexec" run -q --joblog "$tmp/jobs.tsv" -- true <"$tmp/inputs"; rc=$?
t1=$(now)
ok=$(awk -F'\t' 'NR > 1 && $4 == "0"' "$tmp/jobs.tsv" | wc -l)
if [ $rc != 0 ] || [ "$ok" != "$n" ]; then
  echo "WRONG: zexec run exited $rc with $ok of $n jobs succeeded in its job log"; wrong=1
fi
echo "RESULT cli.zexec_wall=$(wall "$t0" "$t1") s"

if command -v parallel >/dev/null; then
  t0=$(now)
  parallel --will-cite -j4 true <"$tmp/inputs"; rc=$?
  t1=$(now)
  [ $rc = 0 ] || { echo "WRONG: parallel exited $rc"; wrong=1; }
  echo "RESULT cli.parallel_wall=$(wall "$t0" "$t1") s"
else
  echo "parallel: not installed, skipped"
fi
[ $wrong = 0 ] || exit 2
