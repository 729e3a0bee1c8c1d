"""Kept-alive HTTP/1.1 connections for deliveries: a request written as bytes, the answer parsed
by httptools (the parser uvicorn uses), a pool per destination.

A delivery is always the same request: a POST of a JSON body with a handful of headers, to an
address already checked, whose answer matters only for its status and a capped excerpt. General
clients pay for what deliveries never use (redirects, cookies, proxies, streaming APIs, URL
objects): per request, on this project's 2-core machine, httpx costs about 2,600 µs of CPU,
aiohttp 300 µs, a Rust-backed client 160 µs, and this module 55 µs (``bench/events.py``'s
throughput part, and docs/performance.md, "Events and webhooks"). The worker's target (2,000
deliveries a second on one core, with everything else a delivery does) leaves no room for the
others.

What it does, and does not:

* a connection per request at a time; up to ``per_destination`` open to one destination (its
  address, port, scheme and TLS server name), the idle ones reused for ``idle_seconds``;
* TLS with the system's trust store (or the context given), the server name checked against
  the certificate (``server_hostname``), sent in SNI;
* the answer's status, and its body up to ``max_body`` bytes (the connection is closed when the
  body is longer, or when the server asks for it, or when the answer ends at the connection's
  close); 1xx answers are skipped;
* a request on a reused connection that the server had closed meanwhile (no byte of an answer
  came back) is sent once more on a new connection: deliveries are at least once, and
  receivers deduplicate on ``webhook-id``;
* no redirects (a 3xx is an answer like any other), no proxies, no compression, no HTTP/2.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

import httptools


class HTTPFailure(Exception):
    """The request got no complete answer; the message says why."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


@dataclass(frozen=True)
class Destination:
    host: str  # the address to connect to
    port: int
    tls_name: str | None  # the name TLS checks and sends in SNI; None: plain http


class _Connection(asyncio.Protocol):
    """One connection, one request at a time."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.idle_since = time.monotonic()
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Answer] | None = None
        self._body = bytearray()
        self._received = False
        self._headers_done = False
        # The answer says where its body ends (a length, or chunks): a close before is a failure.
        self._framed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HTTPFailure("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(HTTPFailure(f"invalid HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is None or self._answer.done():
            return
        if self._headers_done and not self._framed:
            # An answer without a length ends where the connection does.
            self._complete()
            return
        why = (
            "the connection closed before the answer ended"
            if self._received
            else ("the connection closed without an answer")
        )
        self._fail(HTTPFailure(why if exc is None else f"{why}: {exc}"))

    # httptools callbacks

    def on_header(self, name: bytes, _: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, chunk: bytes) -> None:
        room = self.max_body - len(self._body)
        if len(chunk) > room:
            # Longer than what is read of an answer: what came is kept, the rest never read.
            self._body += chunk[:room]
            self._complete()
            self.close()
            return
        self._body += chunk

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            # An interim answer (100 Continue, 103 Early Hints): the final one follows.
            self._body.clear()
            self._headers_done = self._framed = False
            return
        if not self._parser.should_keep_alive():
            self._complete()
            self.close()
            return
        self._complete()

    # used by the pool

    @property
    def reusable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    async def request(self, data: bytes) -> Answer:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._body = bytearray()
        self._received = self._headers_done = self._framed = False
        self.transport.write(data)
        try:
            return await self._answer
        except BaseException:
            # Timed out or cancelled mid-answer: the connection's state is unknown.
            self.close()
            raise
        finally:
            self._answer = None
            self.idle_since = time.monotonic()

    @property
    def sent_nothing_back(self) -> bool:
        return not self._received

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _complete(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(Answer(self._parser.get_status_code(), bytes(self._body)))

    def _fail(self, exc: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)
        self.close()


@dataclass
class _Slots:
    """A destination's connections: a limit on the open ones, the idle ones, newest last."""

    limit: asyncio.Semaphore
    idle: list[_Connection] = field(default_factory=list)
    users: int = 0


class Pool:
    """Connections to the destinations deliveries go to."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        per_destination: int = 32,
        idle_seconds: float = 30.0,
        max_body: int = 64 * 1024,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.per_destination = per_destination
        self.idle_seconds = idle_seconds
        self.max_body = max_body
        self._tls = tls
        self._slots: dict[Destination, _Slots] = {}
        self._swept = time.monotonic()

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def post(
        self, to: Destination, target: str, headers: Mapping[str, str], body: bytes
    ) -> Answer:
        """POST ``body`` to ``target`` (the path and query) at ``to``, with ``headers`` (which
        name ``Host``). ``HTTPFailure`` or ``OSError`` when no answer came."""
        data = _request(target, headers, body)
        if time.monotonic() - self._swept > self.idle_seconds:
            self._sweep()
        slots = self._slots.get(to)
        if slots is None:
            slots = self._slots[to] = _Slots(asyncio.Semaphore(self.per_destination))
        slots.users += 1
        try:
            async with slots.limit:
                connection = self._idle(slots)
                if connection is not None:
                    try:
                        return await self._use(slots, connection, data)
                    except HTTPFailure:
                        if not connection.sent_nothing_back:
                            raise
                        # Closed by the server while idle: once more, on a new connection.
                connection = await self._connect(to)
                return await self._use(slots, connection, data)
        finally:
            slots.users -= 1
            if not slots.users and not slots.idle:
                self._slots.pop(to, None)

    def _sweep(self) -> None:
        """Close the connections idle for too long, and forget the destinations left without
        any (a worker sending to many endpoints keeps open only what it uses)."""
        now = self._swept = time.monotonic()
        for to, slots in list(self._slots.items()):
            for connection in slots.idle:
                if not connection.reusable or now - connection.idle_since >= self.idle_seconds:
                    connection.close()
            slots.idle = [c for c in slots.idle if not c.closed]
            if not slots.users and not slots.idle:
                del self._slots[to]

    def _idle(self, slots: _Slots) -> _Connection | None:
        now = time.monotonic()
        while slots.idle:
            connection = slots.idle.pop()
            if connection.reusable and now - connection.idle_since < self.idle_seconds:
                return connection
            connection.close()
        return None

    async def _use(self, slots: _Slots, connection: _Connection, data: bytes) -> Answer:
        answer = await connection.request(data)
        if connection.reusable:
            slots.idle.append(connection)
        return answer

    async def _connect(self, to: Destination) -> _Connection:
        tls = self._tls_context() if to.tls_name is not None else None
        async with asyncio.timeout(self.connect_timeout):
            _, connection = await asyncio.get_running_loop().create_connection(
                lambda: _Connection(self.max_body),
                to.host,
                to.port,
                ssl=tls,
                server_hostname=to.tls_name,
            )
        return connection

    async def close(self) -> None:
        slots, self._slots = self._slots, {}
        for one in slots.values():
            for connection in one.idle:
                connection.close()


def _request(target: str, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"POST {target} HTTP/1.1"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise HTTPFailure(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
