"""ZXP, the zexec wire protocol, in pure Python: constants, a strict decoder
and the encoders a client and a worker need, the shared-secret envelope
(docs/protocol.md section 10) and the CURVE certificate reader.

Written from docs/protocol.md; common/proto.c is the C implementation of the
same contract. Every received message is validated completely (frame 0,
header shape and ranges of every item, payload count) before anyone reads a
field, so handlers never see a half-checked message.
"""

import hashlib
import hmac
import os
import re
import secrets
import struct

import msgpack

VERSION = 2
SIG = b"ZX"

MAX_MSG = 64 * 1024 * 1024
MAX_HEADER = 4 * 1024 * 1024
MAX_BATCH = 4096
INLINE_MAX = 256
MAX_NAME = 255
ID_LEN = 16

# commands
HELLO = 0x01
WELCOME = 0x02
SUBMIT = 0x03
STARTED = 0x04
RESULT = 0x05
CANCEL = 0x06
CANCELLED = 0x07
HEARTBEAT = 0x08
BYE = 0x09
STATUS = 0x0A
STATUS_REPLY = 0x0B
ERROR = 0x0C
RESET = 0x0D
READY = 0x21
TASK = 0x22
WSTARTED = 0x23
WRESULT = 0x24
CREDIT = 0x25
WCANCEL = 0x26
WCANCELLED = 0x27
DRAIN = 0x28
SHUTDOWN = 0x29

POOL_ANY, POOL_THREAD, POOL_PROCESS = 0, 1, 2
POOLS_THREAD, POOLS_PROCESS = 1, 2
F_CHUNK = 1

ST_OK = 0
ST_RAISED = 1
ST_NOFUNC = 2
ST_TIMELIMIT = 3
ST_CRASHED = 4
ST_WORKERLOST = 5
ST_CANCELLED = 6
ST_REJECTED = 7
ST_MEMORY = 8
ST_NOTALLOWED = 9
ST_MAX = 9

CANCEL_DONE, CANCEL_REFUSED, CANCEL_TERMINATED = 0, 1, 2

# ERROR codes (protocol.md 4.4)
ERR_PASSIVE = 3  # the passive broker of a pair: use the other endpoint

ROLE_BROKER_C, ROLE_BROKER_W, ROLE_CLIENT, ROLE_WORKER = 1, 2, 3, 4

U32 = 0xFFFFFFFF


class DecodeError(Exception):
    """A message that must be dropped; args: (code, reason)."""


# name, batch, payload, fields, roles. Field types: u uint, i int, s str or
# bin, n name (str 1..255 bytes), k id (16-byte bin), B bool, a array, m map.
_CMDS = {
    HELLO: ("HELLO", False, False, "uknu", {ROLE_BROKER_C}),
    WELCOME: ("WELCOME", False, False, "kuuu", {ROLE_CLIENT, ROLE_WORKER}),
    SUBMIT: ("SUBMIT", True, True, "unuiiuu", {ROLE_BROKER_C}),
    STARTED: ("STARTED", True, False, "usu", {ROLE_CLIENT}),
    RESULT: ("RESULT", True, True, "uusuuu", {ROLE_CLIENT}),
    CANCEL: ("CANCEL", True, False, "uB", {ROLE_BROKER_C}),
    CANCELLED: ("CANCELLED", True, False, "uu", {ROLE_CLIENT}),
    HEARTBEAT: ("HEARTBEAT", False, False, "", {1, 2, 3, 4}),
    BYE: ("BYE", False, False, "", {ROLE_BROKER_C, ROLE_BROKER_W}),
    STATUS: ("STATUS", False, False, "", {ROLE_BROKER_C}),
    STATUS_REPLY: ("STATUS-REPLY", False, False, "m", {ROLE_CLIENT}),
    ERROR: ("ERROR", False, False, "us", {ROLE_CLIENT, ROLE_WORKER}),
    RESET: ("RESET", False, False, "", {ROLE_CLIENT, ROLE_WORKER}),
    READY: ("READY", False, False, "uknuuuuuaa", {ROLE_BROKER_W}),
    TASK: ("TASK", True, True, "kunuuuu", {ROLE_WORKER}),
    WSTARTED: ("WSTARTED", True, False, "kuuu", {ROLE_BROKER_W}),
    WRESULT: ("WRESULT", True, True, "kuuuuB", {ROLE_BROKER_W}),
    CREDIT: ("CREDIT", False, False, "uu", {ROLE_BROKER_W}),
    WCANCEL: ("WCANCEL", True, False, "kuB", {ROLE_WORKER}),
    WCANCELLED: ("WCANCELLED", True, False, "kuu", {ROLE_BROKER_W}),
    DRAIN: ("DRAIN", False, False, "", {ROLE_BROKER_W}),
    SHUTDOWN: ("SHUTDOWN", False, False, "", {ROLE_CLIENT, ROLE_WORKER}),
}

