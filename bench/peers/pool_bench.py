"""ProcessPoolExecutor(2) on the workloads of issue 6 (local, no network):
A by submit + as_completed, by map(chunksize=1) and map(chunksize=100);
B sequential submit().result() latency; C as_completed over sleeping tasks
against the ideal; D 1 MiB bytes arguments returning their length.
Every result is checked. Usage: pool_bench.py [--quick]"""

import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from benchlib import MIB, inc, length, percentile, result, sleep_ms, wrong


def main():
    quick = "--quick" in sys.argv
    n_submit = 2000 if quick else 100000
    n_map1 = 2000 if quick else 50000
    n_map = 20000 if quick else 200000
    n_lat = 300 if quick else 5000
    n_sleep = 300 if quick else 10000
    n_big = 20 if quick else 500
    print(f"# ProcessPoolExecutor(2), python {sys.version.split()[0]}"
          + (" (quick)" if quick else ""), flush=True)
    with ProcessPoolExecutor(2) as ex:
        list(ex.map(inc, range(1000)))  # warm-up: both processes started

        t0 = time.perf_counter()
        futs = {ex.submit(inc, i): i for i in range(n_submit)}
        for f in as_completed(futs):
            if f.result() != futs[f] + 1:
                wrong(f"pool A: inc({futs[f]}) = {f.result()}")
        result("pool.A_submit", n_submit / (time.perf_counter() - t0), "tasks/s")

        for chunk, n, name in ((1, n_map1, "pool.A_map1"), (100, n_map, "pool.A_map100")):
            t0 = time.perf_counter()
            for i, v in enumerate(ex.map(inc, range(n), chunksize=chunk)):
                if v != i + 1:
                    wrong(f"pool map: inc({i}) = {v}")
            result(name, n / (time.perf_counter() - t0), "tasks/s")

        lat = []
        for i in range(n_lat + 100):
            t0 = time.perf_counter()
            v = ex.submit(inc, i).result()
            dt = time.perf_counter() - t0
            if v != i + 1:
                wrong(f"pool B: inc({i}) = {v}")
            if i >= 100:
                lat.append(dt * 1e6)
        result("pool.B_p50", percentile(lat, 50), "us")
        result("pool.B_p99", percentile(lat, 99), "us")

        rng = random.Random(6)
        sleeps = [rng.uniform(0, 2) for _ in range(n_sleep)]
        ideal = sum(sleeps) / 1000.0 / 2
        t0 = time.perf_counter()
        futs = {ex.submit(sleep_ms, ms): ms for ms in sleeps}
        for f in as_completed(futs):
            if f.result() != futs[f]:
                wrong("pool C: sleep_ms returned the wrong value")
        wall = time.perf_counter() - t0
        result("pool.C_wall", wall, "s")
        result("pool.C_ideal", ideal, "s")

        data = b"d" * MIB
        length(data)
        t0 = time.perf_counter()
        futs = [ex.submit(length, data) for _ in range(n_big)]
        for f in as_completed(futs):
            if f.result() != MIB:
                wrong(f"pool D: length = {f.result()}")
        result("pool.D", n_big * MIB / 1e6 / (time.perf_counter() - t0), "MB/s")


if __name__ == "__main__":
    main()
