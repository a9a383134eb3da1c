"""A process-pool child of zexec-pyworker: runs one task at a time for its
parent, which talks to it over two pipes (file descriptors in argv) with
length-prefixed msgpack records:

  parent -> child  [name, flags, args: bin]
  child -> parent  [status, payload: bin]

The child's own stdout and stderr are the worker's, so a task's prints show
in the worker's output. It ignores SIGINT: a Ctrl-C drains the worker, which
lets running tasks finish. The parent kills it (SIGKILL) for a time limit or
a terminating cancel and starts another.
"""

import argparse
import importlib
import os
import signal
import struct
import sys


def _read(fd, n):
    buf = bytearray()
    while len(buf) < n:
        b = os.read(fd, n - len(buf))
        if not b:
            return None
        buf += b
    return bytes(buf)


def _write(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="zexec._child")
    ap.add_argument("fd_in", type=int)
    ap.add_argument("fd_out", type=int)
    ap.add_argument("--allow-pickle", action="store_true")
    ap.add_argument("--no-builtins", action="store_true")
    ap.add_argument("--function", action="append", default=[])
    ap.add_argument("--preload", action="append", default=[])
    ap.add_argument("--node", default=None)
    a = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from . import _tasks

    if a.node:
        _tasks.set_node(a.node)
    for m in a.preload:
        importlib.import_module(m)
    reg = _tasks.Registry(builtins=not a.no_builtins, allow_pickle=a.allow_pickle)
    for f in a.function:
        name, _, spec = f.partition("=")
        reg.add(name, spec)
    import msgpack

    pack = msgpack.Packer(use_bin_type=True).pack
    _write(a.fd_out, struct.pack(">I", 0))  # ready
    while True:
        h = _read(a.fd_in, 4)
        if h is None:
            return 0
        body = _read(a.fd_in, struct.unpack(">I", h)[0])
        if body is None:
            return 0
        name, flags, args = msgpack.unpackb(body, raw=False)
        st, payload = _tasks.run(reg, name, flags, args)
        out = pack([st, payload])
        sys.stdout.flush()
        _write(a.fd_out, struct.pack(">I", len(out)) + out)


if __name__ == "__main__":
    sys.exit(main())