E_SHORT, E_SIG, E_VERSION, E_CMD, E_SIZE = -100, -101, -102, -103, -104
E_MSGPACK, E_SHAPE, E_PAYLOADS, E_BATCH, E_UNKNOWN = -105, -106, -107, -108, -109


def cmd_name(cmd):
    c = _CMDS.get(cmd)
    return c[0] if c else "?"


def _is_uint(v):
    return type(v) is int and v >= 0


def _field_ok(v, t):
    if t == "u":
        return type(v) is int and v >= 0
    if t == "i":
        return type(v) is int
    if t == "s":
        return type(v) in (str, bytes)
    if t == "n":
        return type(v) is str and 1 <= len(v.encode("utf-8", "surrogateescape")) <= MAX_NAME
    if t == "k":
        return type(v) is bytes and len(v) == ID_LEN
    if t == "B":
        return type(v) is bool
    if t == "a":
        return type(v) is list
    if t == "m":
        return type(v) is dict
    return True


MAX_DEPTH = 32  # msgpack nesting, as common/proto.c counts it (the header array is 1)


def _depth_ok(v, room):
    """v nests at most room containers deep (iteratively: no recursion)."""
    stack = [(v, 1)]
    while stack:
        o, d = stack.pop()
        if type(o) is list:
            if d > room:
                return False
            stack.extend((x, d + 1) for x in o)
        elif type(o) is dict:
            if d > room:
                return False
            for k, x in o.items():
                stack.append((k, d + 1))
                stack.append((x, d + 1))
    return True


def _shape_ok(arr, fields, base=1):
    """arr (at nesting level base) has the fields; the containers it may
    hold (array and map fields, trailing fields) nest within MAX_DEPTH."""
    if type(arr) is not list or len(arr) < len(fields):
        return False
    for v, t in zip(arr, fields):
        if not _field_ok(v, t):
            return False
        if t in "am" and not _depth_ok(v, MAX_DEPTH - base):
            return False
    for v in arr[len(fields):]:
        if type(v) in (list, dict) and not _depth_ok(v, MAX_DEPTH - base):
            return False
    return True


def _ranges_ok(cmd, it):
    if cmd == SUBMIT:
        return (it[2] <= 2 and -128 <= it[3] <= 127 and -1 <= it[4] <= 100 and it[5] <= U32
                and it[6] <= U32)
    if cmd == TASK:
        return it[3] <= 2 and it[4] <= U32 and it[5] <= U32 and it[6] <= U32
    if cmd == RESULT:
        return it[1] <= ST_MAX and it[3] <= U32 and it[4] <= 2
    if cmd == WRESULT:
        return it[2] <= ST_MAX and it[3] <= U32 and it[4] <= 2
    if cmd == WSTARTED:
        return it[2] <= U32 and it[3] <= 2
    if cmd == CREDIT:
        return 1 <= it[0] <= 2 and it[1] <= 1000000
    if cmd == CANCELLED:
        return it[1] <= 2
    if cmd == WCANCELLED:
        return it[2] <= 2
    if cmd == READY:
        if any(it[i] > 1000000 for i in range(3, 8)):
            return False
        for f in it[8]:
            if not _shape_ok(f, "nu") or f[1] > 3:
                return False
        for r in it[9]:
            if not _shape_ok(r, "kuu") or r[2] > 2:
                return False
        return True
    if cmd == HELLO:
        return it[3] <= 3600000
    if cmd == WELCOME:
        return it[1] <= 3600000
    return True


