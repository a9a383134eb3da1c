#!/usr/bin/env python3
"""Writes the seed inputs of tests/corpus/<target>/seed-*: one valid message
of every command for its role, hostile msgpack (the 5-byte giant containers,
deep nesting), envelopes and certificate files. Crash inputs found by
scripts/fuzz sit next to them (crash-*) and are replayed the same way by
tests/test_corpus.c. Run from anywhere; needs only the standard library."""
import os, struct, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))

def mp(v):
    if v is None: return b'\xc0'
    if v is True: return b'\xc3'
    if v is False: return b'\xc2'
    if isinstance(v, int):
        if 0 <= v < 128: return bytes([v])
        if v >= 0: return b'\xcf' + struct.pack('>Q', v)
        return b'\xd3' + struct.pack('>q', v)
    if isinstance(v, str):
        b = v.encode(); return b'\xd9' + bytes([len(b)]) + b
    if isinstance(v, bytes): return b'\xc4' + bytes([len(v)]) + v
    if isinstance(v, list): return b'\xdc' + struct.pack('>H', len(v)) + b''.join(mp(x) for x in v)
    if isinstance(v, dict):
        return b'\xde' + struct.pack('>H', len(v)) + b''.join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)

def frames(*fs):
    return b''.join(struct.pack('>H', len(f)) + f for f in fs)

ID = bytes(range(1, 17))
PAY = b'\x91\x2a'
C, W, CL, WK = 0, 1, 2, 3  # role byte: role - 1 (broker client/worker side, client, worker)
msgs = {
    'hello': (C, 0x01, [2, ID, 'c', 1000], 0),
    'submit': (C, 0x03, [[1, 'echo', 0, 0, 0, 0, 0], [2, 'sq', 2, -5, -1, 100, 1]], 2),
    # the first item carries its payload inline, the second in a frame
    'submit_inline': (C, 0x03, [[1, 'echo', 0, 0, 0, 0, 0, PAY], [2, 'sq', 2, -5, -1, 100, 1]], 1),
    'cancel': (C, 0x06, [[1, True]], 0),
    'status': (C, 0x0A, [], 0),
    'bye': (C, 0x09, [], 0),
    'welcome': (CL, 0x02, [ID, 1000, 3, 1 << 20], 0),
    'started': (CL, 0x04, [[1, 'node', 5]], 0),
    'result': (CL, 0x05, [[1, 0, 'node', 5, 1, 1]], 1),
    'cancelled': (CL, 0x07, [[1, 0]], 0),
    'status_reply': (CL, 0x0B, [{'queued': 1}], 0),
    'error': (CL, 0x0C, [1, 'bad'], 0),
    'ready': (W, 0x21, [2, ID, 'node', 1, 2, 2, 1, 1000, [['echo', 3]], [[ID, 1, 1]]], 0),
    'wstarted': (W, 0x23, [[ID, 1, 5, 1]], 0),
    'wresult': (W, 0x24, [[ID, 1, 0, 5, 1, True]], 1),
    'credit': (W, 0x25, [1, 1], 0),
    'wcancelled': (W, 0x27, [[ID, 1, 0]], 0),
    'drain': (W, 0x28, [], 0),
    'task': (WK, 0x22, [[ID, 1, 'echo', 1, 0, 1, 0]], 1),
    'wcancel': (WK, 0x26, [[ID, 1, False]], 0),
    'shutdown': (WK, 0x29, [], 0),
}

def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'seed-' + name), 'wb') as f:
        f.write(data)

hostile = {
    'array32_huge': b'\xdd\xff\xff\xff\xff',
    'map32_huge': b'\xdf\xff\xff\xff\xff',
    'deep_10000': b'\x91' * 10000 + b'\xc0',
    'deep_33': b'\x91' * 33 + b'\xc0',
    'deep_32': b'\x91' * 32 + b'\xc0',
    'str32_huge': b'\xdb\xff\xff\xff\xff',
    'ext32_huge': b'\xc9\xff\xff\xff\xff\x01',
    'never_used': b'\xc1',
    'trailing': b'\x90\x90',
}
for name, (role, cmd, hdr, npay) in msgs.items():
    body = [b'ZX\x02' + bytes([cmd]), mp(hdr)] + [PAY] * npay
    write('decode', name, bytes([role]) + frames(*body))
    write('msgpack', name, mp(hdr))
    write('envelope', name + '-signed', bytes([1 | 2, 0, 7]) + frames(*body))
    write('envelope', name + '-raw', bytes([1, 0, 0]) + frames(*body + [bytes(76)]))
for name, data in hostile.items():
    write('msgpack', name, data)
    write('decode', 'hdr-' + name, bytes([C]) + frames(b'ZX\x02\x03', data))
write('decode', 'few_frames', bytes([C]) + frames(b'ZX\x02\x03'))
write('decode', 'bad_version', bytes([C]) + frames(b'ZX\x03\x03', b'\x90'))
write('decode', 'batch_4097', bytes([C]) + frames(b'ZX\x02\x06', b'\xdd' + struct.pack('>I', 4097) + b'\x92\x01\xc3' * 4097))

cert_pub = b'''#   ZeroMQ CURVE Public Certificate
metadata
    name = "seed"
curve
    public-key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
'''
cert_sec = cert_pub + b'    secret-key = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"\n'
write('cert', 'public', b'\x00' + cert_pub)
write('cert', 'secret', b'\x01' + cert_sec)
write('cert', 'mismatch', b'\x01' + cert_pub + b'    secret-key = "' + b'0' * 40 + b'"\n')
write('cert', 'unterminated', b'\x00curve\n    public-key = "abc')
write('cert', 'deep_indent', b'\x00' + b''.join(b'    ' * i + b'x\n' for i in range(200)))
