"""Python functions of the benchmark harness (experiment 9), the
counterparts of the builtin Go functions it compares them with."""

import praas


@praas.function(name="py-echo")
def echo(data: bytes) -> bytes:
    return data


@praas.function(name="py-state-set")
def state_set(data: bytes) -> None:
    k, _, v = data.partition(b"=")
    praas.set_state(k.decode(), v)


@praas.function(name="py-state-get")
def state_get(data: bytes) -> bytes:
    v = praas.state(data.decode())
    if v is None:
        raise praas.PraasError(praas.NOT_FOUND, "absent")
    return v


@praas.function(name="py-send")
def send(data: bytes) -> None:
    dest, key, rest = data.split(b" ", 2)
    praas.send(dest.decode(), key.decode(), rest)


@praas.function(name="py-recv")
def recv(data: bytes) -> bytes:
    src, key, ms = data.decode().split()
    return praas.recv(src, key, int(ms) / 1000).data


@praas.function(name="py-state-loop")
def state_loop(data: bytes) -> None:
    """N set_state and N state calls of a 64-byte value."""
    v = b"v" * 64
    for _ in range(int(data)):
        praas.set_state("loop", v)
        praas.state("loop")