class Message:
    """A decoded message: cmd, header (the field array, or for batch commands
    the list of items) and payloads (one bytes per item of a payload
    command, inline or from its frame, in item order)."""

    __slots__ = ("cmd", "header", "payloads")

    def __init__(self, cmd, header, payloads):
        self.cmd = cmd
        self.header = header
        self.payloads = payloads


def decode(frames, role):
    """Validates a message (frame 0 first, no routing id, envelope already
    removed) completely for a receiver of role. Returns a Message or raises
    DecodeError(code, reason)."""
    if len(frames) < 2:
        raise DecodeError(E_SHORT, "fewer than 2 frames")
    sig = bytes(frames[0])
    if len(sig) != 4 or sig[:2] != SIG:
        raise DecodeError(E_SIG, "frame 0 is not 'ZX' version command")
    if sig[2] != VERSION:
        raise DecodeError(E_VERSION, "protocol version is not 2")
    cmd = sig[3]
    c = _CMDS.get(cmd)
    if c is None or role not in c[4]:
        raise DecodeError(E_CMD, "command not accepted on this endpoint" if c else "unknown command")
    _name, batch, payload, fields, _roles = c
    hdr_bytes = frames[1]
    if len(hdr_bytes) > MAX_HEADER:
        raise DecodeError(E_SIZE, "header frame over the limit")
    try:
        hdr = msgpack.unpackb(bytes(hdr_bytes), raw=False, strict_map_key=False,
                              unicode_errors="surrogateescape", use_list=True)
    except Exception as e:  # any malformed input: extra data, truncation, depth
        raise DecodeError(E_MSGPACK, "header is not one bounded msgpack value (%s)" % e) from None
    if type(hdr) is not list:
        raise DecodeError(E_SHAPE, "header is not an array")
    nframes = len(frames) - 2
    payloads = None
    if batch:
        if len(hdr) > MAX_BATCH:
            raise DecodeError(E_BATCH, "more items than the batch limit")
        nf = len(fields)
        framed = 0
        if payload:
            payloads = []
        for it in hdr:
            if not _shape_ok(it, fields, 2) or not _ranges_ok(cmd, it):
                raise DecodeError(E_SHAPE, "an item has the wrong fields or values")
            if payload:
                p = it[nf] if len(it) > nf else None
                if p is None:
                    payloads.append(None)
                    framed += 1
                elif type(p) is bytes:
                    payloads.append(p)
                else:
                    raise DecodeError(E_SHAPE, "an item's inline payload is neither bin nor nil")
        if nframes != framed:
            raise DecodeError(E_PAYLOADS, "payload frame count does not match the items")
        if framed:
            k = 2
            for i, p in enumerate(payloads):
                if p is None:
                    payloads[i] = bytes(frames[k])
                    k += 1
    else:
        if not _shape_ok(hdr, fields) or not _ranges_ok(cmd, hdr):
            raise DecodeError(E_SHAPE, "header has the wrong fields or values")
        if nframes:
            raise DecodeError(E_PAYLOADS, "payload frame count does not match the items")
    return Message(cmd, hdr, payloads)


_pack = msgpack.Packer(use_bin_type=True).pack


def encode(cmd, header, payloads=None):
    """Frames for a message: header is the field list (or for batch
    commands the list of items, each without its payload field); payloads
    (payload commands) one bytes per item, small ones put inline."""
    frames = [bytes((0x5A, 0x58, VERSION, cmd))]
    if payloads is None:
        frames.append(_pack(header))
        return frames
    extra = []
    for it, p in zip(header, payloads):
        if len(p) <= INLINE_MAX:
            it.append(p)
        else:
            extra.append(p)
    frames.append(_pack(header))
    frames.extend(extra)
    return frames


