"""zexec.Executor: a concurrent.futures.Executor whose tasks run on a zexec
cluster (docs/python.md), speaking ZXP to a zexec-broker.

Futures are plain concurrent.futures.Future objects, created before
anything is sent, so as_completed, wait, callbacks and futures of other
executors mix freely. One I/O thread per executor owns the DEALER socket:
submitting threads append to an outbox and wake it (an eventfd, only when
the outbox goes from empty to non-empty); at each turn it sends the whole
outbox as SUBMIT batches, reads what the broker sent, and completes
futures. Done-callbacks of zexec futures therefore run on that thread
(as a ProcessPoolExecutor's run on its manager thread): they must not block.

Cancelling: Future.cancel() succeeds while the future is PENDING, that is
until the broker's STARTED arrives. A task not yet sent is dropped; a sent
one is withdrawn with CANCEL; if it started meanwhile it runs to its end on
the worker and its result is discarded.

Broker loss: after liveness x heartbeat of silence the executor says HELLO
every interval; futures stay pending, and every unresolved task is re-sent
after the next WELCOME (the broker drops the ones it holds). A task fails
with BrokerUnreachableError once no broker has been heard for
broker_timeout during its life.

A pair of brokers (docs/operations.md, "Running a pair"): the endpoint may
be a list, "tcp://a:5570,tcp://b:5570". The executor talks to one endpoint
at a time, as the C client does, and moves to the next (wrapping) when the
current one answers ERROR 3 (passive) or has been silent for the liveness
window; the session stays, so the other broker, which holds a copy of the
journal, knows it, and the unresolved tasks are re-sent after its WELCOME.
"""

import builtins
import collections
import itertools
import logging
import math
import os
import pickle
import secrets
import threading
import time
import weakref
from concurrent.futures import _base
from concurrent.futures import CancelledError, Future
from concurrent.futures.process import _RemoteTraceback

import msgpack
import zmq

from . import _proto as P
from . import _tasks
from . import errors as E

log = logging.getLogger("zexec")
_LOGGER = logging.getLogger("concurrent.futures")

_POOLS = {"any": P.POOL_ANY, "thread": P.POOL_THREAD, "process": P.POOL_PROCESS,
          P.POOL_ANY: P.POOL_ANY, P.POOL_THREAD: P.POOL_THREAD, P.POOL_PROCESS: P.POOL_PROCESS}

_pack = msgpack.Packer(use_bin_type=True).pack

_live = weakref.WeakSet()
_global_shutdown = False
_global_lock = threading.Lock()


def _python_exit():
    """At interpreter exit, as concurrent.futures does: no new tasks; every
    executor finishes what it has (its I/O thread is not a daemon)."""
    global _global_shutdown
    with _global_lock:
        _global_shutdown = True
    for ex in list(_live):
        ex.shutdown(wait=False)


threading._register_atexit(_python_exit)

K_MSGPACK, K_PICKLE = 0, 1


class _Task:
    __slots__ = ("seq", "fn", "pool", "flags", "payload", "future", "kind", "chunk",
                 "t_submit", "abandoned", "sent")

    def __init__(self, seq, fn, pool, flags, payload, future, kind, chunk):
        self.seq = seq
        self.fn = fn
        self.pool = pool
        self.flags = flags
        self.payload = payload
        self.future = future
        self.kind = kind
        self.chunk = chunk
        self.t_submit = time.monotonic()
        self.abandoned = False
        self.sent = False


def _remote_tb(exc, tb):
    if tb:
        try:
            exc.__cause__ = _RemoteTraceback('\n"""\n%s"""' % tb)
        except (AttributeError, TypeError):
            pass
    return exc


