"""k-means training with the model and the data in process state.

The later paper's Listing 4 in Python: every invocation of `step` reads the
points and the centroids from the process state, runs one iteration of
Lloyd's algorithm and writes the new centroids back; nothing lives in the
worker between invocations, so a worker may crash or the process may be
swapped out between any two steps without losing the model.

    praas app create kmeans --image python:$PWD/examples/python-kmeans/kmeans.py
"""

from __future__ import annotations

import json
import random
from array import array
from typing import List, Tuple

import praas

DIM = 2


def _points() -> array:  # type: ignore[type-arg]
    pts = array("d")
    pts.frombytes(praas.state("points") or b"")
    return pts


def _centroids() -> List[List[float]]:
    raw = praas.state("centroids")
    c: List[List[float]] = json.loads(raw) if raw else []
    return c


@praas.function()
def load(data: bytes) -> str:
    """Input JSON {"k": K, "points": [[x, y], ...]}: replaces the data set
    and starts the model from K of its points."""
    req = json.loads(data)
    flat = array("d", (float(v) for p in req["points"] for v in p))
    k = int(req["k"])
    n = len(flat) // DIM
    if k < 1 or n < k:
        raise praas.PraasError(praas.INVALID_ARGUMENT, f"need k >= 1 and at least k points, got k={k}, {n} points")
    rnd = random.Random(req.get("seed", 1))
    cents = [list(flat[i * DIM : (i + 1) * DIM]) for i in rnd.sample(range(n), k)]
    praas.set_state("points", flat.tobytes())
    praas.set_state("centroids", json.dumps(cents))
    praas.set_state("iteration", b"0")
    return json.dumps({"points": n, "k": k})


@praas.function(on_message=True)
def points(data: bytes) -> None:
    """A message "points" with JSON [[x, y], ...] adds points to the data set."""
    pts = _points()
    pts.extend(float(v) for p in json.loads(data) for v in p)
    praas.set_state("points", pts.tobytes())


def _assign(pts: array, cents: List[List[float]]) -> Tuple[List[List[float]], List[int], float]:  # type: ignore[type-arg]
    k = len(cents)
    sums = [[0.0] * DIM for _ in range(k)]
    counts = [0] * k
    inertia = 0.0
    for i in range(0, len(pts), DIM):
        x, y = pts[i], pts[i + 1]
        best, bd = 0, float("inf")
        for j, c in enumerate(cents):
            d = (x - c[0]) ** 2 + (y - c[1]) ** 2
            if d < bd:
                best, bd = j, d
        sums[best][0] += x
        sums[best][1] += y
        counts[best] += 1
        inertia += bd
    return sums, counts, inertia


@praas.function()
def step(data: bytes) -> str:
    """One iteration of Lloyd's algorithm over the state; returns JSON with
    the iteration, the inertia before it, how far the centroids moved, and
    the centroids."""
    pts, cents = _points(), _centroids()
    if not cents:
        raise praas.PraasError(praas.FAILED_PRECONDITION, "no model: invoke load first")
    sums, counts, inertia = _assign(pts, cents)
    moved = 0.0
    new = []
    for c, s, n in zip(cents, sums, counts):
        nc = [s[0] / n, s[1] / n] if n else c
        moved = max(moved, abs(nc[0] - c[0]) + abs(nc[1] - c[1]))
        new.append(nc)
    it = int(praas.state("iteration") or b"0") + 1
    praas.set_state("centroids", json.dumps(new))
    praas.set_state("iteration", str(it))
    return json.dumps({"iteration": it, "inertia": inertia, "moved": moved, "centroids": new})


@praas.function()
def model(data: bytes) -> str:
    """The current model: iteration, centroids and the number of points."""
    return json.dumps({
        "iteration": int(praas.state("iteration") or b"0"),
        "points": len(_points()) // DIM,
        "centroids": _centroids(),
    })
