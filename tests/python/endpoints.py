"""CTest entry (py_endpoints): broker endpoint lists in the pure-Python
client and worker (a pair of brokers, docs/operations.md "Running a pair";
docs/python.md).

- the parser against common/endpoints.c's rules: blanks around items, the
  order kept, and every malformed list refused with a ValueError naming
  what is wrong, by Executor, status(), Worker and zexec-pyworker (exit 2);
  $ZEXEC_BROKER with a list; the loopback rule for pickles on each
  endpoint;
- a fake passive broker (a ROUTER answering every message with ERROR 3, as
  the passive of a pair does, like tests/test_endpoints.c) listed first and
  a real zexec-broker second: a Python worker and a Python Executor given
  "fake,real" both reach the real broker, results come back, status() answers,
  and the fake saw the READY and HELLO tried first;
- a dead port listed first: the client, the worker and status() reach the
  real broker after the liveness window;
- a real pair (zexec-broker --primary/--backup --peer --journal): a
  Python client's map through both endpoints with two Python workers given
  both worker endpoints, the active broker killed with SIGKILL while it
  runs: every result arrives, each its own task's, in order.

Every wait is on a condition, bounded; every process is stopped by its
PID."""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import msgpack
import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zx_cluster as zc  # noqa: E402
import zexec  # noqa: E402
from zexec import _proto as P  # noqa: E402
from zexec import worker as W  # noqa: E402

FAILS = []


def check(what, cond, detail=""):
    print("%-4s %s %s" % ("ok" if cond else "FAIL", what, detail), flush=True)
    if not cond:
        FAILS.append(what)


def refused(fn, reason):
    """fn() raises ValueError whose message names reason."""
    try:
        fn()
    except ValueError as e:
        return reason in str(e), str(e)
    except Exception as e:  # noqa: BLE001 - the wrong exception is a failure
        return False, "%s: %s" % (type(e).__name__, e)
    return False, "accepted"


