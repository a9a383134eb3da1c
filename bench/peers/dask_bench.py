"""Dask distributed (Debian's python3-distributed) on the workloads of
issue 6: a dask-scheduler and one dask-worker (2 threads, no nanny) started
by PID on free loopback ports, a Client over tcp. Counts are scaled down
from the issue's (Dask runs some hundreds of tasks per second here); the
figures are rates, so they compare. Every result is checked.
Usage: dask_bench.py [--quick]"""

import random
import sys
import time

from benchlib import (MIB, free_port, inc, length, percentile, result, sleep_ms, spawn, stop,
                      wait_port, wrong)


def main():
    quick = "--quick" in sys.argv
    n_submit = 200 if quick else 5000
    n_map = 200 if quick else 5000
    n_lat = 50 if quick else 500
    n_sleep = 100 if quick else 1000
    n_big = 5 if quick else 100
    import warnings
    warnings.filterwarnings("ignore", category=UserWarning)
    from distributed import Client, as_completed
    import distributed

    sport = free_port()
    py = sys.executable
    sched = spawn([py, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                   "--port", str(sport), "--no-dashboard"])
    worker = None
    client = None
    try:
        if not wait_port(sport, 30):
            print("ERROR: dask-scheduler did not start", flush=True)
            sys.exit(1)
        addr = f"tcp://127.0.0.1:{sport}"
        worker = spawn([py, "-m", "distributed.cli.dask_worker", addr, "--nthreads", "2",
                        "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"])
        client = Client(addr, timeout=30)
        client.wait_for_workers(1, timeout=30)
        print(f"# Dask distributed {distributed.__version__}: scheduler pid {sched.pid}, "
              f"worker pid {worker.pid} (2 threads)" + (" (quick)" if quick else ""), flush=True)
        client.gather(client.map(inc, range(100), pure=False))  # warm-up

        t0 = time.perf_counter()
        futs = [client.submit(inc, i, pure=False) for i in range(n_submit)]
        want = {f.key: i + 1 for i, f in enumerate(futs)}
        for f in as_completed(futs):
            if f.result() != want[f.key]:
                wrong(f"dask A: {f.key} = {f.result()}")
        result("dask.A_submit", n_submit / (time.perf_counter() - t0), "tasks/s")

        t0 = time.perf_counter()
        values = client.gather(client.map(inc, range(n_map), pure=False))
        if values != [i + 1 for i in range(n_map)]:
            wrong("dask map: wrong values")
        result("dask.A_map", n_map / (time.perf_counter() - t0), "tasks/s")

        lat = []
        for i in range(n_lat + 20):
            t0 = time.perf_counter()
            v = client.submit(inc, i, pure=False).result()
            dt = time.perf_counter() - t0
            if v != i + 1:
                wrong(f"dask B: inc({i}) = {v}")
            if i >= 20:
                lat.append(dt * 1e6)
        result("dask.B_p50", percentile(lat, 50), "us")
        result("dask.B_p99", percentile(lat, 99), "us")

        rng = random.Random(6)
        sleeps = [rng.uniform(0, 2) for _ in range(n_sleep)]
        ideal = sum(sleeps) / 1000.0 / 2
        t0 = time.perf_counter()
        futs = [client.submit(sleep_ms, ms, pure=False) for ms in sleeps]
        want = {f.key: ms for f, ms in zip(futs, sleeps)}
        for f in as_completed(futs):
            if f.result() != want[f.key]:
                wrong("dask C: sleep_ms returned the wrong value")
        result("dask.C_wall", time.perf_counter() - t0, "s")
        result("dask.C_ideal", ideal, "s")

        data = b"d" * MIB
        t0 = time.perf_counter()
        futs = [client.submit(length, data, pure=False) for _ in range(n_big)]
        for f in as_completed(futs):
            if f.result() != MIB:
                wrong(f"dask D: length = {f.result()}")
        result("dask.D", n_big * MIB / 1e6 / (time.perf_counter() - t0), "MB/s")
    finally:
        if client is not None:
            client.close(timeout=10)
        stop(worker)
        stop(sched)


if __name__ == "__main__":
    main()
