"""Running one task on a worker (in a pool thread or a process-pool child):
decoding its msgpack arguments, calling the function, encoding the result
or the error as docs/protocol.md says, chunked tasks included.

Functions of two kinds:
- msgpack functions (the built-ins and module:function names): called
  with the decoded arguments, their value msgpack-encoded;
- the pickle function (PICKLE_FN, only with --allow-pickle): arguments
  [fn: bin, args: bin, init: bin or nil], fn a pickled callable, args a
  pickled (args, kwargs), init a pickled (initializer, initargs) or nil;
  its value is one bin, the pickled return value; its errors carry a 4th
  element, the pickled exception (docs/python.md).
"""

import importlib
import os
import pickle
import sys
import time
import traceback

import msgpack

from . import _proto as P

PICKLE_FN = "zexec.pickle"

try:
    import cloudpickle as _cp

    dumps = _cp.dumps
except ImportError:  # plain pickle: module-level functions only
    _cp = None
    dumps = pickle.dumps

_pack = msgpack.Packer(use_bin_type=True).pack
_SIMPLE = (int, float, str, bytes, bool, type(None))


def dumps_args(args, kwargs):
    """(args, kwargs) pickled: plain values by the C pickler (a fifth of
    cloudpickle's cost per call, which dominated a chunked map), anything
    else by cloudpickle (objects of __main__ classes, lambdas)."""
    if all(type(a) in _SIMPLE for a in args) and all(
            type(v) in _SIMPLE for v in kwargs.values()):
        return pickle.dumps((args, kwargs), 5)
    return dumps((args, kwargs))


def dumps_value(value):
    """A result: by the C pickler when it can (by reference, which the
    client can import), else by cloudpickle (by value: lambdas, classes
    made here)."""
    try:
        return pickle.dumps(value, 5)
    except Exception:
        return dumps(value)


def unpack(data):
    return msgpack.unpackb(data, raw=False, strict_map_key=False,
                           unicode_errors="surrogateescape")


class TaskError(Exception):
    """Raised by a function to report an error of a given type name
    (the built-in fail, and TypeError-like argument checks)."""

    def __init__(self, type_name, message):
        super().__init__(message)
        self.type_name = type_name


def _tb_text(e):
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))


def _status_of(e):
    name = getattr(e, "type_name", type(e).__name__)
    if name == "TimeLimitError":
        return P.ST_TIMELIMIT
    if isinstance(e, MemoryError) or name == "MemoryError":
        return P.ST_MEMORY
    return P.ST_RAISED


def _error_array(e, pickled=False):
    name = getattr(e, "type_name", type(e).__name__)
    tb = "" if isinstance(e, TaskError) else _tb_text(e)
    arr = [name, str(e), tb]
    if pickled:
        try:
            e.__traceback__ = None
            arr.append(dumps(e))
        except BaseException:  # an exception that cannot be pickled: by name
            pass
    return arr


# ---- built-ins (as the C worker's, docs/worker.md) ------------------------------

_node = os.uname().nodename


def set_node(node):
    global _node
    _node = node


def b_echo(*args):
    return list(args)


def b_sleep(*args):
    if len(args) < 1 or type(args[0]) not in (int, float) or not 0 <= args[0] <= 1e9:
        raise TaskError("TypeError", "sleep takes one argument: seconds (a number >= 0)")
    time.sleep(args[0])
    return float(args[0])


def b_fail(*args):
    t = str(args[0]) if len(args) > 0 and args[0] else "Error"
    raise TaskError(t, str(args[1]) if len(args) > 1 else "")


def b_pid(*args):
    return [_node, os.getpid()]


BUILTINS = {"echo": b_echo, "sleep": b_sleep, "fail": b_fail, "pid": b_pid}


def resolve(spec):
    """module:function -> the callable (imported here)."""
    mod, _, name = spec.partition(":")
    if not mod or not name:
        raise ValueError("a function is module:function, not %r" % spec)
    obj = importlib.import_module(mod)
    for part in name.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError("%s is not callable" % spec)
    return obj


# ---- the pickle function ----------------------------------------------------------

class _Pickled:
    """Per process: the last unpickled callable and the initializers run."""

    last_blob = None
    last_fn = None
    inits_done = set()


class InitializerFailed(Exception):
    pass


