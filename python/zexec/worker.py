"""zexec-pyworker: a worker node in pure Python that speaks ZXP to a
zexec-broker (docs/python.md, docs/protocol.md).

One thread runs the loop: it polls the broker's DEALER socket, the thread
pool's wake-up pipe, the signal pipe and the process-pool children's
pipes, handles what is ready, then flushes: the WSTARTED items of one turn
go out as one message, then the WRESULT items as one.

Process pool: --procs children (python3 -m zexec._child), one task each at
a time, killed and replaced for a time limit or a terminating cancel, and
replaced when they die (the task fails CRASHED). Thread pool: --threads
threads in this process (no isolation: a crash there is the worker's).

Like the C worker: the broker's silence for liveness x heartbeat (this
worker's own heartbeat) means it is gone: a new DEALER with the same
routing id, READY listing every task still held, results held until the
broker speaks. A pair of brokers (docs/operations.md, "Running a pair"):
--broker takes a list, "tcp://a:5571,tcp://b:5571"; the worker talks to one
endpoint at a time and that new DEALER goes to the next endpoint (wrapping)
when the current one is silent or answers ERROR 3 (passive). SIGTERM or
SIGINT drains (DRAIN, finish running tasks, BYE); a second one leaves at
once.
"""

import argparse
import collections
import logging
import math
import os
import queue
import secrets
import signal
import struct
import subprocess
import sys
import threading
import time

import msgpack
import zmq

from . import _proto as P
from . import _tasks

log = logging.getLogger("zexec.worker")

HELD_MAX = 10000


def _now_ms():
    return time.monotonic() * 1000.0


class Job:
    __slots__ = ("session", "seq", "fn", "pool", "flags", "args", "limit_ms", "state",
                 "deadline", "status", "payload", "started_sent", "child", "slot_freed")

    def __init__(self, session, seq, fn, pool, flags, args, limit_ms):
        self.session = session
        self.seq = seq
        self.fn = fn
        self.pool = pool
        self.flags = flags
        self.args = args
        self.limit_ms = limit_ms
        self.state = "queued"  # queued, running, done, timedout (thread past its limit)
        self.deadline = 0.0
        self.status = None
        self.payload = None
        self.started_sent = False
        self.child = None
        self.slot_freed = True


class Child:
    """One process-pool child."""

    def __init__(self, argv):
        r1, w1 = os.pipe()  # parent -> child
        r2, w2 = os.pipe()  # child -> parent
        # the child imports what this process can: zexec itself (also when
        # run from a source tree) and the modules of --function, --preload
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zexec._child", str(r1), str(w2)] + argv,
            pass_fds=(r1, w2), close_fds=True, env=env)
        os.close(r1)
        os.close(w2)
        self.fd_to = w1
        self.fd_from = r2
        self.jobs = collections.deque()  # sent to it (one at most); it runs
        self.head_start = 0.0

    def send(self, job):
        body = msgpack.packb([job.fn, job.flags, job.args], use_bin_type=True)
        data = memoryview(struct.pack(">I", len(body)) + body)
        try:
            while data:
                data = data[os.write(self.fd_to, data):]
        except OSError:
            pass  # it died: its pipe says so at the next poll

    def read(self):
        """A record [status, payload], b'' for the ready record, or None at EOF."""
        h = self._read(4)
        if h is None:
            return None
        n = struct.unpack(">I", h)[0]
        if n == 0:
            return b""
        body = self._read(n)
        return None if body is None else msgpack.unpackb(body, raw=False)

    def _read(self, n):
        buf = bytearray()
        while len(buf) < n:
            try:
                b = os.read(self.fd_from, n - len(buf))
            except OSError:
                return None
            if not b:
                return None
            buf += b
        return bytes(buf)

    def kill(self):
        try:
            self.proc.kill()
        except OSError:
            pass
        self.reap()

    def reap(self):
        for fd in (self.fd_to, self.fd_from):
            try:
                os.close(fd)
            except OSError:
                pass
        self.fd_to = self.fd_from = -1
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _death(rc):
    if rc is None:
        return "exited"
    if rc < 0:
        try:
            return "killed by signal %s" % signal.Signals(-rc).name
        except ValueError:
            return "killed by signal %d" % -rc
    return "exited with status %d" % rc


