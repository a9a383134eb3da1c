"""CTest entry (py_interop): the interop matrix. A C client (the zexec
command) with a Python worker, the Python client with a C worker
(zexec-worker), and Python with Python, each plain, signed (shared secret)
and with CURVE, on one real zexec-broker per mode.

The two workers offer disjoint functions (the Python one pyadd, pyfail,
pyecho and pickled calls; the C one its built-ins echo, fail, sleep, pid),
so each call shows which implementation served it."""

import concurrent.futures as cf
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zx_cluster as zc  # noqa: E402
import zexec  # noqa: E402

FAILS = []


def check(what, cond, detail=""):
    print("%-4s %s %s" % ("ok" if cond else "FAIL", what, detail))
    if not cond:
        FAILS.append(what)


def zexec_cli(c, *args, stdin=None):
    flags = c.peer_flags("client")
    argv = [os.path.join(zc.BIN, "zexec"), args[0], "--broker", c.clients] + flags + list(
        args[1:])
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60,
                          env=zc.env_with_path())


def run_mode(mode, security, tmp):
    c = zc.Cluster(security, log_dir=tmp)
    try:
        c.start_broker()
        c.start_pyworker("--procs", "2", "--threads", "2", "--no-builtins", "--allow-pickle",
                         "--node", "py-" + mode, "--function", "pyadd=zx_interop_fns:add",
                         "--function", "pyfail=zx_interop_fns:fail",
                         "--function", "pyecho=zx_interop_fns:echo")
        c.start_cworker("--threads", "2", "--procs", "1", "--node", "c-" + mode)
        c.wait_workers(2)
        tag = "[%s]" % mode

        # C client -> Python worker
        r = zexec_cli(c, "submit", "pyadd", "[2, 40]")
        check(tag + " C client -> Py worker: submit", r.returncode == 0 and r.stdout.strip() == "42",
              repr((r.returncode, r.stdout, r.stderr[-300:])))
        r = zexec_cli(c, "map", "--chunksize", "3", "pyadd",
                      stdin="".join("[%d, %d]\n" % (i, i) for i in range(10)))
        check(tag + " C client -> Py worker: map --chunksize 3",
              r.returncode == 0 and r.stdout.split() == [str(2 * i) for i in range(10)],
              repr((r.returncode, r.stdout[:200], r.stderr[-300:])))
        r = zexec_cli(c, "submit", "pyecho", '["s", 1.5, [1, {"k": null}], true]')
        check(tag + " C client -> Py worker: values round trip",
              r.returncode == 0 and json.loads(r.stdout) == ["s", 1.5, [1, {"k": None}], True],
              repr((r.returncode, r.stdout, r.stderr[-300:])))
        r = zexec_cli(c, "submit", "pyfail", '["boom"]')
        check(tag + " C client -> Py worker: remote exception",
              r.returncode == 1 and "ValueError" in r.stderr and "boom" in r.stderr
              and "py-" + mode in r.stderr, repr((r.returncode, r.stderr[-400:])))

        with zexec.Executor(c.clients, **c.client_kwargs()) as ex:
            # Python client -> C worker
            v = ex.submit_named("echo", 1, "a", b"\x00b", [1.5, None], {"k": True}).result(30)
            check(tag + " Py client -> C worker: echo", v == [1, "a", b"\x00b", [1.5, None],
                                                            {"k": True}], repr(v))
            v = ex.submit_named("pid").result(30)
            check(tag + " Py client -> C worker: served by the C worker", v[0] == "c-" + mode,
                  repr(v))
            try:
                ex.submit_named("fail", "KeyError", "nope").result(30)
                check(tag + " Py client -> C worker: error", False, "no exception")
            except KeyError as e:
                check(tag + " Py client -> C worker: error", e.args == ("nope",), repr(e))
            big = "x" * 100000  # a payload in its own frame
            v = ex.submit_named("echo", big).result(30)
            check(tag + " Py client -> C worker: 100 kB payload", v == [big])
            v = list(ex.map_named("echo", range(20), chunksize=6, timeout=60))
            check(tag + " Py client -> C worker: map_named chunksize 6",
                  v == [[i] for i in range(20)], repr(v[:4]))

            # Python client -> Python worker
            check(tag + " Py client -> Py worker: submit (pickled)",
                  ex.submit(pow, 2, 10).result(30) == 1024)
            k = 7

            class Point:  # defined in __main__: pickled by value both ways
                def __init__(self, x):
                    self.x = x

            v = ex.submit(lambda p: Point(p.x + k), Point(1)).result(30)
            check(tag + " Py client -> Py worker: a closure and a __main__ class, both ways",
                  type(v).__name__ == "Point" and v.x == 8, repr(v))
            check(tag + " Py client -> Py worker: submit_named",
                  ex.submit_named("pyadd", "a", "b").result(30) == "ab")
            v = list(ex.map(divmod, range(10), [3] * 10, chunksize=4, timeout=60))
            check(tag + " Py client -> Py worker: map chunksize 4",
                  v == [divmod(i, 3) for i in range(10)], repr(v[:3]))
            try:
                ex.submit(int, "not a number").result(30)
                check(tag + " Py client -> Py worker: exception", False, "no exception")
            except ValueError as e:
                check(tag + " Py client -> Py worker: exception with remote traceback",
                      "not a number" in str(e) and "Traceback" in str(e.__cause__), repr(e))
            try:
                ex.submit_named("pyfail", "bad").result(30)
                check(tag + " Py client -> Py worker: named exception", False, "no exception")
            except ValueError as e:
                check(tag + " Py client -> Py worker: named exception", e.args == ("bad",),
                      repr(e))
            v = ex.submit_named("pyecho", big).result(30)
            check(tag + " Py client -> Py worker: 100 kB payload", v == [big])
            with cf.ThreadPoolExecutor(2) as local:
                fs = [ex.submit(pow, 2, 4), local.submit(pow, 2, 5),
                      ex.submit_named("echo", 6)]
                done, not_done = cf.wait(fs, timeout=60)
                got = sorted(str(f.result()) for f in cf.as_completed(fs, timeout=60))
            check(tag + " zexec futures are plain Futures and mix with a ThreadPoolExecutor's",
                  all(type(f) is cf.Future for f in fs) and not not_done
                  and got == ["16", "32", "[6]"], repr(got))
    finally:
        c.close()
    # SIGTERM: the workers drain and leave, the broker stops; all exit 0
    # (under the sanitizers, also without leaks or errors)
    check(tag + " every process exited 0", all(rc == 0 for _, rc in c.exits), repr(c.exits))