def _exception(status, err, node):
    """The exception for an error payload already decoded (a list)."""
    if type(err) is not list or not 2 <= len(err) or not all(type(x) is str for x in err[:2]):
        return E.ProtocolError("malformed error payload for status %d (node %s)" % (status, node))
    name, message = err[0], err[1]
    tb = err[2] if len(err) > 2 and type(err[2]) is str else ""
    if len(err) > 3 and type(err[3]) is bytes:
        try:
            exc = pickle.loads(err[3])
            if isinstance(exc, BaseException):
                return _remote_tb(exc, tb)
        except BaseException:
            pass  # by name below
    exc = None
    if status == P.ST_RAISED:
        cls = getattr(builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            try:
                exc = cls(message)
            except Exception:
                exc = None
        if exc is None:
            exc = E.RemoteError(name, message)
    elif status == P.ST_MEMORY:
        exc = MemoryError(message)
    else:
        cls = E._BY_NAME.get(name) or {
            P.ST_NOFUNC: E.NoFunctionError, P.ST_TIMELIMIT: E.TimeLimitError,
            P.ST_CRASHED: E.ProcessCrashed, P.ST_WORKERLOST: E.WorkerLostError,
            P.ST_REJECTED: E.QuotaError, P.ST_NOTALLOWED: E.NotAllowedError,
        }.get(status, E.ZexecError)
        exc = cls(message)
    return _remote_tb(exc, tb)


def _value(kind, v):
    """A successful value as decoded msgpack -> the Python value."""
    if kind == K_PICKLE:
        if type(v) is not bytes:
            raise E.ProtocolError("a pickled result is not a bin")
        try:
            return pickle.loads(v)
        except BaseException as e:
            raise E.ResultUnpicklingError("the result could not be unpickled here: %s: %s"
                                          % (type(e).__name__, e)) from e
    return v


class _ChunkResult:
    """A chunk task's value: (ok, value-or-exception) per input."""

    __slots__ = ("items",)

    def __init__(self, items):
        self.items = items


def _set(f, value=None, exc=None):
    try:
        if exc is not None:
            f.set_exception(exc)
        else:
            f.set_result(value)
    except _base.InvalidStateError:
        pass  # cancelled meanwhile


def _chunks(iterable, n):
    it = iter(iterable)
    while True:
        c = list(itertools.islice(it, n))
        if not c:
            return
        yield c


class Executor(_base.Executor):
    """Runs tasks on a zexec cluster through the broker at endpoint (the
    client endpoint, default $ZEXEC_BROKER or tcp://127.0.0.1:5570; a list
    "tcp://a:5570,tcp://b:5570" for a pair of brokers: self.endpoints; the
    one in use is self.endpoint).

    max_workers: most tasks this executor has at the broker at once
    (None: no bound); the rest wait here, where cancel() and
    shutdown(cancel_futures=True) drop them exactly. pool: "any",
    "thread" or "process". priority -128..127, retries (0: the broker's
    default, -1: none, up to 100) and time_limit (seconds, 0: the worker's
    default) apply to every task. initializer(*initargs) runs once in each
    worker process before its first task of this executor; if it raises,
    the executor is broken. CURVE: key (our secret certificate) and
    server_key (the broker's public one); signing: secret_file or
    $ZEXEC_SECRET."""

    def __init__(self, endpoint=None, max_workers=None, *, name=None, pool="any", priority=0,
                 retries=0, time_limit=0.0, initializer=None, initargs=(), heartbeat=1.0,
                 liveness=3, broker_timeout=60.0, secret_file=None, key=None, server_key=None):
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if pool not in _POOLS:
            raise ValueError("pool must be 'any', 'thread' or 'process'")
        if not -128 <= priority <= 127:
            raise ValueError("priority must be -128..127")
        if not -1 <= retries <= 100:
            raise ValueError("retries must be -1..100")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        # a ValueError here, before the I/O thread exists, names what is wrong
        self.endpoints = tuple(P.parse_endpoints(
            endpoint or os.environ.get("ZEXEC_BROKER", "tcp://127.0.0.1:5570")))
        self._ep = 0
        self.endpoint = self.endpoints[0]  # the current one (the I/O thread moves it)
        self._max_workers = max_workers
        self._pool = _POOLS[pool]
        self._priority = priority
        self._retries = retries
        self._timeout_ms = int(time_limit * 1000)
        self._hb_ms = max(10, int(heartbeat * 1000 + 0.5))
        self._liveness = liveness if liveness > 0 else 3
        self._broker_timeout = broker_timeout
        self._name = (name or "python:%d" % os.getpid())[:255]
        secret = P.load_secret(secret_file, scrub_env=False)
        self._signer = P.Signer(secret, P.ROLE_BROKER_C, P.ROLE_CLIENT) if secret else None
        self._curve = None
        if key or server_key:
            if not (key and server_key):
                raise P.ConfigError("CURVE needs both key (our secret certificate) and "
                                    "server_key (the broker's public certificate)")
            pub, sec = P.load_cert(key, True)
            spub, _ = P.load_cert(server_key, False)
            self._curve = (spub, pub, sec)
        self._pickle_ok = (P.all_loopback(self.endpoints) or self._curve is not None
                           or self._signer is not None)
        self._init_blob = None
        self._session = bytes([secrets.randbelow(255) + 1]) + secrets.token_bytes(15)
        if initializer is not None:
            # the session makes it this executor's: it runs once per worker
            # process for each executor, as with ProcessPoolExecutor
            self._init_blob = _tasks.dumps((initializer, tuple(initargs), self._session))
        self._lock = threading.Lock()
        self._outbox = collections.deque()  # admitted (in the window), not sent yet
        self._waiting = collections.deque()  # beyond the window of max_workers
        self._unsent = {}  # seq -> _Task of both
        self._cancels = []
        self._pending = {}  # seq -> _Task, sent and unresolved (or abandoned)
        self._inflight = 0  # admitted, unresolved, not abandoned
        self._unresolved = 0  # futures not done by us, abandoned ones excluded
        self._next_seq = 1
        self._shutdown = False
        self._broken = False
        self._connected = False
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._executor_manager_thread = threading.Thread(
            target=self._io_main, name="zexec-io-%s" % self._session.hex()[:8], daemon=False)
        self._executor_manager_thread.start()
        _live.add(self)

    # ---- submitting ---------------------------------------------------------------

    def _check(self):
        if self._broken:
            raise E.BrokenZexecExecutor(self._broken)
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _global_shutdown:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def _enqueue(self, fn, payload, flags, kind, chunk=False):
        if len(payload) > P.MAX_MSG - 4096:
            raise ValueError("the task's arguments (%d bytes) are larger than the message "
                             "limit (%d bytes)" % (len(payload), P.MAX_MSG - 4096))
        if not 1 <= len(fn.encode("utf-8", "surrogateescape")) <= P.MAX_NAME:
            raise ValueError("a function name is 1..255 bytes")
        f = Future()
        with self._lock:
            self._check()
            seq = self._next_seq
            self._next_seq += 1
            t = _Task(seq, fn, self._pool, flags, payload, f, kind, chunk)
            f._zexec_seq = seq
            wake = False
            if self._max_workers is None or self._inflight < self._max_workers:
                wake = not self._outbox
                t.sent = True  # admitted: handed to the cluster
                self._inflight += 1
                self._outbox.append(t)
            else:
                self._waiting.append(t)
            self._unsent[seq] = t
            self._unresolved += 1
        f.add_done_callback(self._on_future_done)
        if wake:
            self._kick()
        return f

    def _kick(self):
        with self._lock:
            if self._wake >= 0:
                os.eventfd_write(self._wake, 1)

    def _pickled(self):
        if not self._pickle_ok:
            raise E.ZexecError(
                "submitting Python callables sends pickles, which the worker runs as code: "
                "refused for %s, which is not loopback, without CURVE keys or a shared secret "
                "(use submit_named, or key/server_key or secret_file)"
                % ",".join(self.endpoints))

    def submit(self, fn, /, *args, **kwargs):
        """Runs fn(*args, **kwargs) on a Python worker started with
        --allow-pickle (fn and the arguments are pickled with cloudpickle)."""
        self._pickled()
        with self._lock:
            self._check()
        try:
            body = _pack([_tasks.dumps(fn), _tasks.dumps_args(args, kwargs), self._init_blob])
        except Exception as e:
            # as ProcessPoolExecutor: a pickling error is the future's
            f = Future()
            f.set_exception(e)
            return f
        return self._enqueue(_tasks.PICKLE_FN, body, 0, K_PICKLE)

    submit.__doc__ = _base.Executor.submit.__doc__

    def submit_named(self, fn, /, *args):
        """Calls the function a worker offers under the name fn (a C
        worker's echo, a plugin's function, a Python worker's
        module:function) with msgpack arguments; the result is the msgpack
        value (str, bytes, int, float, bool, None, list, dict)."""
        return self._enqueue(fn, _pack(list(args)), 0, K_MSGPACK)

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """As Executor.map; with chunksize > 1 each task carries that many
        calls (ZXP chunked tasks: one result per input, in order)."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        self._pickled()
        fn_blob = _tasks.dumps(fn)
        init = self._init_blob

        def payload(chunk):
            return _pack([[fn_blob, _tasks.dumps_args(a, {}), init] for a in chunk])

        return self._map(payload, _tasks.PICKLE_FN, K_PICKLE, iterables, timeout, chunksize)

    def map_named(self, fn, *iterables, timeout=None, chunksize=1):
        """map for a named function (msgpack arguments and results)."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")

        def payload(chunk):
            return _pack([list(a) for a in chunk])

        return self._map(payload, fn, K_MSGPACK, iterables, timeout, chunksize)

    def _map(self, payload, fn, kind, iterables, timeout, chunksize):
        end_time = None if timeout is None else timeout + time.monotonic()
        if chunksize == 1 and kind == K_MSGPACK:
            fs = [self._enqueue(fn, _pack(list(a)), 0, kind) for a in zip(*iterables)]
            chunked = False
        else:
            fs = [self._enqueue(fn, payload(c), P.F_CHUNK, kind, chunk=True)
                  for c in _chunks(zip(*iterables), chunksize)]
            chunked = True

        def result_iterator():
            try:
                fs.reverse()
                while fs:
                    f = fs[-1]
                    try:
                        if end_time is None:
                            r = f.result()
                        else:
                            r = f.result(end_time - time.monotonic())
                    finally:
                        fs.pop()
                    if not chunked:
                        yield r
                        continue
                    items = r.items
                    r = None
                    items.reverse()
                    while items:
                        ok, v = items.pop()
                        if not ok:
                            raise v
                        yield v
            finally:
                for f in fs:
                    f.cancel()

        return result_iterator()

    def shutdown(self, wait=True, *, cancel_futures=False):
        with self._lock:
            self._shutdown = True
            # as ProcessPoolExecutor: the tasks not handed on yet (not sent)
            cancel = ([t.future for t in self._waiting if not t.abandoned] if cancel_futures
                      else [])
        for f in cancel:
            f.cancel()
        self._kick()
        if wait:
            self._executor_manager_thread.join()

    shutdown.__doc__ = _base.Executor.shutdown.__doc__

    # ---- futures done here or by the user --------------------------------------------

    def _on_future_done(self, f):
        if not f.cancelled():
            return
        seq = f._zexec_seq
        wake = False
        with self._lock:
            t = self._pending.get(seq)
            if t is not None:
                if not t.abandoned:
                    t.abandoned = True
                    self._inflight -= 1
                    self._unresolved -= 1
                    self._cancels.append(seq)
                    wake = True
            else:
                t = self._unsent.pop(seq, None)
                if t is not None:  # dropped where it waits (skipped there)
                    t.abandoned = True
                    self._unresolved -= 1
                    if t.sent:
                        self._inflight -= 1
            self._admit()
        if wake:
            self._kick()

    def _resolve(self, t, value=None, exc=None):
        """Completes a task's future (I/O thread, no lock held)."""
        with self._lock:
            self._unresolved -= 1
            if t.sent:
                self._inflight -= 1
                self._admit()
        _set(t.future, value, exc)

    def _admit(self):
        """Moves waiting tasks into the window (lock held)."""
        if self._waiting and self._max_workers is not None:
            wake = not self._outbox
            while self._waiting and self._inflight < self._max_workers:
                t = self._waiting.popleft()
                if t.abandoned:
                    continue
                t.sent = True
                self._inflight += 1
                self._outbox.append(t)
            if wake and self._outbox and self._wake >= 0:
                os.eventfd_write(self._wake, 1)

    # ---- the I/O thread ---------------------------------------------------------------

    def _send(self, frames):
        if self._signer:
            self._signer.sign(frames)
        self._sock.send_multipart(frames, copy=False)

    def _hello(self):
        self._send(P.encode(P.HELLO, [P.VERSION, self._session, self._name, self._hb_ms]))

    def _send_tasks(self, tasks):
        for i in range(0, len(tasks), P.MAX_BATCH):
            part = tasks[i:i + P.MAX_BATCH]
            hdr = [[t.seq, t.fn, t.pool, self._priority, self._retries, self._timeout_ms,
                    t.flags] for t in part]
            self._send(P.encode(P.SUBMIT, hdr, [t.payload for t in part]))

    def _drain(self):
        """Sends what the outbox holds (within the window) and the cancels."""
        with self._lock:
            cancels, self._cancels = self._cancels, []
            # sent also before WELCOME: the broker reads our HELLO first on
            # the same connection; anything it dropped (signing's first
            # round trip, a broker restart) is re-sent after WELCOME
            batch = [t for t in self._outbox if not t.abandoned]
            self._outbox.clear()
            for t in batch:
                del self._unsent[t.seq]
                self._pending[t.seq] = t
        for i in range(0, len(cancels), P.MAX_BATCH):
            self._send(P.encode(P.CANCEL, [[s, False] for s in cancels[i:i + P.MAX_BATCH]]))
        if batch:
            self._send_tasks(batch)

    def _open(self):
        """A DEALER with our session as routing id, connected to the current
        endpoint, replacing the one we had (a fresh socket drops whatever
        still waited for the old endpoint, and nothing the old broker still
        sends can reach us)."""
        if self._sock is not None:
            self._poller.unregister(self._sock)
            self._sock.close(0)
        self._sock = s = self._ctx.socket(zmq.DEALER)
        P.setup_socket(s, self._curve)
        s.setsockopt(zmq.ROUTING_ID, self._session)
        self._poller.register(s, zmq.POLLIN)
        try:
            s.connect(self.endpoint)
        except zmq.ZMQError as e:
            if len(self.endpoints) == 1:
                raise
            # the next silence window moves on to the next endpoint
            log.error("zexec: cannot connect to %s: %s", self.endpoint, e)

    def _next_broker(self, why, now):
        """A pair: moves to the next endpoint of the list (wrapping), keeping
        the session; the tasks are re-sent after its WELCOME. False with a
        single endpoint."""
        if len(self.endpoints) < 2:
            return False
        old = self.endpoint
        self._ep = (self._ep + 1) % len(self.endpoints)
        self.endpoint = self.endpoints[self._ep]
        log.warning("zexec: broker %s %s; trying %s", old, why, self.endpoint)
        self._open()
        self._ep_since = now
        self._need_resend = True
        return True

    def _lost(self, why):
        if self._connected:
            log.warning("zexec: broker %s %s; futures stay pending, reconnecting",
                        self.endpoint, why)
            self._connected = False
        self._need_resend = True

    def _on_welcome(self, m):
        bid, hb = m.header[0], m.header[1]
        changed = self._broker_id is not None and bid != self._broker_id
        self._broker_id = bid
        self._broker_hb = hb if 0 < hb < 3600000 else self._hb_ms
        self._connected = True
        if changed or self._need_resend:
            self._need_resend = False
            with self._lock:
                live = [t for t in self._pending.values() if not t.abandoned]
                dead = [t.seq for t in self._pending.values() if t.abandoned]
                for s in dead:
                    del self._pending[s]
            if dead:
                self._send(P.encode(P.CANCEL, [[s, False] for s in dead]))
            live.sort(key=lambda t: t.seq)
            if live:
                self._send_tasks(live)

    def _on_result(self, m, node_of):
        for it, payload in zip(m.header, m.payloads):
            seq, status, node = it[0], it[1], it[2]
            with self._lock:
                t = self._pending.pop(seq, None)
            if t is None:
                continue  # a duplicate, or a task failed here
            if t.abandoned:
                continue
            try:
                v = _tasks.unpack(payload)
            except Exception:
                v = _tasks  # a marker: not msgpack
            if status == P.ST_CANCELLED:
                self._resolve(t, exc=CancelledError("terminated while running"))
                continue
            if v is _tasks:
                self._resolve(t, exc=E.ProtocolError(
                    "the %s payload of task %d (node %s) is not msgpack"
                    % ("result" if status == P.ST_OK else "error", seq, node)))
                continue
            if status != P.ST_OK:
                if (type(v) is list and len(v) > 3 and v[0] == "InitializerError"
                        and t.kind == K_PICKLE):
                    self._initializer_failed(t, _exception(P.ST_RAISED, v, node))
                    continue
                self._resolve(t, exc=_exception(status, v, node))
                continue
            if t.chunk:
                if type(v) is not list:
                    self._resolve(t, exc=E.ProtocolError("a chunk result is not an array"))
                    continue
                items = []
                for pair in v:
                    if type(pair) is not list or len(pair) < 2 or type(pair[0]) is not bool:
                        items.append((False, E.ProtocolError("a chunk result pair is malformed")))
                    elif pair[0]:
                        try:
                            items.append((True, _value(t.kind, pair[1])))
                        except BaseException as e:
                            items.append((False, e))
                    else:
                        items.append((False, _exception(P.ST_RAISED, pair[1], node)))
                self._resolve(t, _ChunkResult(items))
                continue
            try:
                value = _value(t.kind, v)
            except BaseException as e:
                self._resolve(t, exc=e)
                continue
            self._resolve(t, value)

    def _initializer_failed(self, t, exc):
        _LOGGER.critical("Exception in initializer:", exc_info=exc)
        msg = ("A worker's initializer failed; the executor is broken and can no longer "
               "be used")
        with self._lock:
            self._broken = msg
            tasks = (list(self._unsent.values())
                     + [x for x in self._pending.values() if not x.abandoned])
            self._outbox.clear()
            self._waiting.clear()
            self._unsent.clear()
            for x in tasks:
                x.abandoned = True
        for x in [t] + tasks:
            b = E.BrokenZexecExecutor(msg)
            b.__cause__ = exc
            self._resolve(x, exc=b)

    def _on_started(self, m):
        for it in m.header:
            with self._lock:
                t = self._pending.get(it[0])
            if t is not None and not t.abandoned:
                f = t.future
                if not f.running() and not f.done():
                    f.set_running_or_notify_cancel()

    def _on_cancelled(self, m):
        for seq, outcome in ((it[0], it[1]) for it in m.header):
            if outcome == P.CANCEL_REFUSED:
                continue  # its RESULT follows (or came)
            with self._lock:
                t = self._pending.pop(seq, None)
            if t is not None and not t.abandoned:
                self._resolve(t, exc=CancelledError(
                    "terminated while running" if outcome == P.CANCEL_TERMINATED else ""))

    def _on_message(self, frames):
        if self._signer:
            why = self._signer.verify(frames)
            if why:
                self._dropped(why)
                return
        try:
            m = P.decode(frames, P.ROLE_CLIENT)
        except P.DecodeError as e:
            self._dropped(e.args[1])
            return
        self._last_rx = time.monotonic()
        cmd = m.cmd
        if cmd == P.RESULT:
            self._on_result(m, None)
        elif cmd == P.STARTED:
            self._on_started(m)
        elif cmd == P.CANCELLED:
            self._on_cancelled(m)
        elif cmd == P.WELCOME:
            self._on_welcome(m)
        elif cmd == P.RESET:
            if self._connected:
                self._lost("does not know this session (RESET)")
                self._hello()
            elif self._signer:
                self._hello()  # answered a HELLO signed for no broker session yet
            self._need_resend = True
        elif cmd == P.SHUTDOWN:
            self._lost("is shutting down")
        elif cmd == P.ERROR:
            if m.header[0] == P.ERR_PASSIVE and len(self.endpoints) > 1:
                self._lost("is passive")
                self._next_broker("is passive", self._last_rx)
                # a whole round of passive answers (a pair starting, or
                # taking over): the next HELLO waits for the tick, so the
                # executor does not bounce between the two at network speed
                self._passive_run += 1
                if self._passive_run < len(self.endpoints):
                    self._hello()
                return
            log.warning("zexec: broker %s says error %d: %s", self.endpoint, m.header[0],
                        m.header[1])
        if cmd not in (P.ERROR, P.RESET):  # a passive broker may answer RESET first
            self._passive_run = 0

    def _dropped(self, why):
        if why not in self._drops:
            self._drops.add(why)
            log.warning("zexec: dropped a message from the broker: %s; further drops of this "
                        "kind are not logged", why)

    def _expire(self, now):
        since = self._last_rx
        with self._lock:
            old = [t for t in self._pending.values()
                   if not t.abandoned and now - max(t.t_submit, since) >= self._broker_timeout]
            for t in old:
                del self._pending[t.seq]
            out = [t for t in self._unsent.values()
                   if now - max(t.t_submit, since) >= self._broker_timeout]
            for t in out:
                del self._unsent[t.seq]
                t.abandoned = True  # skipped where it waits
                t.sent, was = False, t.sent
                if was:
                    self._inflight -= 1
        if len(self.endpoints) > 1:
            why = "no broker of %s has answered for %.1f s" % (",".join(self.endpoints),
                                                                now - since)
        else:
            why = "the broker %s has been unreachable for %.1f s" % (self.endpoint, now - since)
        for t in old + out:
            self._resolve(t, exc=E.BrokerUnreachableError(why))

    def _done(self):
        with self._lock:
            return self._shutdown and self._unresolved == 0 and not self._unsent

    def _io_main(self):
        self._ctx = ctx = zmq.Context()
        self._sock = None
        self._poller = poller = zmq.Poller()
        poller.register(self._wake, zmq.POLLIN)
        self._broker_id = None
        self._broker_hb = self._hb_ms
        self._need_resend = False
        self._drops = set()
        self._last_rx = time.monotonic()  # the last message from any broker
        self._ep_since = self._last_rx  # when the current endpoint became current
        self._passive_run = 0  # ERROR 3 moves in a row
        try:
            self._open()
        except BaseException:
            log.exception("zexec: the I/O thread of the executor for %s failed", self.endpoint)
            if self._sock is not None:
                self._sock.close(0)
            ctx.term()
            self._fail_all()
            raise
        self._hello()
        next_tick = time.monotonic() + self._hb_ms / 1000.0
        try:
            while True:
                self._drain()
                if self._done():
                    break
                timeout = max(0.0, next_tick - time.monotonic())
                # whole milliseconds, rounded up: pyzmq truncates, and a
                # timeout under 1 ms would poll without sleeping
                ready = dict(poller.poll(math.ceil(timeout * 1000.0)))
                if self._wake in ready:
                    try:
                        os.eventfd_read(self._wake)
                    except BlockingIOError:
                        pass
                s = self._sock
                if s in ready:
                    for _ in range(256):
                        try:
                            frames = s.recv_multipart(zmq.NOBLOCK, copy=True)
                        except zmq.Again:
                            break
                        self._on_message(frames)
                        if self._sock is not s:
                            break  # moved to the next endpoint: the rest was the old one's
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + self._hb_ms / 1000.0
                    if self._connected:
                        if (now - self._last_rx) * 1000.0 > self._liveness * self._broker_hb:
                            self._lost("is silent")
                        else:
                            self._send(P.encode(P.HEARTBEAT, []))
                            continue
                    # a pair: the current endpoint has been silent for the
                    # liveness window (since it became current): the next
                    heard = max(self._last_rx, self._ep_since)
                    if (now - heard) * 1000.0 > self._liveness * self._broker_hb:
                        self._next_broker("is silent", now)
                    self._hello()
                    if now - self._last_rx >= self._broker_timeout:
                        self._expire(now)
            self._drain()
            if self._connected:
                with self._lock:
                    dead = [seq for seq, t in self._pending.items() if t.abandoned]
                if dead:
                    self._send(P.encode(P.CANCEL, [[q, False] for q in dead]))
                self._send(P.encode(P.BYE, []))
        except BaseException:
            log.exception("zexec: the I/O thread of the executor for %s failed", self.endpoint)
            raise
        finally:
            self._sock.close(1000 if self._connected else 0)
            ctx.term()
            self._fail_all()

    def _fail_all(self):
        """At the I/O thread's end: nothing may wait on it any more."""
        with self._lock:
            os.close(self._wake)
            self._wake = -1
            left = list(self._unsent.values()) + [
                t for t in self._pending.values() if not t.abandoned]
            self._outbox.clear()
            self._waiting.clear()
            self._unsent.clear()
            self._pending.clear()
        for t in left:
            _set(t.future, exc=RuntimeError("the executor's I/O thread ended"))


