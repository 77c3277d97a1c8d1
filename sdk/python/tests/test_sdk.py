"""Unit tests of the Python SDK against a fake runtime on a socketpair.

Run: python3 -m unittest discover -s sdk/python/tests (from the
repository; the Go test process/workers TestPythonSDKUnit runs them).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import unittest
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import praas  # noqa: E402
import praas.worker as worker  # noqa: E402
from praas import _proto as p  # noqa: E402
from praas._conn import Conn  # noqa: E402


class FakeRuntime:
    """The runtime's end: keeps a state dict and a mailbox, answers calls."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = p.FrameReader(sock)
        self.state: Dict[str, bytes] = {}
        self.mail: List[Tuple[str, str, bytes]] = []
        self.lock = threading.Lock()
        self.ready = False  # the last answer said FLAG_NEXT

    def write(self, typ: int, fid: int, meta: bytes = b"", payload: bytes = b"") -> None:
        with self.lock:
            for part in p.encode_frame(typ, fid, meta, payload):
                self.sock.sendall(part)

    def handshake(self) -> List[Tuple[str, int, int]]:
        f = self.reader.next()
        assert f.type == p.HELLO, f.type
        r = p.MetaReader(f.meta)
        assert r.u16() == p.VERSION
        pr = p.MetaReader(f.payload)
        fns = [(pr.str8(), pr.u8(), pr.u32()) for _ in range(pr.u16())]
        self.write(p.WELCOME, 0, p.MetaWriter().u16(p.VERSION).str8("app").str8("p1").bytes())
        return fns

    def invoke(self, fid: int, meta: bytes, payload: bytes = b"") -> p.Frame:
        """Waits until the worker is ready, sends the invocation, serves
        calls until its answer."""
        if not self.ready:
            f = self.reader.next()
            assert f.type == p.NEXT, f.type
        self.write(p.INVOKE, fid, meta, payload)
        while True:
            f = self.reader.next()
            if f.type in (p.RESULT, p.ERROR):
                assert f.id == fid
                assert f.flags == p.FLAG_NEXT, f.flags  # no shared memory here
                self.ready = True
                return f
            assert f.type == p.CALL, f.type
            self.call(f)

    def call(self, f: p.Frame) -> None:
        r = p.MetaReader(f.meta)
        op = r.u8()
        if op == p.OP_GET:
            v = self.state.get(r.str16())
            self.write(p.REPLY, f.id, b"\x01" if v is not None else b"\x00", v or b"")
        elif op == p.OP_SET:
            self.state[r.str16()] = f.payload
            self.write(p.REPLY, f.id)
        elif op == p.OP_DELETE:
            self.state.pop(r.str16(), None)
            self.write(p.REPLY, f.id)
        elif op == p.OP_SEND:
            self.mail.append((r.str8(), r.str16(), f.payload))
            self.write(p.REPLY, f.id)
        elif op == p.OP_RECV:
            src, key = r.str8(), r.str16()
            for i, (d, k, data) in enumerate(self.mail):
                if k == key:
                    del self.mail[i]
                    self.write(p.REPLY, f.id, p.MetaWriter().str8("p1").str16(k).bytes(), data)
                    return
            self.write(p.ERROR, f.id, p.MetaWriter().u16(praas.DEADLINE_EXCEEDED).bytes(), b"no message")
        elif op == p.OP_MEMBERS:
            self.write(p.REPLY, f.id, b"", b'{"epoch":3,"members":[{"pid":"p1","status":"active"}]}')
        else:
            self.write(p.ERROR, f.id, p.MetaWriter().u16(praas.INVALID_ARGUMENT).bytes(), b"op")


def plain(name: str) -> bytes:
    return p.MetaWriter().str8(name).u8(0).bytes()


class WorkerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        praas._registry.clear()
        here = os.path.dirname(os.path.abspath(__file__))
        mod = os.path.join(here, "..", "..", "..", "process", "workers", "testdata", "handlers.py")
        worker.load(os.path.abspath(mod))

    def setUp(self) -> None:
        a, b = socket.socketpair()
        self.rt = FakeRuntime(a)
        conn = Conn(b)
        self.wsock = b
        praas._proc.conn = None

        def run() -> None:
            conn.write(p.HELLO, 0, p.MetaWriter().u16(p.VERSION).str8("test").bytes(), worker.hello_payload())
            f = conn.next_invocation()
            r = p.MetaReader(f.meta)
            r.u16()
            praas._proc.app, praas._proc.pid = r.str8(), r.str8()
            praas._proc.conn = conn
            worker.serve(conn)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.fns = self.rt.handshake()

    def tearDown(self) -> None:
        self.rt.sock.close()
        self.thread.join(5)
        self.wsock.close()
        self.assertFalse(self.thread.is_alive())

    def test_hello_lists_functions_and_triggers(self) -> None:
        fns = {n: (t, k) for n, t, k in self.fns}
        self.assertEqual(fns["total"], (p.TRIGGER_MULTI_SOURCE, 3))
        self.assertEqual(fns["pair"], (p.TRIGGER_BATCH, 2))
        self.assertEqual(fns["hit"], (p.TRIGGER_STANDARD, 0))
        self.assertEqual(fns["echo"], (p.TRIGGER_NONE, 0))

    def test_invoke_and_state(self) -> None:
        f = self.rt.invoke(1, plain("echo"), b"hi")
        self.assertEqual((f.type, f.payload), (p.RESULT, b"hi"))
        for want in (b"1", b"2"):
            f = self.rt.invoke(2, plain("count"))
            self.assertEqual(f.payload, want)
        self.assertEqual(self.rt.state["count"], b"2")
        f = self.rt.invoke(3, plain("whoami"))
        self.assertEqual(f.payload, b"app/p1")
        self.rt.invoke(4, plain("state-drop"), b"count")
        self.assertNotIn("count", self.rt.state)

    def test_errors(self) -> None:
        f = self.rt.invoke(1, plain("fail"))
        self.assertEqual(f.type, p.ERROR)
        self.assertEqual(p.MetaReader(f.meta).u16(), praas.FUNCTION_FAILED)
        self.assertIn(b"ValueError: it went wrong", f.payload)
        f = self.rt.invoke(2, plain("state-read"), b"absent")
        self.assertEqual(p.MetaReader(f.meta).u16(), praas.NOT_FOUND)
        f = self.rt.invoke(3, plain("nosuch"))
        self.assertEqual(p.MetaReader(f.meta).u16(), praas.NOT_FOUND)
        f = self.rt.invoke(4, plain("echo"), b"after")
        self.assertEqual(f.payload, b"after")

    def test_messages(self) -> None:
        self.rt.invoke(1, plain("py-send"), b"@self k hello")
        self.assertEqual(self.rt.mail, [("@self", "k", b"hello")])
        f = self.rt.invoke(2, plain("py-recv"), b"@any k")
        self.assertEqual(f.payload, b"p1:hello")
        f = self.rt.invoke(3, plain("py-recv"), b"@any k 0")
        self.assertEqual(p.MetaReader(f.meta).u16(), praas.DEADLINE_EXCEEDED)
        f = self.rt.invoke(4, plain("members"))
        self.assertEqual(f.payload, b"p1=active")

    def test_triggered(self) -> None:
        meta = p.MetaWriter().str8("total").u8(1).str16("r1").u32(3).bytes()
        pl = p.MetaWriter()
        for src, v in (("a", b"1"), ("b", b"2"), ("", b"3")):
            pl.str8(src).str16("total:r1").u32(len(v))
            pl.b += v
        f = self.rt.invoke(1, meta, pl.bytes())
        self.assertEqual(f.type, p.RESULT, f.payload)
        self.assertEqual(self.rt.state["total/r1"], b"6 from a,b,")

    def test_async_and_local(self) -> None:
        f = self.rt.invoke(1, plain("async-state"), b"ab")
        self.assertEqual(f.payload, b"ab|abab")
        f = self.rt.invoke(2, plain("local"), b"x")
        self.assertEqual(f.payload, b"xx!")

    def test_large_payload(self) -> None:
        big = os.urandom(3 << 20)
        f = self.rt.invoke(1, plain("echo"), big)
        self.assertEqual(f.payload, big)


class APITest(unittest.TestCase):
    def test_logger(self) -> None:
        import io
        import logging

        praas._proc.app, praas._proc.pid = "demo", "p1"
        log = praas.logger("resize")
        self.assertIs(log, praas.logger("resize"))
        handler = log.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        out = io.StringIO()
        handler.setStream(out)
        log.info("resizing")
        log.warning("two words")
        log.debug("not shown")
        self.assertEqual(
            out.getvalue(),
            "level=INFO msg=resizing app=demo pid=p1 function=resize\n"
            'level=WARNING msg="two words" app=demo pid=p1 function=resize\n',
        )

    def test_constants(self) -> None:
        self.assertEqual(praas.ANY, "@any")
        self.assertEqual(praas.SELF, "@self")

    def test_decorator_checks(self) -> None:
        with self.assertRaises(ValueError):
            praas.function(on_message=True, batch=2)
        with self.assertRaises(ValueError):
            praas.function(multi_source=0)

    def test_outside_a_worker(self) -> None:
        conn, praas._proc.conn = praas._proc.conn, None
        try:
            with self.assertRaises(praas.PraasError) as cm:
                praas.state("x")
            self.assertEqual(cm.exception.code, praas.FAILED_PRECONDITION)
        finally:
            praas._proc.conn = conn

    def test_frame_round_trip(self) -> None:
        a, b = socket.socketpair()
        with a, b:
            for payload in (b"", b"x", os.urandom(70000)):
                for part in p.encode_frame(p.RESULT, 7, b"meta", payload):
                    a.sendall(part)
            r = p.FrameReader(b)
            for payload in (b"", b"x"):
                f = r.next()
                self.assertEqual((f.type, f.id, f.meta, f.payload), (p.RESULT, 7, b"meta", payload))
            self.assertEqual(len(r.next().payload), 70000)



class BuildTest(unittest.TestCase):
    def test_wheel(self) -> None:
        import tempfile
        import zipfile

        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "_build"))
        import praas_build

        with tempfile.TemporaryDirectory() as d:
            name = praas_build.build_wheel(d)
            with zipfile.ZipFile(os.path.join(d, name)) as z:
                names = set(z.namelist())
                self.assertIn("praas/__init__.py", names)
                self.assertIn("praas/worker.py", names)
                self.assertIn("praas/py.typed", names)
                self.assertIn("praas-0.1.0.dist-info/RECORD", names)
                self.assertIn(b"Name: praas", z.read("praas-0.1.0.dist-info/METADATA"))


if __name__ == "__main__":
    unittest.main()
