"""The worker protocol: frames between the praas runtime and a worker.

The specification is process/workers/proto.go in the praas repository;
docs/workers.md explains it. Every frame is a 16-byte header (big endian:
body length u32, type u8, flags u8 (0), metadata length u16, id u64) and a
body: metadata, then payload.
"""

from __future__ import annotations

import mmap
import os
import socket
import struct
from dataclasses import dataclass
from typing import Optional, Union

VERSION = 1
HEADER = struct.Struct(">IBBHQ")
HEADER_LEN = 16
MAX_PAYLOAD = 1 << 31

# Frame types.
HELLO = 1  # worker -> runtime, first: version u16, language str8; payload: functions
WELCOME = 2  # runtime -> worker: version u16, app str8, pid str8
NEXT = 3  # worker -> runtime: ready for the next invocation
INVOKE = 4  # runtime -> worker: function str8, triggered u8 [, key str16, count u32]
RESULT = 5  # worker -> runtime: payload output
ERROR = 6  # either way: code u16; payload message
CALL = 7  # worker -> runtime: op u8, op-specific meta; payload
REPLY = 8  # runtime -> worker: op-specific meta; payload

# Header flags: FLAG_SHM on an INVOKE or a RESULT says the payload is in
# the worker's shared memory (a memfd), the frame's payload its length u64.
FLAG_SHM = 1
# FLAG_NEXT on a RESULT or an ERROR: the worker is ready for its next
# invocation (it sends no NEXT then).
FLAG_NEXT = 2
SHM_MIN = 64 << 10

# Call operations.
OP_GET = 1
OP_SET = 2
OP_DELETE = 3
OP_SEND = 4
OP_RECV = 5
OP_INVOKE = 6
OP_MEMBERS = 7
OP_KEYS = 8

# Trigger kinds in the hello.
TRIGGER_NONE = 0
TRIGGER_STANDARD = 1
TRIGGER_MULTI_SOURCE = 2
TRIGGER_BATCH = 3

Bytes = Union[bytes, bytearray, memoryview]


class ProtocolError(Exception):
    """The peer sent something this worker cannot read."""


@dataclass
class Frame:
    type: int
    id: int
    meta: bytes
    payload: bytes
    flags: int = 0


class MetaWriter:
    def __init__(self) -> None:
        self.b = bytearray()

    def u8(self, v: int) -> "MetaWriter":
        self.b.append(v)
        return self

    def u16(self, v: int) -> "MetaWriter":
        self.b += struct.pack(">H", v)
        return self

    def u32(self, v: int) -> "MetaWriter":
        self.b += struct.pack(">I", v)
        return self

    def u64(self, v: int) -> "MetaWriter":
        self.b += struct.pack(">Q", v)
        return self

    def str8(self, s: str) -> "MetaWriter":
        e = s.encode()
        if len(e) > 255:
            raise ValueError(f"{s[:20]!r}...: longer than 255 bytes")
        self.b.append(len(e))
        self.b += e
        return self

    def str16(self, s: str) -> "MetaWriter":
        e = s.encode()
        if len(e) > 65535:
            raise ValueError(f"{s[:20]!r}...: longer than 65535 bytes")
        self.b += struct.pack(">H", len(e))
        self.b += e
        return self

    def bytes(self) -> bytes:
        return bytes(self.b)


class MetaReader:
    def __init__(self, b: Bytes) -> None:
        self.b = memoryview(b)
        self.off = 0

    def _take(self, n: int) -> memoryview:
        if self.off + n > len(self.b):
            raise ProtocolError("metadata too short")
        v = self.b[self.off : self.off + n]
        self.off += n
        return v

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        v: int = struct.unpack(">H", self._take(2))[0]
        return v

    def u32(self) -> int:
        v: int = struct.unpack(">I", self._take(4))[0]
        return v

    def u64(self) -> int:
        v: int = struct.unpack(">Q", self._take(8))[0]
        return v

    def str8(self) -> str:
        return bytes(self._take(self.u8())).decode()

    def str16(self) -> str:
        return bytes(self._take(self.u16())).decode()

    def raw(self, n: int) -> bytes:
        return bytes(self._take(n))

    def remaining(self) -> int:
        return len(self.b) - self.off


