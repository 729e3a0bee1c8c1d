"""A webhook receiver for the benchmarks: a bare ASGI app that answers every POST with 204 at
once and records, per request, when it arrived and how long after the event it did.

Served by ``bench/events.py`` under granian (1 worker, uvloop, no access log) on 127.0.0.1::

    granian --interface asgi --host 127.0.0.1 --port 8077 --workers 1 --loop uvloop receiver:app

* ``POST <any path>``: 204, empty. Recorded: the path (one per endpoint), the ``webhook-id``
  header (the event's id, the same on every retry), and the arrival time minus the event's
  ``timestamp`` (its audit entry's time, written by orgplane on the same machine's clock).
  Signatures are not checked here: the tests verify them with ``standardwebhooks``; the bench
  measures what orgplane costs, not the receiver.
* ``GET /stats``: JSON, ``count`` (requests), ``distinct`` (distinct (path, webhook-id)),
  ``by_path``, ``first`` / ``last`` arrival (epoch seconds); with ``?latencies=1`` also every
  latency in ms, in arrival order.
* ``GET /reset``: forget everything recorded (between runs).
* ``GET /hello``: 200, for the start-up check.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson


class State:
    def __init__(self) -> None:
        self.count = 0
        self.seen: set[tuple[str, bytes]] = set()
        self.by_path: dict[str, int] = {}
        self.first: float | None = None
        self.last: float | None = None
        self.latencies_ms: list[float] = []
        self.unreadable = 0


STATE = State()
_TIMESTAMPS: dict[str, float] = {}


def _event_time(text: str) -> float:
    # Many deliveries of one event carry the same timestamp; parsing is the costly part.
    at = _TIMESTAMPS.get(text)
    if at is None:
        at = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        if len(_TIMESTAMPS) > 100_000:
            _TIMESTAMPS.clear()
        _TIMESTAMPS[text] = at
    return at


async def _respond(send: Any, status: int, body: bytes = b"", kind: bytes = b"") -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if kind:
        headers.append((b"content-type", kind))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if scope["method"] == "POST":
        arrived = time.time()
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        state = STATE
        state.count += 1
        state.by_path[path] = state.by_path.get(path, 0) + 1
        if state.first is None:
            state.first = arrived
        state.last = arrived
        webhook_id = next((v for k, v in scope["headers"] if k == b"webhook-id"), b"")
        state.seen.add((path, webhook_id))
        try:
            stamp = orjson.loads(b"".join(chunks))["timestamp"]
            state.latencies_ms.append((arrived - _event_time(stamp)) * 1000)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            state.unreadable += 1
        await _respond(send, 204)
        return
    if path == "/stats":
        state = STATE
        body: dict[str, Any] = {
            "count": state.count,
            "distinct": len(state.seen),
            "by_path": state.by_path,
            "first": state.first,
            "last": state.last,
            "unreadable": state.unreadable,
        }
        if b"latencies=1" in scope.get("query_string", b""):
            body["latencies_ms"] = state.latencies_ms
        await _respond(send, 200, orjson.dumps(body), b"application/json")
    elif path == "/reset":
        STATE.__init__()  # type: ignore[misc]
        await _respond(send, 204)
    elif path == "/hello":
        await _respond(send, 200, b"ok", b"text/plain")
    else:
        await _respond(send, 404)
