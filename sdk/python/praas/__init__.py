"""praas: Python functions for cloud processes (Process-as-a-Service).

A module of functions is an image: `praas app create NAME --image
python:/abs/path/handlers.py`. Every process of the app runs the praas
runtime, which keeps the process's state, mailbox and triggers, and a pool
of Python workers that run the functions::

    import praas

    @praas.function()
    def count(data: bytes) -> bytes:
        n = int(praas.state("n") or b"0") + 1
        praas.set_state("n", str(n))
        return str(n).encode()

    @praas.function(multi_source=3)
    def total(data: bytes) -> str:
        t = praas.triggered()
        assert t is not None
        return str(sum(int(m.data) for m in t.messages))

Functions take their input as bytes and return bytes, str or None. They may
be ``async def``; their async counterparts of the calls are in praas.aio.
State lives in the runtime, not in the worker: a value read is a copy, and
a crashed worker loses nothing but the invocation it ran.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

from . import _proto as p

__all__ = [
    "SELF",
    "ANY",
    "Message",
    "Member",
    "Membership",
    "Trigger",
    "PraasError",
    "function",
    "state",
    "set_state",
    "delete_state",
    "state_keys",
    "send",
    "recv",
    "invoke",
    "members",
    "pid",
    "app",
    "triggered",
    "logger",
]

SELF = "@self"
"""The calling process, for send, recv and invoke (invoke(SELF, ...) of a
function of this module runs it right here)."""
ANY = "@any"
"""Any source, for recv (the Go SDK's praas.Any)."""

# Error codes (the Go package errs).
NOT_FOUND = 1
ALREADY_EXISTS = 2
INVALID_ARGUMENT = 3
FAILED_PRECONDITION = 4
RESOURCE_EXHAUSTED = 5
UNAVAILABLE = 6
UNAUTHENTICATED = 7
PERMISSION_DENIED = 8
DEADLINE_EXCEEDED = 9
INTERNAL = 10
FUNCTION_FAILED = 11
OUTCOME_UNKNOWN = 12


class PraasError(Exception):
    """An error with a praas error code: raised by calls that fail (recv
    timing out is DEADLINE_EXCEEDED), and raised by a function to fail its
    invocation with that code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Message:
    source: str
    """The sending pid; empty for a message from outside the app."""
    key: str
    data: bytes


@dataclass(frozen=True)
class Member:
    pid: str
    status: str
    address: str = ""


@dataclass(frozen=True)
class Membership:
    epoch: int
    members: Tuple[Member, ...]


@dataclass(frozen=True)
class Trigger:
    """What started a triggered invocation: the invocation key (the K of
    "F:K"; empty for a batch) and the messages, in arrival order."""

    key: str
    messages: Tuple[Message, ...]


Result = Union[bytes, bytearray, memoryview, str, None]
Handler = Callable[[bytes], Any]


@dataclass(frozen=True)
class _Function:
    name: str
    handler: Handler
    trigger: int
    n: int
    is_async: bool


_registry: Dict[str, _Function] = {}
_registry_lock = threading.Lock()

F = TypeVar("F", bound=Callable[..., Any])


def function(
    name: Optional[str] = None,
    *,
    on_message: bool = False,
    multi_source: Optional[int] = None,
    batch: Optional[int] = None,
) -> Callable[[F], F]:
    """Registers the decorated function (under its own name unless name is
    given). Trigger options, at most one: on_message (every message with key
    "NAME" or "NAME:K" invokes it with the message's data), multi_source=n
    (it runs once n messages with the same key "NAME:K" have arrived),
    batch=n (once n messages addressed to it arrived, any K); a triggered
    invocation gets its messages from triggered()."""
    if sum([on_message, multi_source is not None, batch is not None]) > 1:
        raise ValueError("praas.function: give at most one of on_message, multi_source, batch")
    trigger, n = p.TRIGGER_NONE, 0
    if on_message:
        trigger = p.TRIGGER_STANDARD
    elif multi_source is not None:
        trigger, n = p.TRIGGER_MULTI_SOURCE, multi_source
    elif batch is not None:
        trigger, n = p.TRIGGER_BATCH, batch
    if trigger in (p.TRIGGER_MULTI_SOURCE, p.TRIGGER_BATCH) and n < 1:
        raise ValueError("praas.function: a trigger needs a message count of at least 1")

    def register(fn: F) -> F:
        fname = name or fn.__name__
        if not fname or len(fname.encode()) > 255:
            raise ValueError(f"praas.function: bad function name {fname!r}")
        with _registry_lock:
            if fname in _registry:
                raise ValueError(f"praas.function: {fname!r} registered twice")
            _registry[fname] = _Function(fname, fn, trigger, n, inspect.iscoroutinefunction(fn))
        return fn

    return register


def functions() -> List[Tuple[str, int, int]]:
    """The registered functions as (name, trigger kind, n), sorted."""
    with _registry_lock:
        return sorted((f.name, f.trigger, f.n) for f in _registry.values())


class _Process:
    """The worker's process: set by the worker at its start."""

    def __init__(self) -> None:
        self.conn: Optional[Any] = None
        self.app = ""
        self.pid = ""


_proc = _Process()
_triggered: contextvars.ContextVar[Optional[Trigger]] = contextvars.ContextVar("praas_triggered", default=None)


def _connection() -> Any:
    if _proc.conn is None:
        raise PraasError(FAILED_PRECONDITION, "praas: not running in a praas worker")
    return _proc.conn


def pid() -> str:
    """This process's id."""
    return _proc.pid


def app() -> str:
    """This process's application."""
    return _proc.app


class _LogFormatter(logging.Formatter):
    """Formats records as the Go SDK's logger does: key=value text, no time
    (the process log stamps every line)."""

    def __init__(self, function: str) -> None:
        super().__init__()
        self.function = function

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if msg == "" or any(c in msg for c in ' "=\n'):
            msg = json.dumps(msg)
        line = f"level={record.levelname} msg={msg} app={_proc.app} pid={_proc.pid}"
        if self.function:
            line += f" function={self.function}"
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


def logger(function: str = "") -> logging.Logger:
    """A logger whose records go to the process log (the worker's stderr,
    which praas logs shows), one line each, as
    ``level=INFO msg=... app=A pid=P function=F``. print() and the logging
    module's own handlers reach the process log too; this one formats as
    the Go SDK's logger does."""
    log = logging.getLogger("praas.function." + function if function else "praas.process")
    with _registry_lock:
        if not log.handlers:
            h = logging.StreamHandler(sys.stderr)
            h.setFormatter(_LogFormatter(function))
            log.addHandler(h)
            log.setLevel(logging.INFO)
            log.propagate = False
    return log


def triggered() -> Optional[Trigger]:
    """In an invocation started by messages, its key and messages; else None."""
    return _triggered.get()


def state(key: str) -> Optional[bytes]:
    """The value stored under key in the process state (a copy), or None."""
    f = _connection().call(p.OP_GET, p.MetaWriter().str16(key).bytes())
    if f.meta[:1] != b"\x01":
        return None
    out: bytes = f.payload
    return out


def set_state(key: str, data: Union[p.Bytes, str]) -> None:
    """Stores data (str as UTF-8) under key; fails with RESOURCE_EXHAUSTED,
    changing nothing, past the process's state limit."""
    _connection().call(p.OP_SET, p.MetaWriter().str16(key).bytes(), p.as_bytes(data))


def delete_state(key: str) -> None:
    """Removes key from the process state."""
    _connection().call(p.OP_DELETE, p.MetaWriter().str16(key).bytes())


def state_keys() -> List[str]:
    """The keys in the process state, sorted."""
    f = _connection().call(p.OP_KEYS)
    r = p.MetaReader(f.payload)
    return [r.str16() for _ in range(r.u32())]


def send(dest: str, key: str, data: Union[p.Bytes, str] = b"") -> None:
    """Puts data into dest's mailbox (a pid of this app, or SELF) under key;
    returns once it is there (or in dest's durable backup queue)."""
    _connection().call(p.OP_SEND, p.MetaWriter().str8(dest).str16(key).bytes(), p.as_bytes(data))


def recv(src: str, key: str, timeout: float = 1.0) -> Message:
    """The oldest unread message with key from src (a pid, SELF or ANY),
    waiting up to timeout seconds; PraasError DEADLINE_EXCEEDED if none came."""
    ms = max(0, int(timeout * 1000))
    f = _connection().call(p.OP_RECV, p.MetaWriter().str8(src).str16(key).u64(ms).bytes())
    r = p.MetaReader(f.meta)
    return Message(r.str8(), r.str16(), f.payload)


def invoke(dest: str, fn: str, data: Union[p.Bytes, str] = b"") -> bytes:
    """Runs function fn in process dest with data and returns its result.
    With dest SELF (or this pid) and a function of this module, it runs
    right here, without a copy; otherwise through the runtime."""
    if dest == SELF or (dest == _proc.pid and dest != ""):
        f = _registry.get(fn)
        if f is not None:
            return _run_local(f, data)
    out: bytes = _connection().call(p.OP_INVOKE, p.MetaWriter().str8(dest).str8(fn).bytes(), p.as_bytes(data)).payload
    return out


def members() -> Membership:
    """The application's processes as last known to the runtime."""
    f = _connection().call(p.OP_MEMBERS)
    return _membership(f.payload)


def _membership(payload: bytes) -> Membership:
    j = json.loads(payload or b"{}")
    return Membership(
        int(j.get("epoch", 0)),
        tuple(Member(m.get("pid", ""), m.get("status", ""), m.get("address", "")) for m in j.get("members") or []),
    )


def _result_bytes(out: Result) -> bytes:
    b = p.as_bytes(out)
    return b if isinstance(b, bytes) else bytes(b)


def _run_local(f: _Function, data: Union[p.Bytes, str]) -> bytes:
    inp = bytes(p.as_bytes(data))
    ctx = contextvars.copy_context()
    ctx.run(_triggered.set, None)
    if not f.is_async:
        return _result_bytes(ctx.run(f.handler, inp))
    # A coroutine cannot be run to completion from inside a running loop of
    # this thread: run it in a thread of its own.
    box: List[Any] = []

    def run() -> None:
        try:
            box.append(("ok", asyncio.run(f.handler(inp))))
        except BaseException as e:  # noqa: BLE001 - re-raised below
            box.append(("err", e))

    t = threading.Thread(target=ctx.run, args=(run,))
    t.start()
    t.join()
    kind, v = box[0]
    if kind == "err":
        raise v
    return _result_bytes(v)