def broker_restart(tmp, security, mode):
    """The Python client and worker survive a broker restart (at least once
    delivery): a task running when the broker dies still resolves, and the
    executor and worker go on with the new broker."""
    c = zc.Cluster(security, log_dir=tmp)
    try:
        c.start_broker(["--heartbeat", "0.2"])
        c.start_pyworker("--procs", "2", "--allow-pickle", "--heartbeat", "0.2", "--node",
                         "py-restart")
        c.wait_workers(1)
        with zexec.Executor(c.clients, heartbeat=0.2, **c.client_kwargs()) as ex:
            f = ex.submit_named("sleep", 2.0)
            end = time.monotonic() + 30
            while not f.running() and not f.done() and time.monotonic() < end:
                time.sleep(0.005)  # polling a condition: STARTED came
            check("[restart %s] the task started before the restart" % mode, f.running())
            c.stop(c.broker)
            c._spawn([os.path.join(zc.BIN, "zexec-broker"), "--clients", c.clients,
                      "--workers", c.workers, "-q", "--heartbeat", "0.2"] + c.broker_flags(),
                     "broker2")
            v = f.result(60)
            check("[restart %s] a task running across a broker restart resolves" % mode,
                  v == 2.0, repr(v))
            v = ex.submit(pow, 3, 3).result(60)
            check("[restart %s] the executor and the worker go on" % mode, v == 27, repr(v))
    finally:
        c.close()