def error_payload(type_name, message, traceback="", extra=None):
    """An error payload [type, message, traceback] (+ extra elements)."""
    arr = [str(type_name), str(message), str(traceback)]
    if extra is not None:
        arr.append(extra)
    return _pack(arr)


# ---- shared secret (protocol.md section 10) ------------------------------------

SIGN_MIN_SECRET = 16
SIGN_MAX_SECRET = 4096
ENV_LEN = 76


class ConfigError(Exception):
    pass


def load_secret(secret_file=None, scrub_env=False):
    """The shared secret as common/sign.c reads it: the file if given, else
    $ZEXEC_SECRET; trailing '\\n', '\\r', ' ' and '\\t' dropped; the bytes
    themselves are the secret (a file of 64 hex characters is 64 bytes of
    key, not 32 decoded ones); 16..4096 bytes. None when neither is set."""
    if secret_file:
        with open(secret_file, "rb") as f:
            data = f.read(SIGN_MAX_SECRET + 2)
        src = secret_file
    else:
        env = os.environ.get("ZEXEC_SECRET")
        if not env:
            return None
        data = os.fsencode(env)[: SIGN_MAX_SECRET + 1]
        if scrub_env:
            del os.environ["ZEXEC_SECRET"]
        src = "ZEXEC_SECRET"
    data = data.rstrip(b"\n\r \t")
    if not SIGN_MIN_SECRET <= len(data) <= SIGN_MAX_SECRET:
        raise ConfigError("the shared secret from %s must be %d..%d bytes (it is %d); use e.g. "
                          "`openssl rand -hex 32`" % (src, SIGN_MIN_SECRET, SIGN_MAX_SECRET,
                                                      len(data)))
    return data


class Signer:
    """The peer side (client or worker) of the envelope: one broker. Used by
    the thread that owns the socket."""

    def __init__(self, secret, peer_role, my_role):
        self._key = hmac.new(secret, b"zexec ZXS1 key", hashlib.sha256).digest()
        self.session = secrets.token_bytes(16)
        self.peer_role = peer_role  # the receiver role written into what we send
        self.my_role = my_role  # what we accept
        self.send_seq = 0
        self.remote = bytes(16)
        self.remote_hi = 0

    def _mac(self, env_mid, frames):
        h = hmac.new(self._key, digestmod=hashlib.sha256)
        h.update(b"ZXS1")
        h.update(env_mid)
        h.update(struct.pack(">I", len(frames)))
        for f in frames:
            f = bytes(f)
            h.update(struct.pack(">Q", len(f)))
            h.update(f)
        return h.digest()

    def sign(self, frames):
        self.send_seq += 1
        mid = (b"\x01" + bytes((self.peer_role,)) + self.session + self.remote
               + struct.pack(">Q", self.send_seq))
        frames.append(b"ZS" + mid + self._mac(mid, frames))
        return frames

    def verify(self, frames):
        """Checks and removes the envelope; returns None or a reason."""
        if len(frames) < 2:
            return "unsigned message (no envelope frame)"
        env = bytes(frames[-1])
        if len(env) != ENV_LEN:
            return "unsigned message (no envelope frame)"
        if env[:3] != b"ZS\x01" or env[3] != self.my_role:
            return "malformed envelope, or signed for another endpoint"
        body = frames[:-1]
        if not hmac.compare_digest(self._mac(env[2:44], body), env[44:76]):
            return "signature does not verify"
        sender, epoch = env[4:20], env[20:36]
        seq = struct.unpack(">Q", env[36:44])[0]
        if epoch != self.session:
            return ("first contact" if epoch == bytes(16) else
                    "signed for another session of the receiver (restart or replay)")
        if sender == self.remote:
            if seq <= self.remote_hi:
                return "sequence number not above the last one (replay)"
            self.remote_hi = seq
        else:
            if self.remote != bytes(16):
                # a new broker session replaces the old: a new one of ours,
                # so nothing signed for the old broker verifies again
                self.session = secrets.token_bytes(16)
            self.remote = sender
            self.remote_hi = seq
        del frames[-1]
        return None


