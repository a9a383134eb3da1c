"""Test harness for the Python conformance tests: a real zexec-broker (the C
binary from $ZEXEC_BIN_DIR) on loopback with free ports, C and Python
workers, each started as a process and stopped by its PID.

Readiness is a condition, never a sleep: the broker's STATUS-REPLY lists
the workers it has registered.
"""

import os
import random
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("ZEXEC_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
PYDIR = os.path.join(SRC, "python")
if PYDIR not in sys.path:
    sys.path.insert(0, PYDIR)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import zexec  # noqa: E402

BIN = os.environ.get("ZEXEC_BIN_DIR") or os.path.join(SRC, "build", "plain")
PY = "/usr/bin/python3"


def free_port():
    """A port below the kernel's ephemeral range, checked by a bind: one from
    that range can be taken by any outgoing connection before the broker
    binds it (common/net.c)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        lo = 32768
    for _ in range(200):
        port = random.randrange(10000, lo) if lo > 12000 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port")


def env_with_path(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PYDIR, HERE] + ([env["PYTHONPATH"]]
                                                         if env.get("PYTHONPATH") else []))
    env.pop("ZEXEC_SECRET", None)
    if extra:
        env.update(extra)
    return env


class Cluster:
    """A broker and its workers. security: None, ("secret", file) or
    ("curve", keydir) with keydir holding broker, client and worker keys."""

    def __init__(self, security=None, log_dir=None):
        self.security = security
        self.procs = []
        self.exits = []  # (argv[0], exit status) of the processes stopped
        self.log_dir = log_dir
        self.cport = self.wport = None

    # security flags for each kind of peer
    def broker_flags(self):
        s = self.security
        if s is None:
            return []
        if s[0] == "secret":
            return ["--secret-file", s[1]]
        d = s[1]
        return ["--key", os.path.join(d, "broker_secret"), "--client-keys",
                os.path.join(d, "clients"), "--worker-keys", os.path.join(d, "workers")]

    def peer_flags(self, who):
        s = self.security
        if s is None:
            return []
        if s[0] == "secret":
            return ["--secret-file", s[1]]
        d = s[1]
        return ["--server-key", os.path.join(d, "broker"), "--key",
                os.path.join(d, who + "_secret")]

    def client_kwargs(self):
        s = self.security
        if s is None:
            return {}
        if s[0] == "secret":
            return {"secret_file": s[1]}
        d = s[1]
        return {"server_key": os.path.join(d, "broker"),
                "key": os.path.join(d, "client_secret")}

    @property
    def clients(self):
        return "tcp://127.0.0.1:%d" % self.cport

    @property
    def workers(self):
        return "tcp://127.0.0.1:%d" % self.wport

    def _spawn(self, argv, name, env=None):
        out = None
        if self.log_dir:
            out = open(os.path.join(self.log_dir, "%s-%d.log" % (name, len(self.procs))), "wb")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT if out else None,
                             env=env or env_with_path())
        self.procs.append(p)
        return p

    def start_broker(self, extra=()):
        for _ in range(20):
            self.cport, self.wport = free_port(), free_port()
            p = self._spawn([os.path.join(BIN, "zexec-broker"), "--clients", self.clients,
                             "--workers", self.workers, "-q"] + self.broker_flags()
                            + list(extra), "broker")
            try:
                zexec.status(self.clients, timeout=1.0, **self.client_kwargs())
                self.broker = p
                return p
            except zexec.BrokerUnreachableError:
                self.stop(p)  # the port was taken meanwhile: another pair
        raise RuntimeError("could not start a broker")

    def start_pyworker(self, *args, who="worker"):
        return self._spawn([PY, "-m", "zexec.worker", "--broker", self.workers, "-q"]
                           + self.peer_flags(who) + list(args), "pyworker")

    def start_cworker(self, *args, who="worker"):
        return self._spawn([os.path.join(BIN, "zexec-worker"), "--broker", self.workers, "-q"]
                           + self.peer_flags(who) + list(args), "cworker")

    def wait_workers(self, n, timeout=60.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = zexec.status(self.clients, timeout=5.0, **self.client_kwargs())
            if len(st.get("workers", [])) >= n:
                return st
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError("process %s exited with %s" % (p.args, p.returncode))
            time.sleep(0.05)
        raise RuntimeError("%d workers did not register within %.0f s" % (n, timeout))

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)
            self.exits.append((os.path.basename(p.args[0]) if p.args[0] != PY
                               else "zexec-pyworker", p.returncode))

    def close(self):
        # workers first (they drain and say BYE), the broker last
        for p in reversed(list(self.procs)):
            self.stop(p)


def make_keys(d):
    """CURVE keys with the C tool: broker, client, worker, and the broker's
    allowlist folders."""
    os.makedirs(d, exist_ok=True)
    subprocess.run([os.path.join(BIN, "zexec"), "keygen", d, "broker", "client", "worker"],
                   check=True, stdout=subprocess.DEVNULL)
    for who, folder in (("client", "clients"), ("worker", "workers")):
        os.makedirs(os.path.join(d, folder), exist_ok=True)
        with open(os.path.join(d, who)) as src, open(os.path.join(d, folder, who), "w") as dst:
            dst.write(src.read())


def make_secret(path):
    with open(path, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(path, 0o600)
