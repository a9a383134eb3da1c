"""Helpers shared by the Python peer benchmarks: RESULT lines in the format
bench_util.h documents, nearest-rank percentiles, free loopback ports,
servers started and stopped by PID, and the task functions both peers run
(module level, so that ProcessPoolExecutor can pickle them by name)."""

import os
import random
import signal
import socket
import subprocess
import sys
import time

MIB = 1024 * 1024


def result(name, value, unit):
    print(f"RESULT {name}={value:.6g} {unit}", flush=True)


def wrong(message):
    print(f"WRONG: {message}", flush=True)
    print(f"WRONG: {message}", file=sys.stderr, flush=True)
    os._exit(2)


def percentile(values, p):
    v = sorted(values)
    rank = int(p / 100.0 * len(v) + 0.5)
    return v[min(max(rank, 1), len(v)) - 1]


def free_port():
    """Below the kernel's ephemeral range, checked by a bind (an ephemeral
    port can be taken by any outgoing connection before the peer binds it)."""
    for _ in range(200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", random.randrange(10000, 32000)))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port")


def wait_port(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def spawn(argv):
    """Starts a server in its own process group, able to import this module
    (Dask workers unpickle the task functions by name); its output goes to
    /dev/null unless BENCH_VERBOSE."""
    out = None if os.environ.get("BENCH_VERBOSE") else subprocess.DEVNULL
    env = dict(os.environ)
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(argv, stdout=out, stderr=out, env=env, start_new_session=True)


def stop(proc):
    """SIGTERM, up to 5 s, then SIGKILL of the process group; always reaps."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def inc(n):
    return n + 1


def sleep_ms(ms):
    time.sleep(ms / 1000.0)
    return ms


def length(data):
    return len(data)