class FrameReader:
    """Reads frames from a socket through a 64 KiB buffer, so a small frame
    costs one recv; a large payload is read straight into its own buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray(1 << 16)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0

    def _fill(self, need: int) -> None:
        """Makes at least need bytes (at most the buffer's size) available."""
        if self.start + need > len(self.buf):
            n = self.end - self.start
            self.view[:n] = self.view[self.start : self.end]
            self.start, self.end = 0, n
        while self.end - self.start < need:
            k = self.sock.recv_into(self.view[self.end :])
            if k == 0:
                raise EOFError("runtime closed the connection")
            self.end += k

    def _take(self, n: int) -> bytes:
        if n <= len(self.buf):
            self._fill(n)
            out = bytes(self.view[self.start : self.start + n])
            self.start += n
            return out
        big = bytearray(n)
        have = self.end - self.start
        big[:have] = self.view[self.start : self.end]
        self.start = self.end = 0
        bv = memoryview(big)
        while have < n:
            k = self.sock.recv_into(bv[have:])
            if k == 0:
                raise EOFError("runtime closed the connection")
            have += k
        return bytes(big)

    def next(self) -> Frame:
        self._fill(HEADER_LEN)
        body_len, typ, flags, meta_len, fid = HEADER.unpack_from(self.buf, self.start)
        self.start += HEADER_LEN
        if flags & ~(FLAG_SHM | FLAG_NEXT):
            raise ProtocolError(f"unknown flags {flags:#x}")
        if meta_len > body_len:
            raise ProtocolError("metadata longer than body")
        if body_len - meta_len > MAX_PAYLOAD:
            raise ProtocolError(f"payload of {body_len - meta_len} bytes")
        meta = self._take(meta_len) if meta_len else b""
        n = body_len - meta_len
        payload = self._take(n) if n else b""
        return Frame(typ, fid, meta, payload, flags)


def encode_frame(typ: int, fid: int, meta: bytes = b"", payload: Bytes = b"", flags: int = 0) -> "list[Bytes]":
    if len(meta) > 65535:
        raise ValueError("metadata over 65535 bytes")
    hdr = HEADER.pack(len(meta) + len(payload), typ, flags, len(meta), fid)
    if len(payload) < 65536:
        return [hdr + meta + bytes(payload)]
    return [hdr + meta, payload]


class SharedMemory:
    """The worker's shared memory with the runtime (see FLAG_SHM)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.mm: "Optional[mmap.mmap]" = None

    def _map(self, size: int) -> "mmap.mmap":
        if self.mm is not None and len(self.mm) >= size:
            return self.mm
        cur = os.fstat(self.fd).st_size
        if cur < size:
            new = max(1 << 20, len(self.mm) if self.mm is not None else 0)
            while new < size:
                new *= 2
            os.ftruncate(self.fd, new)
            cur = new
        if self.mm is not None:
            self.mm.close()
        self.mm = mmap.mmap(self.fd, cur)
        return self.mm

    def read(self, payload: bytes) -> bytes:
        (n,) = struct.unpack(">Q", payload)
        if n > os.fstat(self.fd).st_size:
            raise ProtocolError(f"{n} bytes in shared memory of {os.fstat(self.fd).st_size}")
        return self._map(n)[:n]

    def write(self, data: Bytes) -> bytes:
        """Puts data at offset 0 and returns the frame payload that says so."""
        n = len(data)
        self._map(n)[:n] = data
        return struct.pack(">Q", n)


def as_bytes(data: Optional[Union[Bytes, str]]) -> Bytes:
    if data is None:
        return b""
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return data
    raise TypeError(f"expected bytes, bytearray, memoryview, str or None, not {type(data).__name__}")
