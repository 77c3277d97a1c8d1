"""Functions the worker tests run (process/workers, cmd/praas)."""

import asyncio
import os
import signal
import sys
import time

import praas
import praas.aio


@praas.function()
def echo(data: bytes) -> bytes:
    return data


@praas.function()
def noop(data: bytes) -> None:
    return None


@praas.function()
def count(data: bytes) -> str:
    n = int(praas.state("count") or b"0") + 1
    praas.set_state("count", str(n))
    return str(n)


@praas.function(name="state-put")
def state_put(data: bytes) -> None:
    k, _, v = data.partition(b"=")
    praas.set_state(k.decode(), v)


@praas.function(name="state-read")
def state_read(data: bytes) -> bytes:
    v = praas.state(data.decode())
    if v is None:
        raise praas.PraasError(praas.NOT_FOUND, f"no state key {data.decode()!r}")
    return v


@praas.function(name="state-drop")
def state_drop(data: bytes) -> str:
    praas.delete_state(data.decode())
    return ",".join(praas.state_keys())


@praas.function()
def shout(data: bytes) -> None:
    """Prints to stdout and stderr, which are the process log."""
    print("to stdout:", data.decode())
    print("to stderr:", data.decode(), file=sys.stderr)


@praas.function()
def fail(data: bytes) -> bytes:
    raise ValueError("it went wrong")


@praas.function()
def crash(data: bytes) -> bytes:
    """Sets state, then the worker dies by SIGKILL mid-invocation."""
    praas.set_state("before-crash", data)
    os.kill(os.getpid(), signal.SIGKILL)
    return b"unreachable"


@praas.function()
def garble(data: bytes) -> bytes:
    """Writes a malformed frame on the protocol socket, then waits."""
    os.write(3, b"\xff" * 16)
    time.sleep(60)
    return b"unreachable"


@praas.function()
def hang(data: bytes) -> bytes:
    """Records its worker's pid (as its pid namespace sees it) and start
    time (clock ticks since boot, as the host sees it), then waits, to be
    killed from outside."""
    with open("/proc/self/stat") as f:
        start = f.read().rsplit(")", 1)[1].split()[19]
    praas.set_state("hang-pid", f"{os.getpid()} {start}")
    time.sleep(float(data or b"60"))
    return b"woke"


@praas.function()
def whoami(data: bytes) -> str:
    return f"{praas.app()}/{praas.pid()}"


@praas.function(name="py-send")
def py_send(data: bytes) -> None:
    """Input "DEST KEY DATA"."""
    dest, key, rest = data.decode().split(" ", 2)
    praas.send(dest, key, rest)


@praas.function(name="py-recv")
def py_recv(data: bytes) -> str:
    """Input "SRC KEY [TIMEOUT_S]": returns "SOURCE:DATA"."""
    parts = data.decode().split()
    timeout = float(parts[2]) if len(parts) > 2 else 1.0
    m = praas.recv(parts[0], parts[1], timeout)
    return f"{m.source}:{m.data.decode()}"


@praas.function(name="py-invoke")
def py_invoke(data: bytes) -> bytes:
    """Input "DEST FUNCTION DATA"."""
    dest, fn, rest = data.decode().split(" ", 2)
    return praas.invoke(dest, fn, rest)


@praas.function()
def members(data: bytes) -> str:
    m = praas.members()
    return ",".join(f"{x.pid}={x.status}" for x in m.members)


@praas.function(multi_source=3)
def total(data: bytes) -> None:
    t = praas.triggered()
    assert t is not None
    s = sum(int(m.data) for m in t.messages)
    srcs = ",".join(m.source for m in t.messages)
    praas.set_state("total/" + t.key, f"{s} from {srcs}")


@praas.function(batch=2)
def pair(data: bytes) -> None:
    t = praas.triggered()
    assert t is not None
    praas.set_state("pair", b"+".join(m.data for m in t.messages))


@praas.function(on_message=True)
def hit(data: bytes) -> None:
    t = praas.triggered()
    assert t is not None and len(t.messages) == 1
    praas.set_state("hit/" + t.key, data)


@praas.function()
async def slow_double(data: bytes) -> bytes:
    await asyncio.sleep(0.01)
    return data + data


@praas.function(name="async-state")
async def async_state(data: bytes) -> bytes:
    await praas.aio.set_state("async", data)
    a, b = await asyncio.gather(praas.aio.state("async"), praas.aio.invoke(praas.SELF, "slow_double", data))
    return (a or b"") + b"|" + b


@praas.function(name="local")
def local(data: bytes) -> bytes:
    """A local invoke runs in this worker: it sees no trigger."""
    return praas.invoke(praas.SELF, "slow_double", data) + praas.invoke(praas.SELF, "echo", b"!")


@praas.function(name="state-loop")
def state_loop(data: bytes) -> None:
    """Input "N": N set_state and N state calls of a 64-byte value."""
    v = b"v" * 64
    for i in range(int(data)):
        praas.set_state("k", v)
        praas.state("k")


@praas.function(name="msg-loop")
def msg_loop(data: bytes) -> None:
    """Input "N": N sends to this process and N recvs of them."""
    for i in range(int(data)):
        praas.send(praas.SELF, "m", b"x" * 64)
        praas.recv(praas.SELF, "m", 5.0)
