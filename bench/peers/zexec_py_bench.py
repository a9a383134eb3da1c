"""The Python client (python/zexec) on workloads A and B of issue 6, in one
run beside ProcessPoolExecutor(2) with the same counts:

  py.c_*     zexec.Executor -> C worker (2 threads, the bench plugin's inc),
             msgpack calls: submit_named + as_completed, map_named with
             chunksize 1 and 256, sequential round trips
  py.p_*     zexec.Executor -> Python worker (zexec-pyworker --procs 2
             --allow-pickle), pickled calls: submit + as_completed, map with
             chunksize 1 and 100, sequential round trips
  py.pool_*  concurrent.futures.ProcessPoolExecutor(2), the same calls

One broker and both workers are started by PID on free loopback ports.
With --with-c it also runs bench_zexec's workloads A and B (the C client,
its own cluster) so that a run of this program alone has the C client's
figures too; scripts/bench does not pass it (its zexec-A and zexec-B
steps measure the C client in the same run). Every result is checked.

Usage: zexec_py_bench.py --bin-dir DIR --plugin SO [--quick] [--with-c]
"""

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HERE)

import zexec  # noqa: E402
from benchlib import free_port, inc, percentile, result, spawn, stop, wrong  # noqa: E402


def a_submit(submit, n, what):
    t0 = time.perf_counter()
    futs = {submit(i): i for i in range(n)}
    for f in as_completed(futs):
        if f.result() != futs[f] + 1:
            wrong(f"{what}: inc({futs[f]}) = {f.result()}")
    return n / (time.perf_counter() - t0)


def a_map(mapper, n, chunk, what):
    t0 = time.perf_counter()
    for i, v in enumerate(mapper(range(n), chunk)):
        if v != i + 1:
            wrong(f"{what}: inc({i}) = {v}")
    return n / (time.perf_counter() - t0)


def b_latency(call, n, warm, what):
    lat = []
    for i in range(n + warm):
        t0 = time.perf_counter()
        v = call(i)
        dt = time.perf_counter() - t0
        if v != i + 1:
            wrong(f"{what}: inc({i}) = {v}")
        if i >= warm:
            lat.append(dt * 1e6)
    return percentile(lat, 50), percentile(lat, 99)


def measure(prefix, submit, mapper, chunks, counts):
    n_a, n_map1, n_mapc, n_b, warm = counts
    a_submit(submit, max(n_a // 10, 100), prefix)  # warm-up: workers busy, windows open
    result(prefix + "A_submit", a_submit(submit, n_a, prefix), "tasks/s")
    result(prefix + "A_map1", a_map(mapper, n_map1, 1, prefix), "tasks/s")
    result(prefix + "A_map%d" % chunks, a_map(mapper, n_mapc, chunks, prefix), "tasks/s")
    p50, p99 = b_latency(lambda i: submit(i).result(), n_b, warm, prefix)
    result(prefix + "B_p50", p50, "us")
    result(prefix + "B_p99", p99, "us")


def wait_workers(ep, n, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if len(zexec.status(ep, timeout=2.0).get("workers", [])) >= n:
                return True
        except zexec.BrokerUnreachableError:
            pass
        time.sleep(0.05)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--plugin", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--with-c", action="store_true")
    a = ap.parse_args()
    q = a.quick
    # A by submit, map chunksize 1, map chunked, B round trips, B warm-up
    c_counts = (2000, 2000, 20000, 200, 50) if q else (50000, 20000, 500000, 3000, 200)
    p_counts = (1000, 1000, 10000, 100, 20) if q else (20000, 10000, 200000, 2000, 100)
    print(f"# zexec Python client, python {sys.version.split()[0]}" + (" (quick)" if q else ""),
          flush=True)
    if a.with_c:
        for w in ("A", "B"):
            p = subprocess.run([os.path.join(a.bin_dir, "bench", "bench_zexec"), "--workload", w,
                                "--bin-dir", a.bin_dir, "--plugin", a.plugin]
                               + (["--quick"] if q else []), stdout=subprocess.PIPE, text=True)
            sys.stdout.write(p.stdout)
            if p.returncode != 0:
                print(f"ERROR: bench_zexec --workload {w} exited {p.returncode}", flush=True)
                return 1
    cport, wport = free_port(), free_port()
    cep, wep = f"tcp://127.0.0.1:{cport}", f"tcp://127.0.0.1:{wport}"
    env_py = os.pathsep.join([os.path.join(ROOT, "python"), HERE])
    os.environ["PYTHONPATH"] = env_py + (os.pathsep + os.environ["PYTHONPATH"]
                                         if os.environ.get("PYTHONPATH") else "")
    procs = []
    try:
        procs.append(spawn([os.path.join(a.bin_dir, "zexec-broker"), "--clients", cep,
                            "--workers", wep, "-q"]))
        procs.append(spawn([os.path.join(a.bin_dir, "zexec-worker"), "--broker", wep, "--threads",
                            "2", "--procs", "0", "--no-builtins", "--plugin", a.plugin, "-q"]))
        procs.append(spawn(["/usr/bin/python3", "-m", "zexec.worker", "--broker", wep, "--procs",
                            "2", "--no-builtins", "--allow-pickle", "-q"]))
        if not wait_workers(cep, 2):
            print("ERROR: the broker or the workers did not start", flush=True)
            return 1
        with zexec.Executor(cep) as ex:
            measure("py.c_", lambda i: ex.submit_named("inc", i),
                    lambda it, c: ex.map_named("inc", it, chunksize=c), 256, c_counts)
            measure("py.p_", lambda i: ex.submit(inc, i),
                    lambda it, c: ex.map(inc, it, chunksize=c), 100, p_counts)
    finally:
        for p in reversed(procs):
            stop(p)
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(inc, range(1000)))  # both processes started
        measure("py.pool_", lambda i: pool.submit(inc, i),
                lambda it, c: pool.map(inc, it, chunksize=c), 100, p_counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
