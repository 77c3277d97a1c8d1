"""A praas function worker: ``python3 -m praas.worker /abs/path/handlers.py``.

The praas runtime starts workers with the protocol socket as file
descriptor 3 (PRAAS_WORKER_FD names another). The worker imports the
module, says hello with its functions, and then pulls invocations one at a
time until the runtime closes the socket. stdout and stderr are the
process log; the protocol never touches them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import sys
import traceback
from typing import List, Optional

import praas
from praas import _proto as p
from praas._conn import Conn


def load(path: str) -> None:
    """Imports the module at path (its directory first on sys.path)."""
    d = os.path.dirname(os.path.abspath(path))
    if d not in sys.path:
        sys.path.insert(0, d)
    name = os.path.splitext(os.path.basename(path))[0] or "handlers"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)


def hello_payload() -> bytes:
    fns = praas.functions()
    w = p.MetaWriter().u16(len(fns))
    for name, trigger, n in fns:
        w.str8(name).u8(trigger).u32(n)
    return w.bytes()


def decode_invoke(f: p.Frame, shm: "Optional[p.SharedMemory]") -> "tuple[str, bytes, Optional[praas.Trigger]]":
    r = p.MetaReader(f.meta)
    name = r.str8()
    if r.u8() == 0:
        if f.flags == p.FLAG_SHM:
            if shm is None:
                raise p.ProtocolError("an input in shared memory, but there is none")
            return name, shm.read(f.payload), None
        return name, f.payload, None
    key = r.str16()
    count = r.u32()
    pr = p.MetaReader(f.payload)
    msgs: List[praas.Message] = []
    for _ in range(count):
        src, mkey, n = pr.str8(), pr.str16(), pr.u32()
        msgs.append(praas.Message(src, mkey, pr.raw(n)))
    data = msgs[0].data if len(msgs) == 1 else b""
    return name, data, praas.Trigger(key, tuple(msgs))


def serve(conn: Conn, shm: "Optional[p.SharedMemory]" = None) -> None:
    loops: List[asyncio.AbstractEventLoop] = []
    try:
        _serve(conn, loops, shm)
    finally:
        for loop in loops:
            loop.close()


def _serve(conn: Conn, loops: List[asyncio.AbstractEventLoop], shm: "Optional[p.SharedMemory]") -> None:
    answer: "Optional[tuple[int, int, bytes, p.Bytes, int]]" = None
    while True:
        try:
            # The answer says the worker is ready for the next invocation.
            if answer is None:
                conn.write(p.NEXT, 0)
            else:
                typ, fid, meta, out, flags = answer
                conn.write(typ, fid, meta, out, flags | p.FLAG_NEXT)
                answer = None
            f = conn.next_invocation()
        except (EOFError, OSError):
            return  # the runtime closed the socket: the pool stops
        if f.type != p.INVOKE:
            raise p.ProtocolError(f"unexpected frame type {f.type}")
        typ, meta, out = p.RESULT, b"", b""
        try:
            name, data, trig = decode_invoke(f, shm)
            fn = praas._registry.get(name)
            if fn is None:
                raise praas.PraasError(praas.NOT_FOUND, f"function {name!r} is not in the module")
            token = praas._triggered.set(trig)
            try:
                if fn.is_async:
                    if not loops:
                        loops.append(asyncio.new_event_loop())
                        asyncio.set_event_loop(loops[0])
                    res = loops[0].run_until_complete(fn.handler(data))
                else:
                    res = fn.handler(data)
            finally:
                praas._triggered.reset(token)
            out = praas._result_bytes(res)
        except praas.PraasError as e:
            typ, meta, out = p.ERROR, p.MetaWriter().u16(e.code).bytes(), e.message.encode()
        except Exception as e:  # noqa: BLE001 - the function failed, the worker goes on
            tb = traceback.format_exc(limit=-8)
            fname = bytes(f.meta[1 : 1 + f.meta[0]]).decode(errors="replace") if f.meta else "?"
            print(f"praas worker: function {fname!r} failed:\n{tb}", file=sys.stderr, flush=True)
            typ, meta, out = p.ERROR, p.MetaWriter().u16(praas.FUNCTION_FAILED).bytes(), f"{type(e).__name__}: {e}".encode()
        flags = 0
        if typ == p.RESULT and shm is not None and len(out) >= p.SHM_MIN:
            try:
                out, flags = shm.write(out), p.FLAG_SHM
            except OSError as e:  # out of memory for the mapping: the socket will do
                print(f"praas worker: shared memory: {e}", file=sys.stderr, flush=True)
        answer = (typ, f.id, meta, out, flags)


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print("usage: python3 -m praas.worker /abs/path/handlers.py", file=sys.stderr)
        return 2
    fd = int(os.environ.get("PRAAS_WORKER_FD", "3"))
    sock = socket.socket(fileno=fd)
    conn = Conn(sock)
    try:
        load(argv[1])
    except BaseException:  # noqa: BLE001 - told to the runtime, which reports it
        tb = traceback.format_exc()
        print(f"praas worker: cannot import {argv[1]}:\n{tb}", file=sys.stderr, flush=True)
        conn.write(p.ERROR, 0, p.MetaWriter().u16(praas.INVALID_ARGUMENT).bytes(), tb.encode()[-4000:])
        return 1
    lang = f"python {sys.version.split()[0]}"
    conn.write(p.HELLO, 0, p.MetaWriter().u16(p.VERSION).str8(lang).bytes(), hello_payload())
    f = conn.next_invocation()
    if f.type == p.ERROR:
        print(f"praas worker: refused by the runtime: {f.payload.decode(errors='replace')}", file=sys.stderr)
        return 1
    if f.type != p.WELCOME:
        raise p.ProtocolError(f"expected welcome, got frame type {f.type}")
    r = p.MetaReader(f.meta)
    if r.u16() != p.VERSION:
        raise p.ProtocolError("runtime speaks another protocol version")
    praas._proc.app, praas._proc.pid = r.str8(), r.str8()
    praas._proc.conn = conn
    shm_fd = os.environ.get("PRAAS_WORKER_SHM_FD")
    serve(conn, p.SharedMemory(int(shm_fd)) if shm_fd else None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
