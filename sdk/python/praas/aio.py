"""Async counterparts of praas's calls, for ``async def`` functions.

Each runs the blocking call in a thread of the event loop's default
executor, so other coroutines of the invocation go on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, Callable, List, Optional, TypeVar, Union

import praas
from praas import Message, Membership
from praas import _proto as p

T = TypeVar("T")


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()

    def run() -> T:
        return ctx.run(fn, *args)

    return await loop.run_in_executor(None, run)


async def state(key: str) -> Optional[bytes]:
    return await _in_thread(praas.state, key)


async def set_state(key: str, data: Union[p.Bytes, str]) -> None:
    await _in_thread(praas.set_state, key, data)


async def delete_state(key: str) -> None:
    await _in_thread(praas.delete_state, key)


async def state_keys() -> List[str]:
    return await _in_thread(praas.state_keys)


async def send(dest: str, key: str, data: Union[p.Bytes, str] = b"") -> None:
    await _in_thread(praas.send, dest, key, data)


async def recv(src: str, key: str, timeout: float = 1.0) -> Message:
    return await _in_thread(praas.recv, src, key, timeout)


async def invoke(dest: str, fn: str, data: Union[p.Bytes, str] = b"") -> bytes:
    """Like praas.invoke; a local async function of this module is awaited
    right in this event loop."""
    if dest == praas.SELF or (dest == praas.pid() and dest != ""):
        f = praas._registry.get(fn)
        if f is not None and f.is_async:
            token = praas._triggered.set(None)
            try:
                return praas._result_bytes(await f.handler(bytes(p.as_bytes(data))))
            finally:
                praas._triggered.reset(token)
    return await _in_thread(praas.invoke, dest, fn, data)


async def members() -> Membership:
    return await _in_thread(praas.members)