def lifecycle(tmp):
    """Time limits, cancels and an unreachable broker, Python client and
    worker."""
    c = zc.Cluster(None, log_dir=tmp)
    try:
        c.start_broker()
        c.start_pyworker("--procs", "0", "--threads", "1", "--node", "py-thread")
        c.wait_workers(1)
        with zexec.Executor(c.clients, time_limit=0.3) as ex:
            f = ex.submit_named("sleep", 1.0)
            try:
                f.result(60)
                check("[life] a thread past its time limit: TimeLimitError", False, "none")
            except zexec.TimeLimitError as e:
                check("[life] a thread past its time limit: TimeLimitError", True, repr(e))
            # the WRESULT said slot_freed = false; the slot comes back by a
            # CREDIT when the thread ends (the broker shows it free again)
            v = ex.submit_named("pid").result(60)
            end, free = time.monotonic() + 30, None
            while time.monotonic() < end:
                free = zexec.status(c.clients)["workers"][0]["free_thread"]
                if free == 1:
                    break
                time.sleep(0.02)
            check("[life] the thread's slot comes back by CREDIT",
                  v[0] == "py-thread" and free == 1, repr((v, free)))
    finally:
        c.close()
    c = zc.Cluster(None, log_dir=tmp)
    try:
        c.start_broker()
        c.start_pyworker("--procs", "2", "--allow-pickle", "--node", "py-life")
        c.wait_workers(1)
        with zexec.Executor(c.clients, time_limit=0.5) as ex:
            f = ex.submit_named("sleep", 30)
            try:
                f.result(60)
                check("[life] a time limit stops a task", False, "no exception")
            except zexec.TimeLimitError as e:
                check("[life] a time limit stops a task", "time limit" in str(e), repr(e))
            check("[life] the worker goes on after a time limit",
                  ex.submit(pow, 2, 3).result(60) == 8)
        with zexec.Executor(c.clients) as ex:
            before = zexec.status(c.clients)["totals"]["submitted"]
            # the busy tasks outlast the wait below by far, even on a loaded machine
            busy = [ex.submit_named("sleep", 3.0) for _ in range(2)]
            later = [ex.submit_named("sleep", 1.5) for _ in range(4)]
            end = time.monotonic() + 30  # a condition: the broker has all six
            while (zexec.status(c.clients)["totals"]["submitted"] < before + 6
                   and time.monotonic() < end):
                time.sleep(0.01)
            cancelled = [f.cancel() for f in later]  # queued at the broker or the worker
            check("[life] queued tasks cancel", all(cancelled), repr(cancelled))
            check("[life] the running ones finish", [f.result(60) for f in busy] == [3.0, 3.0])
            st = zexec.status(c.clients)
            check("[life] the broker cancelled them, nothing left running",
                  st["totals"]["cancelled"] == 4 and st["totals"]["running"] == 0
                  and st["totals"]["queued"] == 0, repr(st["totals"]))
            f = ex.submit(os._exit, 3)
            try:
                f.result(60)
                check("[life] a dying process fails its task", False, "no exception")
            except zexec.ProcessCrashed as e:
                check("[life] a dying process fails its task", "status 3" in str(e), repr(e))
            check("[life] the worker replaces the process",
                  ex.submit(pow, 3, 2).result(60) == 9)
    finally:
        c.close()
    port = zc.free_port()  # nothing listens there
    ex = zexec.Executor("tcp://127.0.0.1:%d" % port, broker_timeout=0.5, heartbeat=0.1)
    try:
        f = ex.submit_named("echo", 1)
        try:
            f.result(30)
            check("[life] an unreachable broker fails the future", False, "no exception")
        except zexec.BrokerUnreachableError as e:
            check("[life] an unreachable broker fails the future", True, repr(e))
    finally:
        ex.shutdown(wait=True)