class Worker:
    def __init__(self, endpoint="tcp://127.0.0.1:5571", node=None, threads=0, procs=None,
                 prefetch=1, functions=(), allow_pickle=False, builtins=True, time_limit=0.0,
                 heartbeat=1.0, liveness=3, secret_file=None, key=None, server_key=None,
                 preload=()):
        self.endpoints = P.parse_endpoints(endpoint)
        self.ep = 0
        self.endpoint = self.endpoints[0]  # the current one
        self.node = (node or os.uname().nodename)[:255]
        self.threads = threads
        self.procs = (os.cpu_count() or 1) if procs is None else procs
        if self.threads < 0 or self.procs < 0 or self.threads + self.procs == 0:
            raise P.ConfigError("a worker needs --threads or --procs above 0")
        self.prefetch = prefetch
        self.allow_pickle = allow_pickle
        self.time_limit_ms = int(time_limit * 1000)
        self.hb_ms = max(10, int(heartbeat * 1000 + 0.5))
        self.liveness = liveness
        self.preload = list(preload)
        for m in self.preload:
            __import__(m)
        _tasks.set_node(self.node)
        self.reg = _tasks.Registry(builtins=builtins, allow_pickle=allow_pickle)
        self.fn_specs = []
        for f in functions:
            name, eq, spec = f.partition("=")
            if not eq:
                name, spec = f, f
            self.reg.add(name, spec)  # import now: a bad name fails at start
            self.fn_specs.append("%s=%s" % (name, spec))
        secret = P.load_secret(secret_file, scrub_env=True)
        self.signer = P.Signer(secret, P.ROLE_BROKER_W, P.ROLE_WORKER) if secret else None
        self.curve = None
        if key or server_key:
            if not (key and server_key):
                raise P.ConfigError("CURVE needs both --key (our secret certificate) and "
                                    "--server-key (the broker's public certificate)")
            pub, sec = P.load_cert(key, True)
            spub, _ = P.load_cert(server_key, False)
            self.curve = (spub, pub, sec)
        if (allow_pickle and not P.all_loopback(self.endpoints)
                and not (self.curve or self.signer)):
            raise P.ConfigError(
                "--allow-pickle runs any code a client sends: refused for %s, which is not "
                "loopback, without CURVE keys (--key, --server-key) or a shared secret "
                "(--secret-file or ZEXEC_SECRET)" % ",".join(self.endpoints))
        self.wid = bytes([secrets.randbelow(255) + 1]) + secrets.token_bytes(15)
        self.pid = os.getpid()
        self.jobs = {}  # (session, seq) -> Job
        self.pq = collections.deque()  # process jobs waiting for a child
        self.tq = queue.SimpleQueue()  # thread jobs
        self.tevents = collections.deque()  # ("start"|"done", job) from pool threads
        self.tbusy = 0
        self.tlock = threading.Lock()
        self.credit = 0
        self.held = collections.deque()
        self.children = []
        self.drops = set()
        self.out_started = []
        self.start_pending = collections.deque()  # (start time, job) for WSTARTED
        self.out_results = []  # (item, payload)
        self.out_cancelled = []
        self.stops = 0
        self.draining = False
        self.forced = False
        self.said_drain = False
        self.connected = False
        self.sock = None
        self.passive_run = 0  # ERROR 3 answers in a row
        self.move_at = None  # a paced move to the next endpoint (ms), or None

    # ---- sockets --------------------------------------------------------------

    def _connect(self):
        s = self.ctx.socket(zmq.DEALER)
        P.setup_socket(s, self.curve)
        s.setsockopt(zmq.ROUTING_ID, self.wid)
        self.sock = s
        try:
            s.connect(self.endpoint)
        except zmq.ZMQError as e:
            if len(self.endpoints) == 1:
                raise
            # the liveness window moves on to the next endpoint
            log.error("worker: cannot connect to %s: %s", self.endpoint, e)
        self.connected = False
        self.last_recv = _now_ms()
        self._send_ready()

    def _reconnect(self, why):
        """A fresh DEALER, to the next endpoint of a list (the other broker
        of a pair is the active one, or will be), READY again."""
        if len(self.endpoints) > 1:
            self.ep = (self.ep + 1) % len(self.endpoints)
            self.endpoint = self.endpoints[self.ep]
        log.warning("worker: %s; reconnecting to %s", why, self.endpoint)
        self.move_at = None
        self._flush()
        self.sock.close(0)
        self._connect()

    def _send(self, frames):
        if self.signer:
            self.signer.sign(frames)
        try:
            self.sock.send_multipart(frames, copy=False)
        except zmq.ZMQError as e:
            log.warning("worker: send failed: %s", e)

    def _send_ready(self):
        pools = (P.POOLS_THREAD if self.threads else 0) | (P.POOLS_PROCESS if self.procs else 0)
        fns = [[n, pools] for n in self.reg.names()]
        running = [[j.session, j.seq, j.pool] for j in self.jobs.values()]
        hdr = [P.VERSION, self.wid, self.node, self.pid, self.threads, self.procs,
               self.prefetch, self.hb_ms, fns, running]
        self._send(P.encode(P.READY, hdr))

    def _drop(self, reason):
        if reason not in self.drops:
            self.drops.add(reason)
            log.warning("worker: dropped a message from the broker: %s; further drops of this "
                        "kind are not logged", reason)

    # ---- sending results --------------------------------------------------------

    def _emit_started(self, job):
        if self.connected and not job.started_sent:
            job.started_sent = True
            self.out_started.append([job.session, job.seq, self.pid, job.pool])

    def _finish(self, job, status, payload, slot_freed=True):
        """A job ended (or a thread job passed its limit: slot_freed False)."""
        job.status, job.payload, job.slot_freed = status, payload, slot_freed
        job.args = None
        if slot_freed:
            job.state = "done"
        if not self.connected:
            self.held.append(job)
            while len(self.held) > HELD_MAX:
                old = self.held.popleft()
                self.jobs.pop((old.session, old.seq), None)
                log.warning("worker: too many results held for an absent broker; dropped one "
                            "(the broker re-runs its task)")
            return
        if len(payload) > P.MAX_MSG - 4096:
            # the broker would close the connection on it (ZMQ_MAXMSGSIZE)
            status, payload = P.ST_RAISED, P.error_payload(
                "ResultTooLarge", "the result (%d bytes) is larger than the message limit "
                "(%d bytes)" % (len(payload), P.MAX_MSG - 4096))
        item = [job.session, job.seq, status, self.pid, job.pool, slot_freed]
        self.out_results.append((item, payload))
        if slot_freed or job.state != "timedout":
            self.jobs.pop((job.session, job.seq), None)

    def _flush(self):
        if not self.sock:
            return
        if self.out_started:
            self._send(P.encode(P.WSTARTED, self.out_started[:P.MAX_BATCH]))
            del self.out_started[:P.MAX_BATCH]
            if self.out_started:
                return self._flush()
        res, i = self.out_results, 0
        self.out_results = []
        while i < len(res):  # batches of at most 4096 items or about 16 MiB
            j, size = i, 0
            while j < len(res) and j - i < P.MAX_BATCH and size < (16 << 20):
                size += len(res[j][1])
                j += 1
            self._send(P.encode(P.WRESULT, [r[0] for r in res[i:j]], [r[1] for r in res[i:j]]))
            i = j
        for i in range(0, len(self.out_cancelled), P.MAX_BATCH):
            self._send(P.encode(P.WCANCELLED, self.out_cancelled[i:i + P.MAX_BATCH]))
        self.out_cancelled = []
        if self.credit and self.connected:
            self._send(P.encode(P.CREDIT, [P.POOL_THREAD, self.credit]))
        self.credit = 0

    # ---- pools --------------------------------------------------------------------

    def _child_argv(self):
        argv = ["--node", self.node]
        if self.allow_pickle:
            argv.append("--allow-pickle")
        if not self.reg.fns.keys() >= _tasks.BUILTINS.keys():
            argv.append("--no-builtins")
        for f in self.fn_specs:
            argv += ["--function", f]
        for m in self.preload:
            argv += ["--preload", m]
        return argv

    def _start_child(self):
        c = Child(self._child_argv())
        self.children.append(c)
        return c

    def _head_started(self, c, job, now):
        """job, first in c's pipe, starts now."""
        job.state = "running"
        c.head_start = now
        limit = job.limit_ms or self.time_limit_ms
        job.deadline = now + limit if limit else 0.0
        self._started(job, now)

    def _dispatch_process(self):
        """A task to each idle child. (Not a second one into the pipe of a
        busy child: tried, and it made short tasks faster, but a task
        queued behind one that turned out long waits there while another
        child may be idle, and it can no longer be cancelled.)"""
        now = _now_ms()
        for c in self.children:
            if not self.pq:
                return
            if not c.jobs:
                job = self.pq.popleft()
                job.child = c
                c.jobs.append(job)
                self._head_started(c, job, now)
                c.send(job)

    def _requeue_pipe(self, c):
        """The tasks behind the first in a dead child's pipe go back first in line."""
        rest = list(c.jobs)
        c.jobs.clear()
        for j in reversed(rest):
            j.state = "queued"
            j.child = None
            self.pq.appendleft(j)

    def _started(self, job, now):
        """WSTARTED leaves 1 ms after the start, and only if the task still
        runs: a shorter task is reported by its WRESULT alone."""
        if self.connected:
            self.start_pending.append((now, job))

    def _flush_started(self, now):
        sp = self.start_pending
        while sp and now - sp[0][0] >= 1.0:
            j = sp.popleft()[1]
            if j.state == "running":
                self._emit_started(j)

    def _thread_main(self):
        while True:
            job = self.tq.get()
            if job is None:
                return
            with self.tlock:
                if job.state != "queued":
                    continue  # cancelled while queued
                job.state = "running"
            self.tevents.append(("start", job))
            os.write(self.wake_w, b"s")  # its deadline and its WSTARTED start now
            try:
                st, payload = _tasks.run(self.reg, job.fn, job.flags, job.args)
            except BaseException as e:  # never lose a task
                st, payload = P.ST_RAISED, P.error_payload(type(e).__name__, str(e))
            self.tevents.append(("done", job, st, payload))
            os.write(self.wake_w, b"t")

    def _child_event(self, c):
        rec = c.read()
        if rec == b"":
            return
        if rec is None:
            rc = c.reap()
            self.children.remove(c)
            job = c.jobs.popleft() if c.jobs else None
            if job is not None and job.state == "running":
                job.child = None
                self._finish(job, P.ST_CRASHED, P.error_payload(
                    "ProcessCrashed", "the process running the task %s (node %s)"
                    % (_death(rc), self.node)))
            self._requeue_pipe(c)
            if not self.draining:
                self._start_child()
            return
        if not c.jobs:
            return
        now = _now_ms()
        job = c.jobs.popleft()
        job.child = None
        self._finish(job, rec[0], rec[1])
        if c.jobs:
            self._head_started(c, c.jobs[0], now)

    def _deadlines(self, now):
        for c in list(self.children):
            j = c.jobs[0] if c.jobs else None
            if j is not None and j.deadline and now >= j.deadline:
                c.jobs.popleft()
                j.child = None
                c.kill()
                self.children.remove(c)
                self._requeue_pipe(c)
                self._finish(j, P.ST_TIMELIMIT, P.error_payload(
                    "TimeLimitError", "the task ran past its time limit of %d ms (node %s)"
                    % (j.limit_ms or self.time_limit_ms, self.node)))
                if not self.draining:
                    self._start_child()
        for j in list(self.jobs.values()):
            if (j.pool == P.POOL_THREAD and j.state == "running" and j.deadline
                    and now >= j.deadline):
                j.state = "timedout"
                self._finish(j, P.ST_TIMELIMIT, P.error_payload(
                    "TimeLimitError", "the task ran past its time limit of %d ms (node %s); "
                    "its thread is still running" % (j.limit_ms or self.time_limit_ms,
                                                      self.node)), slot_freed=False)

    def _tevents(self):
        now = _now_ms()
        while self.tevents:
            ev = self.tevents.popleft()
            job = ev[1]
            if ev[0] == "start":
                limit = job.limit_ms or self.time_limit_ms
                job.deadline = now + limit if limit else 0.0
                self._started(job, now)
                continue
            self.tbusy -= 1
            if job.state == "timedout":
                # its TIMELIMIT went out at the deadline: only the slot is left
                self.jobs.pop((job.session, job.seq), None)
                self.credit += 1
                continue
            self._finish(job, ev[2], ev[3])

    # ---- the broker's commands ------------------------------------------------------

    def _on_task(self, it, payload):
        session, seq, fn, pool, timeout_ms = it[0], it[1], it[2], it[3], it[4]
        flags = it[6]
        if self.draining:
            return  # the broker re-queues what we never ran when it sees BYE
        if (session, seq) in self.jobs:
            return  # a duplicate
        job = Job(session, seq, fn, pool, flags, payload, timeout_ms)
        if fn not in self.reg.fns and not (fn == _tasks.PICKLE_FN and self.allow_pickle):
            job.pool = pool or P.POOL_THREAD
            self._finish(job, P.ST_NOFUNC, P.error_payload(
                "NoFunctionError", "no function %s on node %s" % (fn, self.node)))
            return
        if pool == P.POOL_ANY:
            pool = P.POOL_THREAD if self.threads else P.POOL_PROCESS
        if (pool == P.POOL_THREAD and not self.threads) or (pool == P.POOL_PROCESS
                                                            and not self.procs):
            job.pool = pool
            self._finish(job, P.ST_NOTALLOWED, P.error_payload(
                "NotAllowedError", "node %s has no %s pool" % (
                    self.node, "thread" if pool == P.POOL_THREAD else "process")))
            return
        job.pool = pool
        self.jobs[(session, seq)] = job
        if pool == P.POOL_THREAD:
            self.tbusy += 1
            self.tq.put(job)
        else:
            self.pq.append(job)

    def _on_cancel(self, it):
        session, seq, terminate = it[0], it[1], it[2]
        job = self.jobs.get((session, seq))
        outcome = P.CANCEL_REFUSED
        if job is not None and job not in self.held:
            with self.tlock:
                queued = job.state == "queued"
                if queued:
                    job.state = "cancelled"
            if queued:
                if job.pool == P.POOL_PROCESS:
                    self.pq.remove(job)
                else:
                    self.tbusy -= 1
                outcome = P.CANCEL_DONE
            elif (job.state == "running" and terminate and job.child is not None
                  and job.child.jobs and job.child.jobs[0] is job):
                c = job.child
                c.jobs.popleft()
                job.child = None
                c.kill()
                self.children.remove(c)
                self._requeue_pipe(c)
                if not self.draining:
                    self._start_child()
                outcome = P.CANCEL_TERMINATED
            if outcome != P.CANCEL_REFUSED:
                self.jobs.pop((session, seq), None)
        self.out_cancelled.append([session, seq, outcome])

    def _on_message(self, frames):
        if self.signer:
            why = self.signer.verify(frames)
            if why:
                return self._drop("signature check failed: " + why)
        try:
            m = P.decode(frames, P.ROLE_WORKER)
        except P.DecodeError as e:
            return self._drop(e.args[1])
        if m.cmd == P.ERROR and m.header[0] == P.ERR_PASSIVE and len(self.endpoints) > 1:
            # the passive broker of a pair: results stay held for the
            # active one. At once, unless a whole round of endpoints said
            # so (a pair starting, or taking over): then one heartbeat
            # apart, not bouncing between the two at network speed.
            self.connected = False
            if self.move_at is None:
                self.passive_run += 1
                now = _now_ms()
                self.move_at = now if self.passive_run < len(self.endpoints) else now + self.hb_ms
            return
        if m.cmd != P.RESET:  # a passive broker may answer RESET first
            self.passive_run = 0
        self.last_recv = _now_ms()
        if not self.connected:
            self.connected = True
            log.info("worker: broker %s answered", self.endpoint)
            held, self.held = self.held, collections.deque()
            for j in held:
                self._finish(j, j.status, j.payload, j.slot_freed)
            if self.draining:
                self._begin_drain()
        if m.cmd == P.TASK:
            for it, p in zip(m.header, m.payloads):
                self._on_task(it, p)
        elif m.cmd == P.WCANCEL:
            for it in m.header:
                self._on_cancel(it)
        elif m.cmd == P.RESET:
            log.info("worker: the broker does not know us; sending READY again")
            self._send_ready()
        elif m.cmd == P.ERROR:
            log.warning("worker: broker error %d: %s", m.header[0], m.header[1])
        elif m.cmd == P.SHUTDOWN:
            self._reconnect("the broker is shutting down")

    def _begin_drain(self):
        if not self.draining:
            self.draining = True
            for j in list(self.pq):
                self.jobs.pop((j.session, j.seq), None)
            self.pq.clear()
            for j in list(self.jobs.values()):
                with self.tlock:
                    queued = j.pool == P.POOL_THREAD and j.state == "queued"
                    if queued:
                        j.state = "cancelled"
                if queued:
                    self.tbusy -= 1
                    self.jobs.pop((j.session, j.seq), None)
            log.info("worker: draining: finishing %d running task(s), taking no new ones",
                     self._running())
        if not self.said_drain and self.connected:
            self._send(P.encode(P.DRAIN, []))
            self.said_drain = True

    def _running(self):
        return sum(len(c.jobs) for c in self.children) + max(self.tbusy, 0)

    def _on_signal(self, signum, frame):
        self.stops += 1
        try:
            os.write(self.wake_w, b"s")
        except OSError:
            pass

    # ---- the loop --------------------------------------------------------------------

    def run(self):
        self.ctx = zmq.Context()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        threads = [threading.Thread(target=self._thread_main, daemon=True, name="zexec-pool-%d" % i)
                   for i in range(self.threads)]
        for t in threads:
            t.start()
        for _ in range(self.procs):
            self._start_child()
        self._connect()
        log.info("worker: node %s (id %s, pid %d) serving %s with %d thread(s), %d process(es)",
                 self.node, self.wid.hex(), self.pid, self.endpoint, self.threads, self.procs)
        live_ms = self.hb_ms * self.liveness
        next_hb = _now_ms() + self.hb_ms
        try:
            while True:
                poller = zmq.Poller()
                poller.register(self.sock, zmq.POLLIN)
                poller.register(self.wake_r, zmq.POLLIN)
                byfd = {}
                for c in self.children:
                    poller.register(c.fd_from, zmq.POLLIN)
                    byfd[c.fd_from] = c
                now = _now_ms()
                wake = min(next_hb, self.last_recv + live_ms)
                if self.move_at is not None:
                    wake = min(wake, self.move_at)
                for j in self.jobs.values():
                    if j.state == "running" and j.deadline:
                        wake = min(wake, j.deadline)
                if self.start_pending:
                    wake = min(wake, self.start_pending[0][0] + 1.0)
                timeout = max(0, wake - now)
                if self.tevents:
                    timeout = 0
                # whole milliseconds, rounded up: pyzmq truncates, and a
                # timeout under 1 ms would poll without sleeping
                ready = dict(poller.poll(math.ceil(timeout)))
                if self.wake_r in ready:
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                if self.stops:
                    self._begin_drain()
                    if self.stops > 1 and not self.forced:
                        self.forced = True
                        log.warning("worker: stopping again: leaving without waiting for %d "
                                    "task(s)", self._running())
                for fd, c in byfd.items():
                    if fd in ready and c in self.children:
                        self._child_event(c)
                self._tevents()
                if self.sock in ready:
                    for _ in range(256):
                        try:
                            frames = self.sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._on_message(frames)
                        if self.move_at is not None:
                            break  # the passive one's: the rest goes with its socket
                self._dispatch_process()
                now = _now_ms()
                self._deadlines(now)
                if self.move_at is not None and now >= self.move_at:
                    self._reconnect("the broker %s is passive" % self.endpoint)
                elif now - self.last_recv > live_ms:
                    self._reconnect("the broker is silent")
                if now >= next_hb:
                    self._send(P.encode(P.HEARTBEAT, []))
                    next_hb = now + self.hb_ms
                self._flush_started(now)
                self._flush()
                if self.draining and (self.forced or self._running() == 0):
                    break
            self._flush()
            if self.connected:
                self._send(P.encode(P.BYE, []))
            log.info("worker: node %s leaves", self.node)
        finally:
            for _ in threads:
                self.tq.put(None)
            for c in self.children:
                c.kill()
            if self.sock is not None:
                self.sock.close(2000)
            self.ctx.term()
            for s, h in old.items():
                signal.signal(s, h)
        return 0


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="zexec-pyworker",
        description="A zexec worker node in Python: offers named Python functions "
        "(module:function), the built-ins echo, sleep, fail, pid, and with --allow-pickle "
        "the function that runs pickled callables (zexec.Executor.submit).")
    ap.add_argument("--broker", default=os.environ.get("ZEXEC_WORKER_BROKER",
                                                       "tcp://127.0.0.1:5571"),
                    help="broker worker endpoint (default tcp://127.0.0.1:5571)")
    ap.add_argument("--node", help="node name (default: the host name)")
    ap.add_argument("--threads", type=int, default=0, help="thread-pool size (default 0)")
    ap.add_argument("--procs", type=int, default=None,
                    help="process-pool size (default: cores)")
    ap.add_argument("--prefetch", type=int, default=1,
                    help="tasks queued beyond free slots, per pool (default 1)")
    ap.add_argument("--function", "-f", action="append", default=[], metavar="[NAME=]MOD:FN",
                    help="offer a Python function, under NAME or MOD:FN; repeatable")
    ap.add_argument("--preload", action="append", default=[], metavar="MODULE",
                    help="import MODULE in the worker and in every child; repeatable")
    ap.add_argument("--allow-pickle", action="store_true",
                    help="offer %s: run pickled callables (any code a client sends)"
                    % _tasks.PICKLE_FN)
    ap.add_argument("--no-builtins", action="store_true",
                    help="do not offer echo, sleep, fail, pid")
    ap.add_argument("--time-limit", type=float, default=0.0,
                    help="default per-task time limit in seconds (0: none)")
    ap.add_argument("--heartbeat", type=float, default=1.0, help="seconds (default 1)")
    ap.add_argument("--liveness", type=int, default=3,
                    help="missed heartbeats before the broker is lost (default 3)")
    ap.add_argument("--server-key", help="CURVE: the broker's public certificate")
    ap.add_argument("--key", help="CURVE: this worker's secret certificate")
    ap.add_argument("--secret-file", help="sign every message with this shared secret "
                    "(default: $ZEXEC_SECRET)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if a.quiet else
                        logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        w = Worker(a.broker, node=a.node, threads=a.threads, procs=a.procs, prefetch=a.prefetch,
                   functions=a.function, allow_pickle=a.allow_pickle,
                   builtins=not a.no_builtins, time_limit=a.time_limit, heartbeat=a.heartbeat,
                   liveness=a.liveness, secret_file=a.secret_file, key=a.key,
                   server_key=a.server_key, preload=a.preload)
    except (P.ConfigError, ValueError, ImportError, AttributeError, OSError) as e:
        print("zexec-pyworker: %s" % e, file=sys.stderr)
        return 2
    return w.run()


if __name__ == "__main__":
    sys.exit(main())