def wait_until(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for " + what)


# ---- parsing -------------------------------------------------------------------------


def parsing():
    check("one endpoint is a list of one",
          P.parse_endpoints("tcp://127.0.0.1:5570") == ["tcp://127.0.0.1:5570"])
    got = P.parse_endpoints("  tcp://a:1 ,\ttcp://b:2 , ipc:///tmp/c  ")
    check("blanks around items ignored, order kept",
          got == ["tcp://a:1", "tcp://b:2", "ipc:///tmp/c"], repr(got))
    sixteen = ",".join("tcp://h:%d" % (5000 + i) for i in range(16))
    check("sixteen endpoints accepted", len(P.parse_endpoints(sixteen)) == 16)
    long_ok = "tcp://" + "h" * 244 + ":5570"  # 255 bytes
    check("an endpoint of 255 bytes accepted", P.parse_endpoints(long_ok) == [long_ok])
    cases = [
        ("", "an empty endpoint"),
        ("   ", "an empty endpoint"),
        ("tcp://a:1,,tcp://b:2", "an empty endpoint"),
        ("tcp://a:1,", "an empty endpoint"),
        (",tcp://a:1", "an empty endpoint"),
        ("tcp://a :1", "a blank inside an endpoint"),
        ("tcp://a:1,tcp://b\t:2", "a blank inside an endpoint"),
        ("tcp://" + "h" * 245 + ":5570", "an endpoint longer than 255 bytes"),
        (sixteen + ",tcp://h:6000", "more than 16 endpoints"),
    ]
    for spec, why in cases:
        ok, msg = refused(lambda: P.parse_endpoints(spec), why)
        check("parse refuses %r: %s" % (spec[:40], why),
              ok and "invalid broker endpoint list" in msg, msg[:160])
    ok, msg = refused(lambda: P.parse_endpoints(None), "no broker endpoint")
    check("parse refuses None", ok, msg)

    # every user of a list refuses the same way, before starting anything
    bad = "tcp://127.0.0.1:1,,tcp://127.0.0.1:2"
    ok, msg = refused(lambda: zexec.Executor(bad), "an empty endpoint")
    check("Executor refuses a malformed list", ok, msg[:160])
    ok, msg = refused(lambda: zexec.status(bad, timeout=0.5), "an empty endpoint")
    check("status() refuses a malformed list", ok, msg[:160])
    ok, msg = refused(lambda: W.Worker(bad, procs=0, threads=1), "an empty endpoint")
    check("Worker refuses a malformed list", ok, msg[:160])
    r = subprocess.run([zc.PY, "-m", "zexec.worker", "--broker", "tcp://a:1,tcp://b c:2",
                        "--threads", "1", "--procs", "0"], capture_output=True, text=True,
                       timeout=60, env=zc.env_with_path())
    check("zexec-pyworker --broker with a malformed list exits 2 with the reason",
          r.returncode == 2 and "a blank inside an endpoint" in r.stderr,
          repr((r.returncode, r.stderr[-200:])))
    old = os.environ.get("ZEXEC_BROKER")
    os.environ["ZEXEC_BROKER"] = "tcp://127.0.0.1:1, tcp://127.0.0.1:2"
    try:
        ex = zexec.Executor(broker_timeout=0.5)
        try:
            check("$ZEXEC_BROKER takes a list", ex.endpoints == (
                "tcp://127.0.0.1:1", "tcp://127.0.0.1:2") and ex.endpoint == "tcp://127.0.0.1:1",
                repr((ex.endpoints, ex.endpoint)))
        finally:
            ex.shutdown()
        os.environ["ZEXEC_BROKER"] = "tcp://127.0.0.1:1,"
        ok, msg = refused(lambda: zexec.Executor(), "an empty endpoint")
        check("a malformed $ZEXEC_BROKER is refused", ok, msg[:160])
    finally:
        if old is None:
            del os.environ["ZEXEC_BROKER"]
        else:
            os.environ["ZEXEC_BROKER"] = old


def loopback_rule():
    """Pickles only when every endpoint is loopback (or with authentication)."""
    ex = zexec.Executor("tcp://127.0.0.1:1,tcp://10.255.255.1:1", broker_timeout=0.5)
    try:
        try:
            ex.submit(abs, -1)
            check("pickles refused when one endpoint of the list is not loopback", False,
                  "accepted")
        except zexec.ZexecError as e:
            check("pickles refused when one endpoint of the list is not loopback",
                  "10.255.255.1" in str(e), str(e)[:200])
    finally:
        ex.shutdown()
    try:
        W.Worker("tcp://127.0.0.1:1,tcp://10.255.255.1:1", procs=0, threads=1,
                 allow_pickle=True)
        check("--allow-pickle refused when one endpoint is not loopback", False, "accepted")
    except P.ConfigError as e:
        check("--allow-pickle refused when one endpoint is not loopback",
              "not loopback" in str(e), str(e)[:200])
    w = W.Worker("tcp://127.0.0.1:1,ipc:///tmp/zx-none", procs=0, threads=1, allow_pickle=True)
    check("--allow-pickle accepted when every endpoint is loopback",
          w.endpoints == ["tcp://127.0.0.1:1", "ipc:///tmp/zx-none"])


# ---- a fake passive broker -----------------------------------------------------------------


class FakePassive:
    """A ROUTER on a free loopback port that answers every message with
    ERROR 3, as the passive broker of a pair does; counts the commands it
    got."""

    def __init__(self):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        for _ in range(50):
            port = zc.free_port()
            try:
                self.sock.bind("tcp://127.0.0.1:%d" % port)
                break
            except zmq.ZMQError:
                continue
        else:
            raise OSError("no free port for the fake broker")
        self.endpoint = "tcp://127.0.0.1:%d" % port
        self.seen = {}
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        err = msgpack.packb([P.ERR_PASSIVE, "this broker is passive: use the other endpoint"])
        while not self.stopping:
            if not self.sock.poll(50):
                continue
            frames = self.sock.recv_multipart()
            if len(frames) >= 2 and len(frames[1]) == 4:
                with self.lock:
                    name = P.cmd_name(frames[1][3])
                    self.seen[name] = self.seen.get(name, 0) + 1
            self.sock.send_multipart([frames[0], bytes((0x5A, 0x58, P.VERSION, P.ERROR)), err])

    def count(self, name):
        with self.lock:
            return self.seen.get(name, 0)

    def close(self):
        self.stopping = True
        self.thread.join(10)
        self.sock.close(0)
        self.ctx.term()


def dead_endpoint():
    """A loopback port nobody listens on."""
    return "tcp://127.0.0.1:%d" % zc.free_port()


def pyworker(c, broker, node, *extra):
    return c._spawn([zc.PY, "-m", "zexec.worker", "--broker", broker, "--node", node,
                     "--threads", "2", "--procs", "0", "--allow-pickle"] + c.peer_flags("worker")
                    + list(extra), "pyworker-" + node)


def nodes(c):
    return {w.get("node") for w in
            zexec.status(c.clients, timeout=5.0, **c.client_kwargs()).get("workers", [])}


def first_passive(tmp):
    c = zc.Cluster(log_dir=tmp)
    fc = FakePassive()
    fw = FakePassive()
    try:
        c.start_broker()
        pyworker(c, fw.endpoint + "," + c.workers, "py-after-passive")
        wait_until(lambda: "py-after-passive" in nodes(c), 60,
                   "the worker given passive,real to register at the real broker")
        check("worker given fake-passive,real: registered at the real broker", True)
        check("worker: the fake passive got its READY first", fw.count("READY") >= 1,
              repr(fw.seen))
        with zexec.Executor(fc.endpoint + "," + c.clients) as ex:
            check("Executor.endpoint is the first of the list at the start",
                  ex.endpoints == (fc.endpoint, c.clients))
            v = ex.submit_named("echo", "via", "pair").result(60)
            check("client given fake-passive,real: a named call's result", v == ["via", "pair"],
                  repr(v))
            v = list(ex.map(lambda x: x * 3, range(20), chunksize=4))
            check("client given fake-passive,real: a chunked map of pickled calls",
                  v == [3 * x for x in range(20)], repr(v[:5]))
            check("client: the fake passive got its HELLO first", fc.count("HELLO") >= 1,
                  repr(fc.seen))
            check("client: Executor.endpoint is now the real broker", ex.endpoint == c.clients,
                  ex.endpoint)
        helloed = fc.count("HELLO")
        st = zexec.status(fc.endpoint + "," + c.clients, timeout=10.0)
        check("status() given fake-passive,real: the real broker's map",
              "py-after-passive" in {w.get("node") for w in st.get("workers", [])},
              repr(sorted(st))[:200])
        check("status(): asked the fake passive first", fc.count("HELLO") > helloed)
        try:
            zexec.status(fc.endpoint, timeout=1.0)
            check("status() of a passive broker alone raises", False, "answered")
        except zexec.BrokerUnreachableError as e:
            check("status() of a passive broker alone raises, saying passive",
                  "passive" in str(e), str(e))
        try:
            zexec.status(fc.endpoint + "," + fw.endpoint, timeout=2.0)
            check("status() of two passive brokers raises", False, "answered")
        except zexec.BrokerUnreachableError as e:
            check("status() of two passive brokers raises, naming the list",
                  "no active broker among" in str(e) and "passive" in str(e), str(e))
    finally:
        c.close()
        fc.close()
        fw.close()
    check("first_passive: every process stopped exits 0", all(rc == 0 for _, rc in c.exits),
          repr(c.exits))


def two_passives(tmp):
    """Both endpoints passive (a pair starting, or taking over): the client
    and the worker go round the list, but after a whole round of ERROR 3
    one heartbeat apart, not at network speed. Counted over a window of
    the test's own choosing: the bound is many times what pacing allows
    and far below what bouncing at network speed sends, and load only
    lowers the counts."""
    a, b = FakePassive(), FakePassive()
    c = zc.Cluster(log_dir=tmp)
    try:
        both = a.endpoint + "," + b.endpoint
        ex = zexec.Executor(both, heartbeat=0.5)
        try:
            f = ex.submit_named("echo", 1)
            wait_until(lambda: a.count("HELLO") >= 2 and b.count("HELLO") >= 2, 60,
                       "the client to say HELLO to both passives twice")
            n0 = a.count("HELLO") + b.count("HELLO")
            time.sleep(2.0)  # the window counted over (not a synchronisation)
            n = a.count("HELLO") + b.count("HELLO") - n0
            check("client between two passives: goes round, paced", n <= 40,
                  "%d HELLO in the window" % n)
            check("client between two passives: the future stays pending", not f.done())
            f.cancel()
        finally:
            ex.shutdown(wait=True)
        pyworker(c, both, "py-two-passives", "--heartbeat", "0.5")
        wait_until(lambda: a.count("READY") >= 2 and b.count("READY") >= 2, 60,
                   "the worker to say READY to both passives twice")
        n0 = a.count("READY") + b.count("READY")
        time.sleep(2.0)  # the window counted over (not a synchronisation)
        n = a.count("READY") + b.count("READY") - n0
        check("worker between two passives: goes round, paced", n <= 40,
              "%d READY in the window" % n)
    finally:
        c.close()
        a.close()
        b.close()
    check("two_passives: the worker stopped exits 0", all(rc == 0 for _, rc in c.exits),
          repr(c.exits))


def first_dead(tmp):
    c = zc.Cluster(log_dir=tmp)
    try:
        c.start_broker()
        dw = dead_endpoint()
        pyworker(c, dw + "," + c.workers, "py-after-dead", "--heartbeat", "0.3")
        wait_until(lambda: "py-after-dead" in nodes(c), 60,
                   "the worker given dead,real to register at the real broker")
        check("worker given dead,real: registered after the liveness window", True)
        dc = dead_endpoint()
        with zexec.Executor(dc + "," + c.clients, heartbeat=0.3) as ex:
            v = ex.submit_named("echo", 7).result(60)
            check("client given dead,real: the result", v == [7], repr(v))
            check("client given dead,real: Executor.endpoint is the real broker",
                  ex.endpoint == c.clients, ex.endpoint)
        st = zexec.status(dead_endpoint() + "," + c.clients, timeout=4.0)
        check("status() given dead,real: the real broker's map after the first slice",
              "py-after-dead" in {w.get("node") for w in st.get("workers", [])})
        # no endpoint answers: broker_timeout counts from the last message of any
        both_dead = dead_endpoint() + "," + dead_endpoint()
        with zexec.Executor(both_dead, heartbeat=0.2, broker_timeout=1.5) as ex:
            try:
                ex.submit_named("echo", 1).result(60)
                check("two dead endpoints: BrokerUnreachableError", False, "a result")
            except zexec.BrokerUnreachableError as e:
                check("two dead endpoints: BrokerUnreachableError naming the list",
                      both_dead in str(e), str(e))
    finally:
        c.close()
    check("first_dead: every process stopped exits 0", all(rc == 0 for _, rc in c.exits),
          repr(c.exits))


# ---- a real pair ----------------------------------------------------------------------------

ACTIVE = "pair: this broker is active now"
COPY = "passive copy complete: may take over"


def log_count(path, what):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").count(what)
    except OSError:
        return 0


def real_pair(tmp, security=None):
    c = zc.Cluster(security, log_dir=tmp)
    tag = "pair%s: " % (" (signed)" if security else "")
    kw = c.client_kwargs()
    peer = "tcp://127.0.0.1:%d" % zc.free_port()
    cps = [zc.free_port(), zc.free_port()]
    wps = [zc.free_port(), zc.free_port()]
    cl = ",".join("tcp://127.0.0.1:%d" % p for p in cps)
    wl = ",".join("tcp://127.0.0.1:%d" % p for p in wps)
    # the backup (the passive one) first: what follows its ERROR 3
    cl_rev = ",".join("tcp://127.0.0.1:%d" % p for p in reversed(cps))
    wl_rev = ",".join("tcp://127.0.0.1:%d" % p for p in reversed(wps))
    brokers, logs = [None, None], [None, None]
    roles = ["--primary", "--backup"]

    def start(i, inc):
        logs[i] = os.path.join(tmp, "pair%d.%d.log" % (i, inc))
        os.makedirs(os.path.join(tmp, "j%d" % i), exist_ok=True)
        out = open(logs[i], "wb")
        p = subprocess.Popen([os.path.join(zc.BIN, "zexec-broker"), roles[i], "--peer", peer,
                              "--journal", os.path.join(tmp, "j%d" % i),
                              "--clients", "tcp://127.0.0.1:%d" % cps[i],
                              "--workers", "tcp://127.0.0.1:%d" % wps[i],
                              "--heartbeat", "1", "--liveness", "3", "--retries", "100"]
                             + c.broker_flags(),
                             stdout=out, stderr=subprocess.STDOUT, env=zc.env_with_path())
        out.close()
        c.procs.append(p)
        brokers[i] = p

    try:
        start(0, 1)
        start(1, 1)
        wait_until(lambda: log_count(logs[0], ACTIVE) >= 1, 60, "the primary to become active")
        wait_until(lambda: log_count(logs[1], COPY) >= 1, 60, "the backup's complete copy")
        pyworker(c, wl, "pyw1")
        pyworker(c, wl_rev, "pyw2")

        def both():
            try:
                st = zexec.status(cl, timeout=5.0, **kw)
            except zexec.BrokerUnreachableError:
                return False
            return {"pyw1", "pyw2"} <= {w.get("node") for w in st.get("workers", [])}

        wait_until(both, 60, "both Python workers to register at the pair")
        check(tag + "both Python workers registered through the worker list (one given the "
              "passive broker first)", True)
        st = zexec.status(cl_rev, timeout=10.0, **kw)
        check(tag + "status() given passive,active: the active's map",
              {"pyw1", "pyw2"} <= {w.get("node") for w in st.get("workers", [])})
        with zexec.Executor(cl_rev, **kw) as ex:
            v = ex.submit_named("echo", "passive", "first").result(60)
            check(tag + "client given passive,active: the result", v == ["passive", "first"],
                  repr(v))
            check(tag + "client given passive,active: Executor.endpoint is the active one",
                  ex.endpoint == "tcp://127.0.0.1:%d" % cps[0], ex.endpoint)
        check(tag + "the passive broker stayed passive", log_count(logs[1], ACTIVE) == 0)
        n = 40
        want = [0.2 + i / 1000.0 for i in range(n)]
        got = []
        with zexec.Executor(cl, **kw) as ex:
            fs = [ex.submit_named("sleep", x) for x in want]
            wait_until(lambda: sum(f.done() for f in fs) >= 6, 120, "6 results before the kill")
            done = sum(f.done() for f in fs)
            check(tag + "the map was still running at the kill", done < n, "%d done" % done)
            killed = 0  # the primary is the active one (its log said so)
            actives = log_count(logs[1 - killed], ACTIVE)
            brokers[killed].send_signal(signal.SIGKILL)
            brokers[killed].wait(30)
            c.procs.remove(brokers[killed])
            for f in fs:
                try:
                    got.append(f.result(180))
                except Exception as e:  # noqa: BLE001 - reported as the failure
                    check(tag + "a task failed", False, repr(e))
                    break
            check(tag + "the other broker took over",
                  log_count(logs[1 - killed], ACTIVE) > actives)
            check(tag + "after kill -9 of the active, every result arrived, each its own "
                  "task's, in order", got == want, "%d of %d" % (len(got), n))
            check(tag + "Executor.endpoint is the broker that took over",
                  ex.endpoint == "tcp://127.0.0.1:%d" % cps[1 - killed], ex.endpoint)
    finally:
        c.close()
    check(tag + "every process stopped exits 0", all(rc == 0 for _, rc in c.exits),
          repr(c.exits))


def main():
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="zx-pyeps-") as tmp:
        secret = os.path.join(tmp, "secret")
        zc.make_secret(secret)

        def signed_pair(d):
            real_pair(d, ("secret", secret))

        for part in (parsing, loopback_rule, first_passive, two_passives, first_dead, real_pair,
                     signed_pair):
            t = time.monotonic()
            d = os.path.join(tmp, part.__name__)
            os.makedirs(d)
            try:
                part(d) if part not in (parsing, loopback_rule) else part()
            except Exception as e:  # noqa: BLE001 - a part that breaks is a failure
                check(part.__name__ + " ran to its end", False, "%s: %s" % (type(e).__name__, e))
                for f in sorted(os.listdir(d)):
                    with open(os.path.join(d, f), "rb") as fh:
                        tail = fh.read()[-2000:].decode("utf-8", "replace")
                    print("---- %s (tail)\n%s" % (f, tail))
            print("   %s: %.0f s" % (part.__name__, time.monotonic() - t), flush=True)
    print("%d failed, in %.0f s" % (len(FAILS), time.monotonic() - t0))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
