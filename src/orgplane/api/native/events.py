"""The event log of an org's subtree: polled a page at a time, or streamed as Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

import msgspec
from litestar import Router, get
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import Stream

from orgplane.api.deps import PrincipalDep, Services, ServicesDep
from orgplane.api.native.openapi import problems
from orgplane.api.native.orgs import Limit, OrgId
from orgplane.api.native.schemas import Event, EventData, EventPage
from orgplane.core.access.principal import Principal
from orgplane.core.errors import OrgplaneError
from orgplane.core.events import queries

# A stream polls the log this often while it has nothing to send, sends a comment line after
# this long without an event (proxies close quiet connections), and ends after its lifetime:
# the client reconnects with Last-Event-ID (a server shutting down waits for open responses
# at most that long, and a revoked key streams no longer than that).
POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
STREAM_SECONDS = 120.0
STREAM_BATCH = 100
SSE = "text/event-stream"

After = Annotated[
    str | None,
    QueryParameter(
        max_length=512,
        description="A `next_cursor` (or a streamed event's `id`): the events after it. "
        "Absent: from the oldest event kept; `now`: from the current end of the log.",
    ),
]
Types = Annotated[
    list[str] | None,
    QueryParameter(
        name="type",
        description="Event types, `*` standing for any run of characters (`org.*`, "
        "`*.deleted`): repeated or comma-separated; all types if absent",
    ),
]
_ENCODER = msgspec.json.Encoder()


def event_out(payload: dict[str, Any]) -> Event:
    data = payload["data"]
    return Event(
        id=payload["id"],
        type=payload["type"],
        timestamp=payload["timestamp"],
        data=EventData(
            org_id=data["org_id"],
            sequence=data["sequence"],
            actor=data["actor"],
            actor_key_id=data["actor_key_id"],
            surface=data["surface"],
            target_type=data["target_type"],
            target_id=data["target_id"],
            before=data["before"],
            after=data["after"],
            request_id=data["request_id"],
        ),
    )


@get(
    "/{org_id:str}/events",
    summary="Events of the organization and its subtree",
    responses=problems(),
    description="Every audited change to this organization or a descendant, as an event, "
    "oldest first from `after`. Each page reads a bounded stretch of the tenant's log, so a "
    "page may hold fewer than `limit` events (even none) while more follow: keep polling with "
    "`next_cursor`, which is always present and never goes back. Needs `audit:read`.",
)
async def get_events(
    org_id: OrgId,
    services: ServicesDep,
    principal: PrincipalDep,
    after: After = None,
    types: Types = None,
    limit: Limit = queries.DEFAULT_LIMIT,
) -> EventPage:
    position = queries.position_of(after)
    patterns = queries.parse_types(types)
    async with services.db.read() as conn:
        org = await queries.target(conn, principal, org_id)
        page = await queries.page(
            conn, principal, org, after=position, limit=queries.check_limit(limit), types=patterns
        )
    return EventPage([event_out(p) for p in queries.payloads(page.rows)], page.next_cursor)


@get(
    "/{org_id:str}/events/stream",
    summary="Stream the events of the organization and its subtree (Server-Sent Events)",
    responses=problems(),
    media_type=SSE,
    description=(
        "The events of `GET /orgs/{org_id}/events` as `text/event-stream`: each message has "
        "`id:` (a cursor), `event:` (the type) and `data:` (the event as JSON). It sends what "
        "follows the `Last-Event-ID` header (or `after`, as for the page: from the oldest event "
        "without either, from the end of the log with `now`), then each new event as it "
        f"commits (within ~{POLL_SECONDS} s), with a `: keep-alive` comment every "
        f"{HEARTBEAT_SECONDS:.0f} s of quiet. A stream ends after {STREAM_SECONDS:.0f} s: "
        "reconnect with the last `id` as `Last-Event-ID` (EventSource does) and nothing is "
        "lost or repeated."
    ),
)
async def stream_events(
    org_id: OrgId,
    services: ServicesDep,
    principal: PrincipalDep,
    after: After = None,
    types: Types = None,
    last_event_id: Annotated[
        str | None, HeaderParameter(name="Last-Event-ID", required=False, max_length=512)
    ] = None,
) -> Stream:
    if last_event_id:
        position = queries.position_of(last_event_id, "header.Last-Event-ID")
    else:
        position = queries.position_of(after)
    patterns = queries.parse_types(types)
    async with services.db.read() as conn:
        await queries.target(conn, principal, org_id)
    return Stream(
        _messages(services, principal, org_id, position, patterns),
        media_type=SSE,
        headers={"Content-Type": SSE, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _messages(
    services: Services,
    principal: Principal,
    org_ref: str,
    position: int | None,
    types: Sequence[str],
) -> AsyncIterator[bytes]:
    """The stream's messages: a page of events at a time, polling while there are none. It
    ends at its lifetime, when the server stops, or when the org leaves the key's reach; the
    client going away cancels it."""
    started = time.monotonic()
    quiet_since = started
    yield b": orgplane events\n\n"
    while not services.stopping.is_set():
        try:
            async with services.db.read() as conn:
                org = await queries.target(conn, principal, org_ref)
                page = await queries.page(
                    conn, principal, org, after=position, limit=STREAM_BATCH, types=types
                )
        except OrgplaneError:
            return  # moved out of reach, or deleted for good: nothing more to send
        previous, position = position, page.position
        now = time.monotonic()
        if page.rows:
            yield b"".join(_message(p) for p in queries.payloads(page.rows))
            quiet_since = now
        elif now - quiet_since >= HEARTBEAT_SECONDS:
            yield b": keep-alive\n\n"
            quiet_since = now
        if now - started >= STREAM_SECONDS:
            return
        behind = previous is not None and page.position - previous >= queries.SCAN
        if len(page.rows) == STREAM_BATCH or behind:
            continue  # more is waiting: read on without a pause
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(services.stopping.wait(), POLL_SECONDS)


def _message(payload: dict[str, Any]) -> bytes:
    cursor = queries.cursor_at(payload["data"]["sequence"])
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        cursor.encode(),
        payload["type"].encode(),
        _ENCODER.encode(payload),
    )


router = Router(path="/orgs", route_handlers=[get_events, stream_events], tags=["events"])