class _Passive(Exception):
    """status(): the broker answered ERROR 3 (the passive one of a pair)."""


def _status_one(ctx, endpoint, timeout, secret, curve):
    """One broker's STATUS-REPLY map; raises _Passive, or
    BrokerUnreachableError after timeout seconds."""
    signer = P.Signer(secret, P.ROLE_BROKER_C, P.ROLE_CLIENT) if secret else None
    session = bytes([secrets.randbelow(255) + 1]) + secrets.token_bytes(15)
    s = ctx.socket(zmq.DEALER)
    try:
        P.setup_socket(s, curve)
        s.setsockopt(zmq.ROUTING_ID, session)
        s.connect(endpoint)

        def send(cmd, hdr):
            frames = P.encode(cmd, hdr)
            if signer:
                signer.sign(frames)
            s.send_multipart(frames)

        send(P.HELLO, [P.VERSION, session, "zexec.status", 1000])
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or not s.poll(left * 1000):
                raise E.BrokerUnreachableError("no answer from the broker at %s within %.1f s"
                                               % (endpoint, timeout))
            frames = s.recv_multipart()
            if signer and signer.verify(frames):
                continue
            try:
                m = P.decode(frames, P.ROLE_CLIENT)
            except P.DecodeError:
                continue
            if m.cmd == P.RESET:
                send(P.HELLO, [P.VERSION, session, "zexec.status", 1000])
            elif m.cmd == P.WELCOME:
                send(P.STATUS, [])
            elif m.cmd == P.STATUS_REPLY:
                send(P.BYE, [])
                return m.header[0]
            elif m.cmd == P.ERROR and m.header[0] == P.ERR_PASSIVE:
                raise _Passive("the broker at %s refused: %s" % (endpoint, m.header[1]))
    finally:
        s.close(200)