def _loads_call(fn_blob, args_blob, init_blob):
    if init_blob is not None and init_blob not in _Pickled.inits_done:
        try:
            init, initargs = pickle.loads(init_blob)[:2]
            init(*initargs)
        except BaseException as e:
            raise InitializerFailed(e) from e
        _Pickled.inits_done.add(init_blob)
    if fn_blob != _Pickled.last_blob:
        _Pickled.last_fn = pickle.loads(fn_blob)
        _Pickled.last_blob = fn_blob
    args, kwargs = pickle.loads(args_blob)
    return _Pickled.last_fn, args, kwargs


def _run_pickled(a):
    """One call of the pickle function: (ok, value or error array)."""
    if (len(a) < 2 or type(a[0]) is not bytes or type(a[1]) is not bytes
            or (len(a) > 2 and a[2] is not None and type(a[2]) is not bytes)):
        return False, ["TypeError", "%s takes [fn: bin, args: bin, init: bin or nil]"
                       % PICKLE_FN, ""], P.ST_RAISED
    try:
        fn, args, kwargs = _loads_call(a[0], a[1], a[2] if len(a) > 2 else None)
    except InitializerFailed as e:
        orig = e.__cause__
        arr = _error_array(orig, pickled=True)
        arr[0] = "InitializerError"
        return False, arr, P.ST_RAISED
    except BaseException as e:
        # as ProcessPoolExecutor: a task that cannot be unpickled where it
        # runs is a broken pool for it (BrokenProcessPool), not its own error
        from concurrent.futures.process import BrokenProcessPool

        b = BrokenProcessPool("the task could not be unpickled on node %s: %s: %s"
                              % (_node, type(e).__name__, e))
        b.__cause__ = None
        arr = _error_array(b, pickled=True)
        arr[2] = _tb_text(e)
        return False, arr, P.ST_RAISED
    try:
        value = fn(*args, **kwargs)
    except BaseException as e:
        return False, _error_array(e, pickled=True), _status_of(e)
    finally:
        args = kwargs = None
    try:
        blob = dumps_value(value)
    except BaseException as e:  # as ProcessPoolExecutor: the pickling error is the result
        return False, _error_array(e, pickled=True), P.ST_RAISED
    return True, blob, P.ST_OK


# ---- one task -----------------------------------------------------------------------

class Registry:
    def __init__(self, builtins=True, allow_pickle=False):
        self.fns = dict(BUILTINS) if builtins else {}
        self.allow_pickle = allow_pickle

    def add(self, name, spec):
        self.fns[name] = resolve(spec)

    def names(self):
        n = list(self.fns)
        if self.allow_pickle:
            n.append(PICKLE_FN)
        return n


def _call_msgpack(fn, a):
    try:
        value = fn(*a)
    except BaseException as e:
        return False, _error_array(e), _status_of(e)
    try:
        return True, _pack(value), P.ST_OK
    except BaseException as e:
        return False, ["TypeError", "the result cannot be msgpack-encoded: %s" % e,
                       ""], P.ST_RAISED


def run(reg, name, flags, args_bytes):
    """Runs a task; returns (status, payload bytes)."""
    pick = name == PICKLE_FN and reg.allow_pickle
    fn = None if pick else reg.fns.get(name)
    if fn is None and not pick:
        return P.ST_NOFUNC, P.error_payload("NoFunctionError",
                                            "no function %s on node %s" % (name, _node))
    try:
        args = unpack(args_bytes) if args_bytes else []
    except Exception:
        args = None
    if type(args) is not list:
        what = "chunk arguments are not" if flags & P.F_CHUNK else "the arguments are not"
        return P.ST_RAISED, P.error_payload("TypeError", what + " one msgpack array")
    if flags & P.F_CHUNK:
        out = []
        for a in args:
            if type(a) is not list:
                out.append([False, ["TypeError", "chunk element is not an argument array", ""]])
                continue
            if pick:
                ok, v, _st = _run_pickled(a)
                out.append([ok, v])
            else:
                ok, v, _st = _call_msgpack(fn, a)
                out.append([ok, unpack(v) if ok else v])
        return P.ST_OK, _pack(out)
    if pick:
        ok, v, st = _run_pickled(args)
        return st, _pack(v)
    ok, v, st = _call_msgpack(fn, args)
    return st, (v if ok else _pack(v))
