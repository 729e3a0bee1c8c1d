"""The NATS JetStream sink: every event, published to the operator's JetStream.

On when ``ORGPLANE_EVENTS_NATS_URL`` is set, it runs where webhooks are delivered (each
``orgplane serve`` process, or ``orgplane worker`` processes). Every audit entry is published, as
``core.events.payload`` renders it for the whole tenant (the sink is the operator's: nothing is
scrubbed), on the subject ``<prefix>.<tenant>.<type>``: the tenant root's public id, then the
event type, whose dots are subject separators (``orgplane.*.org.>`` subscribes to every org
event). Its ``Nats-Msg-Id`` header is the event's id, so JetStream drops a republished event
within the stream's duplicate window (two minutes unless the stream says otherwise).

The sink is a consumer of the event log (``core.events.positions``, consumer ``nats``), starting
each tenant at its first event. Per tenant it reads the entries after its position, publishes
each and waits for JetStream's acknowledgement, then moves the position past them: at least
once, a crash between the two republishes what the duplicate window then drops. On PostgreSQL
the position row stays locked (``SKIP LOCKED``) while its batch is published, so several
processes share the tenants; on SQLite, whose one write transaction cannot be held across the
network, the position is read unlocked and only ever moved forward.

A NATS outage loses nothing: the events wait in the audit log, the sink retries with a backoff
(0.5 s doubling to ``ORGPLANE_EVENTS_NATS_BACKOFF_MAX_SECONDS``), logs the outage once (the
server's address without credentials) and its end, and picks up where it left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
import orjson

from orgplane.config import Settings
from orgplane.core import events
from orgplane.core.events import positions
from orgplane.db.engine import Database, Reader, Tx

CONSUMER = "nats"
BATCH = 500
PUBLISH_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2
FIRST_BACKOFF = 0.5
# What a NATS outage raises: the client's errors (refused, closed, timed out, no stream answering,
# JetStream's own API errors) and the socket's.
_OUTAGE = (nats.errors.Error, OSError, TimeoutError)

log = logging.getLogger("orgplane.events.nats")


def redacted(url: str) -> str:
    """The servers of a NATS URL, without user, password or token: what the log may show."""
    shown = []
    for part in filter(None, (p.strip() for p in url.split(","))):
        parts = urlsplit(part)
        host = parts.hostname or "?"
        if ":" in host:
            host = f"[{host}]"
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            port = ""
        shown.append(f"{parts.scheme}://{host}{port}")
    return ",".join(shown)


class Unavailable(Exception):
    """NATS could not be reached, or JetStream did not take an event (the cause is chained)."""


@contextlib.asynccontextmanager
async def _talking_to_nats() -> AsyncIterator[None]:
    try:
        yield
    except _OUTAGE as exc:
        raise Unavailable(type(exc).__name__) from exc


def subject(prefix: str, tenant: str, event_type: str) -> str:
    return f"{prefix}.{tenant}.{event_type}"


class NatsSink:
    """Publishes the events past its positions to JetStream; ``run`` keeps at it until stopped."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.url = settings.events_nats_url
        self.stream = settings.events_nats_stream
        self.prefix = settings.events_nats_subject_prefix
        self.backoff_max = settings.events_nats_backoff_max_seconds
        self.poll = settings.events_nats_poll_seconds
        self._nc: Any = None
        self._js: Any = None
        self._down_since: float | None = None

    async def _jetstream(self) -> Any:
        """The JetStream context, connecting (and making sure the stream exists) if needed."""
        if self._nc is not None and self._nc.is_connected:
            return self._js

        async def quiet(_: Exception) -> None:
            pass  # the outage is logged once by the run loop, without the client's details

        await self._disconnect()
        servers = [p.strip() for p in self.url.split(",") if p.strip()]
        async with _talking_to_nats():
            # Each server is tried twice at most (0 would mean forever); the run loop's
            # backoff does the retrying, and a lost connection is made anew on the next pass.
            nc = await asyncio.wait_for(
                nats.connect(
                    servers=servers,
                    name="orgplane",
                    allow_reconnect=False,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0,
                    connect_timeout=CONNECT_TIMEOUT,
                    error_cb=quiet,
                ),
                timeout=4 * CONNECT_TIMEOUT * len(servers),
            )
            try:
                js = nc.jetstream(timeout=PUBLISH_TIMEOUT)
                try:
                    await js.stream_info(self.stream)
                except nats.js.errors.NotFoundError:
                    await js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"])
                    log.info("NATS sink: created the stream %s for %s.>", self.stream, self.prefix)
            except BaseException:
                await nc.close()
                raise
        self._nc, self._js = nc, js
        return js

    async def _disconnect(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    async def close(self) -> None:
        await self._disconnect()

    async def publish_pending(self, stop: asyncio.Event | None = None) -> int:
        """Publish every tenant's events past the sink's position (until ``stop`` is set). How
        many were published; raises ``Unavailable`` when NATS is."""
        js = await self._jetstream()
        async with self.db.read() as conn:
            behind, new = await positions.tenants_behind_or_new(conn, CONSUMER)
        if new:
            await self.db.transaction(positions.ensure_positions_at_start, CONSUMER, new)
        published = 0
        for root_id in behind:
            while stop is None or not stop.is_set():
                count = await self._publish_tenant(js, root_id)
                published += count
                if count < BATCH:
                    break
        return published

    async def _publish_tenant(self, js: Any, root_id: int) -> int:
        if self.db.is_sqlite:
            async with self.db.read() as conn:
                last_seq = await positions.position(conn, CONSUMER, root_id)
                if last_seq is None:
                    return 0
                entries = await self._publish_after(conn, js, root_id, last_seq)
            if entries:
                await self.db.transaction(
                    positions.move_position, CONSUMER, root_id, entries[-1].seq
                )
            return len(entries)
        return await self.db.transaction(self._publish_claimed, js, root_id)

    async def _publish_claimed(self, tx: Tx, js: Any, root_id: int) -> int:
        last_seq = await positions.take_position(tx, CONSUMER, root_id)
        if last_seq is None:
            return 0  # another process is publishing this tenant
        entries = await self._publish_after(tx.conn, js, root_id, last_seq)
        if entries:
            await positions.move_position(tx, CONSUMER, root_id, entries[-1].seq)
        return len(entries)

    async def _publish_after(self, conn: Reader, js: Any, root_id: int, last_seq: int) -> list[Any]:
        """Publish the tenant's next entries after ``last_seq``, each acknowledged before the
        next is sent (the stream keeps the log's order). The entries published."""
        entries = await positions.entries_after(conn, root_id, last_seq, BATCH)
        if not entries:
            return []
        tenant = await positions.org_public_id(conn, root_id)
        for entry in entries:
            event = events.payload(entry, entry.org_public_id)
            async with _talking_to_nats():
                await js.publish(
                    subject(self.prefix, tenant or str(root_id), entry.action),
                    orjson.dumps(event),
                    stream=self.stream,
                    headers={"Nats-Msg-Id": event["id"]},
                )
        return entries

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: publish what is new, then wait ``poll`` seconds; while NATS is
        unreachable, wait a growing backoff instead."""
        backoff = FIRST_BACKOFF
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                wait = self.poll
                try:
                    published = await self.publish_pending(stop)
                except Unavailable as exc:
                    self._unavailable(exc.__cause__ or exc)
                    await self._disconnect()
                    wait, backoff = backoff, min(backoff * 2, self.backoff_max)
                except Exception:
                    log.exception("NATS sink pass failed; will retry")
                else:
                    backoff = FIRST_BACKOFF
                    self._available()
                    if published:
                        wait = 0
                await asyncio.wait({stopped}, timeout=wait)
        finally:
            stopped.cancel()
            await self.close()

    def _unavailable(self, exc: BaseException) -> None:
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        reason = type(exc).__name__
        if isinstance(exc, nats.js.errors.APIError) and exc.description:
            reason += f": {exc.description}"
        log.warning(
            "NATS sink: cannot publish to %s (%s); retrying with backoff, events wait in the "
            "audit log",
            redacted(self.url),
            reason,
        )

    def _available(self) -> None:
        if self._down_since is None:
            return
        down = time.monotonic() - self._down_since
        self._down_since = None
        log.warning("NATS sink: publishing to %s again after %.0f s", redacted(self.url), down)