def status(endpoint=None, timeout=3.0, *, secret_file=None, key=None, server_key=None):
    """The broker's STATUS-REPLY map (docs/operations.md), or raises
    BrokerUnreachableError after timeout seconds. With a list of endpoints
    (a pair of brokers) each is asked in turn, a slice of the time each (at
    least 1 s), wrapping, until the active one answers: a passive one
    (ERROR 3) or a silent one is followed by the next, as `zexec status`
    does."""
    eps = P.parse_endpoints(endpoint or os.environ.get("ZEXEC_BROKER", "tcp://127.0.0.1:5570"))
    secret = P.load_secret(secret_file)
    curve = None
    if key and server_key:
        pub, sec = P.load_cert(key, True)
        curve = (P.load_cert(server_key, False)[0], pub, sec)
    deadline = time.monotonic() + timeout
    slice_ = max(1.0, timeout / len(eps)) if len(eps) > 1 else timeout
    passive = last = None
    i = 0
    ctx = zmq.Context()
    try:
        while True:
            t0 = time.monotonic()
            left = max(0.001, deadline - t0)
            try:
                return _status_one(ctx, eps[i], min(left, slice_), secret, curve)
            except _Passive as e:
                passive = last = str(e)
            except E.BrokerUnreachableError as e:
                last = str(e)
            now = time.monotonic()
            if now >= deadline:
                break
            if now - t0 < 0.2:
                # a passive answer is immediate: do not spin on it
                time.sleep(min(0.2 - (now - t0), deadline - now))
            i = (i + 1) % len(eps)
    finally:
        ctx.term()
    if len(eps) > 1:
        raise E.BrokerUnreachableError("no active broker among %s within %.1f s (last: %s)"
                                       % (",".join(eps), timeout, passive or last))
    raise E.BrokerUnreachableError(passive or last)
