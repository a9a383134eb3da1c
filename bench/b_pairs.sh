#!/usr/bin/env bash
# bench/b_pairs.sh - issue 19's latency pairs: workload B (sequential
# submit-then-result) and the floor's two-hop relay round trip, run back to
# back as a pair, the order alternating from pair to pair (floor first in
# odd pairs, zexec first in even ones), so both halves of a pair see the
# same machine. report.py takes the ratio of each pair and the median of
# the ratios per mode:
#
#   quiet   as the machine is
#   loaded  one CPU-bound process per core (a shell counting loop) beside the
#           cluster, started before the pair and stopped after it: the same
#           load for both halves
#   curve   zexec with CURVE on every connection (bench_zexec --security
#           curve) against the relay with CURVE on every connection
#           (bench_zmq_floor --curve)
#   signed  zexec with a shared secret (every message signed and checked)
#           against the plain relay: raw ZeroMQ has no signing of its own,
#           so the relay does no per-message work in its place
#
#   bench/b_pairs.sh --bin-dir DIR [--quick] [--pairs N] [--rounds N] [--modes "quiet loaded"]
#                    [--floor-bin DIR]
#
# DIR is a build tree (DIR/bench/bench_zexec, DIR/zexec-broker, ...);
# --floor-bin takes the floor from another tree (default DIR); --pairs sets
# the pairs of every mode (default 15, loaded 45; --quick 2). Prints the
# RESULT lines of both programs (floor.Bpair_<mode>_<k>_*,
# zexec.Bpair_<mode>_<k>_*), then bpairs.load_<mode>_<k> (the 1-minute load
# average after the pair); WRONG: ... and exit 2 when a program got a wrong
# result, exit 1 when one failed.
set -uo pipefail
quick=0 bin= floor_bin= pairs= rounds= modes="quiet loaded curve signed"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --bin-dir) bin=$2; shift ;;
    --floor-bin) floor_bin=$2; shift ;;
    --pairs) pairs=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --modes) modes=$2; shift ;;
    *) echo "usage: $0 --bin-dir DIR [--quick] [--pairs N] [--rounds N] [--modes LIST]" >&2
       exit 64 ;;
  esac
  shift
done
[ -n "$floor_bin" ] || floor_bin=$bin
zx=$bin/bench/bench_zexec floor=$floor_bin/bench/bench_zmq_floor
plugin=$bin/examples/libzexec_bench_plugin.so
[ -x "$zx" ] && [ -x "$floor" ] || { echo "ERROR: no $zx or $floor" >&2; exit 1; }
# fifteen pairs per mode, forty-five loaded: under load a single pair's
# ratio ranges 0.4-2.3x on a 2-core machine, because each run keeps the
# placement of its threads it settles on (all of a round trip's threads on
# one CPU beside the busy process: ~100 us for the relay and for zexec
# alike; spread over both: up to ~230 us), and a pair is the ratio of two
# such draws. Drawn from 90 measured loaded ratios (median 1.05x), the
# median of fifteen misses 1.25x in 7.6% of draws, of forty-five in 0.6%
# (docs/performance.md, change 42).
# The other modes' pairs vary a few tenths, and fifteen settle them.
npairs() { # mode
  if [ -n "$pairs" ]; then echo "$pairs"; elif [ $quick = 1 ]; then echo 2
  elif [ "$1" = loaded ]; then echo 45; else echo 15; fi
}
[ -n "$rounds" ] || { rounds=3000; [ $quick = 1 ] && rounds=200; }
q=(); [ $quick = 1 ] && q=(--quick)

hogs=()
hogs_stop() {
  local p
  for p in "${hogs[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${hogs[@]}"; do wait "$p" 2>/dev/null; done
  hogs=()
}
trap hogs_stop EXIT
trap 'exit 143' TERM INT
# Each busy process also ends by itself when this script is gone (killed
# with SIGKILL, say, by a time limit): it looks every ~0.1 s.
hogs_start() {
  local i
  for i in $(seq "$(nproc)"); do
    sh -c 'while kill -0 "$1" 2>/dev/null; do i=0; while [ $i -lt 20000 ]; do i=$((i + 1)); done; done' \
      hog $$ &
    hogs+=($!)
  done
}

failed=0
half() { # floor|zexec mode tag
  local what=$1 mode=$2 tag=$3 out rc
  if [ "$what" = floor ]; then
    local c=(); [ "$mode" = curve ] && c=(--curve)
    out=$(timeout -k 5 120 "$floor" "${q[@]}" --tag "$tag" --rounds "$rounds" "${c[@]}" 2>&1); rc=$?
  else
    local s=(); [ "$mode" = curve ] && s=(--security curve); [ "$mode" = signed ] && s=(--security sign)
    out=$(timeout -k 5 120 "$zx" "${q[@]}" --workload B --bin-dir "$bin" --plugin "$plugin" \
      --tag "$tag" --rounds "$rounds" "${s[@]}" 2>&1); rc=$?
  fi
  printf '%s\n' "$out" | grep -a -E '^(RESULT|WRONG|ERROR)'
  if [ $rc = 2 ] || printf '%s\n' "$out" | grep -aq '^WRONG'; then failed=2
  elif [ $rc != 0 ] && [ $failed = 0 ]; then failed=1; echo "ERROR: $what $tag: exit $rc"; fi
}

for mode in $modes; do
  for k in $(seq "$(npairs "$mode")"); do
    tag=${mode}_$k
    [ "$mode" = loaded ] && hogs_start
    if [ $((k % 2)) = 1 ]; then half floor "$mode" "$tag"; half zexec "$mode" "$tag"
    else half zexec "$mode" "$tag"; half floor "$mode" "$tag"; fi
    echo "RESULT bpairs.load_$tag=$(cut -d' ' -f1 /proc/loadavg) load"
    [ "$mode" = loaded ] && hogs_stop
  done
done
exit $failed