# ---- CURVE certificates (czmq zcert files) -------------------------------------

_KEY_RE = re.compile(r'^\s+(public|secret)-key\s*=\s*"([^"]{40})"\s*$', re.M)


def load_cert(path, need_secret):
    """(public, secret) Z85 keys of a czmq certificate file; secret is None
    for a public one. Raises ConfigError."""
    import zmq

    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read(64 * 1024)
    except OSError as e:
        raise ConfigError("%s: %s" % (path, e)) from None
    keys = {}
    section = None
    for line in text.splitlines():
        s = line.rstrip()
        if not s.strip() or s.lstrip().startswith("#"):
            continue  # ZPL comments are whole lines (Z85 keys may hold '#')
        if not s[0].isspace():
            section = s.strip()
            continue
        m = _KEY_RE.match(s)
        if m and section == "curve":
            keys[m.group(1)] = m.group(2)
    pub = keys.get("public")
    if not pub:
        raise ConfigError("%s: no valid curve/public-key (40 Z85 characters)" % path)
    sec = keys.get("secret")
    if need_secret:
        if not sec:
            raise ConfigError("%s: no valid curve/secret-key: is this the _secret file?" % path)
        if zmq.curve_public(sec.encode()).decode() != pub:
            raise ConfigError("%s: secret-key does not match public-key" % path)
    return pub.encode(), (sec.encode() if sec else None)


def setup_socket(sock, curve=None):
    """Socket options every zexec socket gets (common/proto.c
    zxp_sock_setup), and CURVE client keys: curve = (server_public,
    our_public, our_secret) or None."""
    import zmq

    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MSG)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.HANDSHAKE_IVL, 10000)
    if curve:
        server, pub, sec = curve
        sock.curve_serverkey = server
        sock.curve_publickey = pub
        sock.curve_secretkey = sec


# ---- broker endpoint lists (common/endpoints.c) ---------------------------------

EPS_MAX = 16
EP_MAX_LEN = 255
_BLANKS = " \t\n\r"


def parse_endpoints(spec):
    """A broker endpoint list, "tcp://a:5570,tcp://b:5570" (the two brokers
    of a pair, docs/operations.md "Running a pair"), as zx__eps_parse reads
    it: items separated by commas, blanks around each ignored. An empty
    spec, an empty item ("a,,b", a trailing comma), a blank inside an item,
    an item longer than 255 bytes or more than 16 items raise ValueError
    saying which. Returns the endpoints in order (one for a plain endpoint);
    their syntax is libzmq's to check when connecting."""
    if spec is None:
        raise ValueError("no broker endpoint")
    if type(spec) is not str:
        raise TypeError("a broker endpoint list is a str, not %s" % type(spec).__name__)
    eps = []
    for item in spec.split(","):
        ep = item.strip(_BLANKS)
        why = None
        if not ep:
            why = "an empty endpoint"
        elif len(ep.encode("utf-8", "surrogateescape")) > EP_MAX_LEN:
            why = "an endpoint longer than 255 bytes"
        elif len(eps) == EPS_MAX:
            why = "more than 16 endpoints"
        elif any(c in _BLANKS for c in ep):
            why = "a blank inside an endpoint"
        if why:
            raise ValueError("invalid broker endpoint list '%s': %s (expected e.g. "
                             "tcp://HOST:5570 or tcp://A:5570,tcp://B:5570)" % (spec, why))
        eps.append(ep)
    return eps


def is_loopback(endpoint):
    """True for the endpoints docs/security.md counts as loopback."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    m = re.match(r"^tcp://(?:[^;]*;)?(\[[^\]]*\]|[^:]*):", endpoint)
    if not m:
        return False
    host = m.group(1)
    return host in ("localhost", "[::1]") or host.startswith("127.")


def all_loopback(endpoints):
    """True when every endpoint of a list is loopback (the rule holds for
    each broker of a pair)."""
    return all(is_loopback(ep) for ep in endpoints)
