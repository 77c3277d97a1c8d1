"""A worker's connection to its runtime: invocations and calls on one socket.

Any thread may wait for a frame: whoever finds nobody reading reads the next
frame and hands it to its waiter (a leader/follower scheme), so a call made
by the function's own thread costs one write and one read, with no thread
switch.
"""

from __future__ import annotations

import collections
import itertools
import socket
import threading
from typing import Deque, Dict, Optional

from . import _proto as p


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = p.FrameReader(sock)
        self._wlock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._reading = False
        self._replies: Dict[int, p.Frame] = {}
        self._invokes: Deque[p.Frame] = collections.deque()
        self._closed: Optional[BaseException] = None
        self._ids = itertools.count(1)

    def write(self, typ: int, fid: int, meta: bytes = b"", payload: p.Bytes = b"", flags: int = 0) -> None:
        parts = p.encode_frame(typ, fid, meta, payload, flags)
        with self._wlock:
            for part in parts:
                self.sock.sendall(part)

    def _wait(self, call_id: int) -> p.Frame:
        """Waits for the reply to call_id, or (call_id 0) the next runtime-initiated frame."""
        with self._cond:
            while True:
                if call_id == 0:
                    if self._invokes:
                        return self._invokes.popleft()
                elif call_id in self._replies:
                    return self._replies.pop(call_id)
                if self._closed is not None:
                    raise EOFError(f"connection to the runtime lost: {self._closed}")
                if self._reading:
                    self._cond.wait()
                    continue
                self._reading = True
                self._cond.release()
                try:
                    f: Optional[p.Frame] = self._reader.next()
                except BaseException as e:  # noqa: BLE001 - every waiter must learn of it
                    f = None
                    err: BaseException = e
                finally:
                    self._cond.acquire()
                    self._reading = False
                if f is None:
                    self._closed = err
                elif f.type in (p.REPLY, p.ERROR):
                    # The runtime sends these only in answer to calls.
                    self._replies[f.id] = f
                else:
                    self._invokes.append(f)
                self._cond.notify_all()

    def next_invocation(self) -> p.Frame:
        return self._wait(0)

    def call(self, op: int, meta: bytes = b"", payload: p.Bytes = b"") -> p.Frame:
        """Makes a call and returns its REPLY, or raises the runtime's error."""
        cid = next(self._ids)
        self.write(p.CALL, cid, bytes([op]) + meta, payload)
        f = self._wait(cid)
        if f.type == p.ERROR:
            r = p.MetaReader(f.meta)
            from . import PraasError

            raise PraasError(r.u16(), f.payload.decode(errors="replace"))
        return f