def security_refusals(tmp, secret):
    """Mixed or missing security fails closed; pickle needs loopback or
    security (docs/python.md)."""
    c = zc.Cluster(("secret", secret), log_dir=tmp)
    try:
        c.start_broker()
        wrong = os.path.join(tmp, "wrong.secret")
        zc.make_secret(wrong)
        try:
            zexec.status(c.clients, timeout=1.0, secret_file=wrong)
            check("[security] a wrong secret is not answered", False)
        except zexec.BrokerUnreachableError:
            check("[security] a wrong secret is not answered", True)
        try:
            zexec.status(c.clients, timeout=1.0)
            check("[security] an unsigned client is not answered", False)
        except zexec.BrokerUnreachableError:
            check("[security] an unsigned client is not answered", True)
    finally:
        c.close()
    r = subprocess.run([zc.PY, "-m", "zexec.worker", "--broker", "tcp://192.0.2.1:5571",
                        "--allow-pickle"], capture_output=True, text=True, timeout=30,
                       env=zc.env_with_path())
    check("[security] pyworker refuses --allow-pickle off loopback without security",
          r.returncode == 2 and "not loopback" in r.stderr, repr((r.returncode, r.stderr)))
    ex = zexec.Executor("tcp://192.0.2.1:5570")
    try:
        ex.submit(pow, 2, 2)
        check("[security] client refuses to send pickles off loopback without security", False)
    except zexec.ZexecError as e:
        check("[security] client refuses to send pickles off loopback without security",
              "not loopback" in str(e), repr(e))
    finally:
        ex.shutdown(wait=True)


def proto_unit():
    """The Python decoder's strictness (docs/protocol.md sections 3, 4, 7)
    and the envelope (section 10), without a network."""
    from zexec import _proto as P

    def code(frames, role):
        try:
            P.decode(frames, role)
            return 0
        except P.DecodeError as e:
            return e.args[0]

    sid = b"\x01" * 16
    sub = P.encode(P.SUBMIT, [[1, "f", 0, 0, 0, 0, 0], [2, "f", 2, -5, -1, 10, 1]],
                   [b"\x90", b"x" * 1000])
    m = P.decode(list(sub), P.ROLE_BROKER_C)
    check("[proto] SUBMIT round trip, one payload inline and one framed",
          m.payloads == [b"\x90", b"x" * 1000] and len(sub) == 3)
    hello = P.encode(P.HELLO, [2, sid, "n", 1000, "a later field"])
    check("[proto] trailing fields accepted", code(hello, P.ROLE_BROKER_C) == 0)
    cases = [
        ("one frame", [sub[0]], P.ROLE_BROKER_C, P.E_SHORT),
        ("bad frame 0", [b"ZY\x02\x03"] + sub[1:], P.ROLE_BROKER_C, P.E_SIG),
        ("version 1", [b"ZX\x01\x03"] + sub[1:], P.ROLE_BROKER_C, P.E_VERSION),
        ("wrong endpoint", sub, P.ROLE_BROKER_W, P.E_CMD),
        ("not msgpack", [sub[0], b"\xc1"], P.ROLE_BROKER_C, P.E_MSGPACK),
        ("two values", [sub[0], b"\x90\x90"], P.ROLE_BROKER_C, P.E_MSGPACK),
        ("a missing payload frame", sub[:2], P.ROLE_BROKER_C, P.E_PAYLOADS),
        ("a bool for a uint", P.encode(P.CREDIT, [True, 1]), P.ROLE_BROKER_W, P.E_SHAPE),
        ("CREDIT n over 1,000,000", P.encode(P.CREDIT, [1, 1000001]), P.ROLE_BROKER_W,
         P.E_SHAPE),
        ("CREDIT pool 0", P.encode(P.CREDIT, [0, 1]), P.ROLE_BROKER_W, P.E_SHAPE),
        ("priority 128", P.encode(P.SUBMIT, [[1, "f", 0, 128, 0, 0, 0]], [b""]),
         P.ROLE_BROKER_C, P.E_SHAPE),
        ("an empty name", P.encode(P.SUBMIT, [[1, "", 0, 0, 0, 0, 0]], [b""]),
         P.ROLE_BROKER_C, P.E_SHAPE),
        ("HELLO heartbeat over 3,600,000", P.encode(P.HELLO, [2, sid, "n", 3600001]),
         P.ROLE_BROKER_C, P.E_SHAPE),
        ("READY threads over 1,000,000",
         P.encode(P.READY, [2, sid, "n", 1, 1000001, 0, 1, 1000, [], []]), P.ROLE_BROKER_W,
         P.E_SHAPE),
        ("an id of 15 bytes", P.encode(P.WCANCEL, [[b"\x01" * 15, 1, False]]), P.ROLE_WORKER,
         P.E_SHAPE),
        ("an inline payload that is a str",
         [sub[0], __import__("msgpack").packb([[1, "f", 0, 0, 0, 0, 0, "s"]])],
         P.ROLE_BROKER_C, P.E_SHAPE),
        ("4097 items", P.encode(P.CANCEL, [[i, False] for i in range(4097)]), P.ROLE_BROKER_C,
         P.E_BATCH),
    ]
    for what, frames, role, want in cases:
        got = code(list(frames), role)
        check("[proto] dropped: " + what, got == want, "code %d, want %d" % (got, want))
    a = P.Signer(b"s" * 32, P.ROLE_BROKER_C, P.ROLE_CLIENT)
    b = P.Signer(b"s" * 32, P.ROLE_CLIENT, P.ROLE_CLIENT)
    a.remote = b.session  # as after the first RESET
    msg = a.sign(P.encode(P.HEARTBEAT, []))
    b.my_role = P.ROLE_BROKER_C
    check("[proto] a signed message verifies", b.verify(list(msg)) is None)
    check("[proto] its replay does not", b.verify(list(msg)) is not None)
    msg = a.sign(P.encode(P.HEARTBEAT, []))
    bad = list(msg)
    bad[1] = b"\x91\xc0"
    check("[proto] an altered frame does not", b.verify(bad) is not None)
    check("[proto] the envelope is 76 bytes", len(msg[-1]) == 76)


def broker_rules(tmp):
    """What docs/protocol.md says the broker answers, checked with raw
    sockets: ERROR 1 and 2, RESET for an unknown peer, silence for a
    malformed message (counted), REFUSED for an unknown seq, REJECTED for a
    quota, NOFUNC after the grace period, NOTALLOWED at once."""
    import zmq
    from zexec import _proto as P

    c = zc.Cluster(None, log_dir=tmp)
    ctx = zmq.Context()
    try:
        c.start_broker(["--max-queued", "2", "--nofunc-grace", "0.3"])
        c.start_cworker("--threads", "1", "--procs", "0")
        c.wait_workers(1)

        def dealer(rid):
            d = ctx.socket(zmq.DEALER)
            P.setup_socket(d)
            d.setsockopt(zmq.ROUTING_ID, rid)
            d.connect(c.clients)
            return d

        def recv(d, timeout=5.0):
            if not d.poll(timeout * 1000):
                return None
            return P.decode(d.recv_multipart(), P.ROLE_CLIENT)

        sid = b"\x07" + os.urandom(15)
        d = dealer(sid)
        d.send_multipart(P.encode(P.SUBMIT, [[1, "echo", 0, 0, 0, 0, 0]], [b"\x90"]))
        m = recv(d)
        check("[broker] SUBMIT before HELLO: RESET", m is not None and m.cmd == P.RESET)
        d.send_multipart(P.encode(P.HELLO, [3, sid, "t", 1000]))
        m = recv(d)
        check("[broker] HELLO version 3: ERROR 1",
              m is not None and m.cmd == P.ERROR and m.header[0] == 1, m and m.header)
        d.send_multipart(P.encode(P.HELLO, [2, b"\x08" * 16, "t", 1000]))
        m = recv(d)
        check("[broker] HELLO session not the routing id: ERROR 2",
              m is not None and m.cmd == P.ERROR and m.header[0] == 2, m and m.header)
        d.send_multipart(P.encode(P.HELLO, [2, sid, "t", 1000]))
        m = recv(d)
        check("[broker] HELLO: WELCOME with heartbeat and liveness",
              m is not None and m.cmd == P.WELCOME and m.header[1] == 1000
              and m.header[2] == 3, m and m.header)
        drops = zexec.status(c.clients)["totals"]["dropped_messages"]
        d.send_multipart(P.encode(P.SUBMIT, [[5, "echo", 0, 0, 0, 0, 0],
                                             [6, "echo", 0, 200, 0, 0, 0]], [b"\x90", b"\x90"]))
        d.send_multipart(P.encode(P.CANCEL, [[99, False]]))
        # revision 2.1: the bad item fails alone (REJECTED, BadRequestError
        # naming the reason), the good one runs, nothing is dropped
        got, cancelled = {}, None
        end = time.monotonic() + 10
        while (len(got) < 2 or cancelled is None) and time.monotonic() < end:
            m = recv(d, 1.0)
            if m is not None and m.cmd == P.RESULT:
                for it, pl in zip(m.header, m.payloads):
                    got[it[0]] = (it[1], pl)
            elif m is not None and m.cmd == P.CANCELLED:
                cancelled = m.header
        check("[broker] a batch with one bad item: that item REJECTED with BadRequestError, "
              "the other runs; CANCEL of an unknown seq: REFUSED",
              got.get(5, (None,))[0] == P.ST_OK and got.get(6, (None,))[0] == P.ST_REJECTED
              and b"BadRequestError" in bytes(got[6][1] or b"")
              and cancelled == [[99, P.CANCEL_REFUSED]], repr((got, cancelled)))
        check("[broker] a bad item is not a dropped message",
              zexec.status(c.clients)["totals"]["dropped_messages"] == drops)
        # quota: 2 queued tasks of a function nobody offers, a third REJECTED
        d.send_multipart(P.encode(P.SUBMIT, [[10 + i, "nobody", 0, 0, 0, 0, 0]
                                             for i in range(3)], [b"\x90"] * 3))
        got = {}
        end = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < end:
            m = recv(d, 1.0)
            if m is not None and m.cmd == P.RESULT:
                for it in m.header:
                    got[it[0]] = it[1]
        check("[broker] over --max-queued: REJECTED; no worker within the grace: NOFUNC",
              got == {10: P.ST_NOFUNC, 11: P.ST_NOFUNC, 12: P.ST_REJECTED}, repr(got))
        d.send_multipart(P.encode(P.SUBMIT, [[20, "echo", P.POOL_PROCESS, 0, 0, 0, 0]],
                                  [b"\x90"]))
        m = recv(d)
        check("[broker] a pool no worker offers the function in: NOTALLOWED at once",
              m is not None and m.cmd == P.RESULT and m.header[0][1] == P.ST_NOTALLOWED,
              m and m.header)
        d.send_multipart(P.encode(P.BYE, []))
        d.close(100)
    finally:
        ctx.term()
        c.close()


def main():
    proto_unit()
    with tempfile.TemporaryDirectory(prefix="zexec-interop-") as tmp:
        secret = os.path.join(tmp, "cluster.secret")
        zc.make_secret(secret)
        keys = os.path.join(tmp, "keys")
        zc.make_keys(keys)
        for mode, sec in (("plain", None), ("signed", ("secret", secret)),
                          ("curve", ("curve", keys))):
            try:
                run_mode(mode, sec, tmp)
            except Exception as e:
                check("[%s] cluster" % mode, False, repr(e))
        for mode, sec in (("plain", None), ("signed", ("secret", secret))):
            try:
                broker_restart(tmp, sec, mode)
            except Exception as e:
                check("[restart %s] cluster" % mode, False, repr(e))
        try:
            broker_rules(tmp)
        except Exception as e:
            check("[broker] cluster", False, repr(e))
        try:
            lifecycle(tmp)
        except Exception as e:
            check("[life] cluster", False, repr(e))
        try:
            security_refusals(tmp, secret)
        except Exception as e:
            check("[security] cluster", False, repr(e))
        if FAILS and os.environ.get("ZEXEC_TEST_VERBOSE"):
            for f in sorted(os.listdir(tmp)):
                if f.endswith(".log"):
                    print("==", f)
                    print(open(os.path.join(tmp, f), errors="replace").read()[-3000:])
    print("%d failed" % len(FAILS))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
