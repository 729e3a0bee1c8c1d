"""An org's webhooks: created with a signing secret shown once, listed, changed, rotated,
tested, deleted; their delivery logs; manual redelivery.

A webhook receives the events of its org, and with ``include_descendants`` (the default: a
parent provisions for its children) those of every org below it, as its org would see them
(orgs out of its reach are null, ``audit.queries.as_seen_from_org``). Whoever may manage the
org's webhooks (scope ``webhooks:write``; for a user, the ``manageWebhooks`` capability, which
owners and administrators hold) manages them; the org is reached as everywhere (404 outside).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from orgplane.core import events, sealing
from orgplane.core.access.principal import Actor, Principal
from orgplane.core.access.service import reach
from orgplane.core.audit import service as audit
from orgplane.core.errors import FieldError, Forbidden, InvalidInput, NotFound
from orgplane.core.events import positions
from orgplane.core.ids import new_public_id
from orgplane.core.pagination import decode_cursor, encode_cursor, time_window
from orgplane.core.webhooks import destinations, repository, signing
from orgplane.core.webhooks.destinations import Network
from orgplane.core.webhooks.sender import Outcome, Sender
from orgplane.db.engine import Database, Reader, Tx
from orgplane.models.base import utcnow

CONSUMER = "webhooks"
SEAL_PURPOSE = "orgplane webhook secret v1"
MAX_EVENT_TYPES = 50
MAX_REDELIVERY = 10_000
DEFAULT_ROTATION_OVERLAP = timedelta(hours=24)
MAX_ROTATION_OVERLAP = timedelta(days=7)
TEST_EVENT = "webhook.test"


@dataclass(frozen=True)
class Created:
    """A webhook's row and its signing secret, shown once."""

    row: Any
    secret: str


def _bound(public_id: str) -> str:
    return f"webhook:{public_id}"


def seal_secret(secret: str, public_id: str, secret_key: str) -> str:
    return sealing.seal(
        secret, purpose=SEAL_PURPOSE, bound_to=_bound(public_id), secret_key=secret_key
    )


def signing_secrets(row: Any, secret_key: str, now: datetime) -> list[str]:
    """The secrets that sign a request to the webhook now: its own, and during a rotation the
    previous one."""
    found = [
        sealing.open_sealed(
            row.secret_sealed,
            purpose=SEAL_PURPOSE,
            bound_to=_bound(row.public_id),
            secret_key=secret_key,
        )
    ]
    expires = row.previous_secret_expires_at
    if row.previous_secret_sealed is not None and expires is not None and expires > now:
        found.append(
            sealing.open_sealed(
                row.previous_secret_sealed,
                purpose=SEAL_PURPOSE,
                bound_to=_bound(row.public_id),
                secret_key=secret_key,
            )
        )
    return found


def clean_event_types(patterns: Sequence[str], field: str = "event_types") -> list[str]:
    """Event type patterns (``org.created``, ``credits.*``, ``*``), each checked, de-duplicated
    in a stable order, or a 400 naming each bad one."""
    if not patterns:
        raise InvalidInput.for_field(field, "name at least one event type (or '*')")
    if len(patterns) > MAX_EVENT_TYPES:
        raise InvalidInput.for_field(field, f"at most {MAX_EVENT_TYPES} patterns")
    errors = [
        FieldError(f"{field}[{i}]", "must be 1-64 of a-z, 0-9, '_', '.' and '*'")
        for i, p in enumerate(patterns)
        if not events.TYPE_PATTERN.match(p)
    ]
    if errors:
        raise InvalidInput("invalid event type pattern", errors=errors)
    return sorted(set(patterns))


def _clean_description(description: str | None) -> str | None:
    if description is None:
        return None
    description = description.strip()
    if len(description) > 500:
        raise InvalidInput.for_field("description", "must be at most 500 characters")
    return description or None


def describe(row: Any) -> dict[str, Any]:
    """A webhook as its audit entries show it (never a secret)."""
    return {
        "url": row.url,
        "event_types": list(row.event_types),
        "include_descendants": row.include_descendants,
        "description": row.description,
        "enabled": row.enabled,
    }


def _principal(actor: Actor) -> Principal:
    if actor.principal is None:
        raise Forbidden("webhooks are managed through the API")
    return actor.principal


async def _target(
    conn: Reader,
    principal: Principal,
    org_ref: str,
    webhook_ref: str,
    *,
    scope: str,
    lock: bool = False,
) -> Any:
    org = await reach(conn, principal, org_ref, scope=scope, lock="share" if lock else None)
    row = await repository.find(conn, org.id, webhook_ref, lock=lock)
    if row is None:
        raise NotFound(f"webhook {webhook_ref!r} not found in organization {org_ref!r}")
    return row


async def create(
    tx: Tx,
    *,
    actor: Actor,
    org_ref: str,
    url: str,
    event_types: Sequence[str],
    include_descendants: bool = True,
    description: str | None = None,
    networks: Sequence[Network],
    secret_key: str,
) -> Created:
    """Create a webhook of the org ``org_ref``; its secret is returned once, stored sealed."""
    principal = _principal(actor)
    org = await reach(tx.conn, principal, org_ref, scope="webhooks:write", lock="share")
    destinations.check_url(url, networks)
    patterns = clean_event_types(event_types)
    public_id = new_public_id("whk_")
    secret = signing.new_secret()
    now = utcnow()
    # Events committed before the webhook are not its: it starts at the chain's head.
    head = await positions.chain_head(tx.conn, org.root_id)
    await positions.ensure_position(tx, CONSUMER, org.root_id, head)
    row = await repository.insert(
        tx,
        {
            "public_id": public_id,
            "org_id": org.id,
            "root_id": org.root_id,
            "url": url,
            "event_types": patterns,
            "include_descendants": include_descendants,
            "description": _clean_description(description),
            "enabled": True,
            "secret_sealed": seal_secret(secret, public_id, secret_key),
            "since_seq": head,
            "created_at": now,
            "updated_at": now,
        },
    )
    audit.record(
        tx,
        actor,
        action="webhook.created",
        root_id=org.root_id,
        org_id=org.id,
        target_type="webhook",
        target_id=public_id,
        after=describe(row),
    )
    return Created(row=row, secret=secret)


async def get(conn: Reader, principal: Principal, org_ref: str, webhook_ref: str) -> Any:
    return await _target(conn, principal, org_ref, webhook_ref, scope="webhooks:read")


async def list_webhooks(
    conn: Reader, principal: Principal, org_ref: str, *, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    org = await reach(conn, principal, org_ref, scope="webhooks:read")
    after = decode_cursor(cursor, int)
    rows = await repository.page(conn, org.id, after=after[0] if after else None, limit=limit)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].id) if more else None


async def last_attempts(
    conn: Reader, principal: Principal, org_ref: str, webhook_rows: Sequence[Any]
) -> dict[int, Any]:
    """The latest attempt of each of the org's webhooks among ``webhook_rows`` (a page of
    ``list_webhooks``), by the webhook's row id: how its last delivery went."""
    org = await reach(conn, principal, org_ref, scope="webhooks:read")
    return await repository.last_attempts(conn, [r.id for r in webhook_rows if r.org_id == org.id])


async def update(
    tx: Tx,
    *,
    actor: Actor,
    org_ref: str,
    webhook_ref: str,
    changes: dict[str, Any],
    networks: Sequence[Network],
) -> Any:
    """Change a webhook's ``url``, ``event_types``, ``include_descendants``, ``description`` or
    ``enabled`` (enabling it again clears its failing streak; its pending deliveries resume)."""
    principal = _principal(actor)
    row = await _target(tx.conn, principal, org_ref, webhook_ref, scope="webhooks:write", lock=True)
    values: dict[str, Any] = {}
    if "url" in changes:
        destinations.check_url(changes["url"], networks)
        values["url"] = changes["url"]
    if "event_types" in changes:
        values["event_types"] = clean_event_types(changes["event_types"])
    if "include_descendants" in changes:
        values["include_descendants"] = bool(changes["include_descendants"])
    if "description" in changes:
        values["description"] = _clean_description(changes["description"])
    if "enabled" in changes and bool(changes["enabled"]) != row.enabled:
        enabled = bool(changes["enabled"])
        values["enabled"] = enabled
        values["failing_since"] = None
        values["disabled_at"] = None if enabled else utcnow()
        values["disabled_reason"] = None if enabled else f"disabled by {actor.label}"
    if not values:
        return row
    values["updated_at"] = utcnow()
    updated = await repository.update(tx, row.id, values)
    audit.record(
        tx,
        actor,
        action="webhook.updated",
        root_id=row.root_id,
        org_id=row.org_id,
        target_type="webhook",
        target_id=row.public_id,
        before=describe(row),
        after=describe(updated),
    )
    return updated


async def delete(tx: Tx, *, actor: Actor, org_ref: str, webhook_ref: str) -> None:
    """Delete a webhook with its queued deliveries and its delivery log."""
    principal = _principal(actor)
    row = await _target(tx.conn, principal, org_ref, webhook_ref, scope="webhooks:write", lock=True)
    await repository.delete(tx, row.id)
    audit.record(
        tx,
        actor,
        action="webhook.deleted",
        root_id=row.root_id,
        org_id=row.org_id,
        target_type="webhook",
        target_id=row.public_id,
        before=describe(row),
    )


async def rotate_secret(
    tx: Tx,
    *,
    actor: Actor,
    org_ref: str,
    webhook_ref: str,
    overlap: timedelta = DEFAULT_ROTATION_OVERLAP,
    secret_key: str,
) -> Created:
    """A new signing secret, shown once; the current one keeps signing too (both signatures in
    ``webhook-signature``) for ``overlap``, so receivers can switch without losing an event."""
    principal = _principal(actor)
    if not timedelta(0) <= overlap <= MAX_ROTATION_OVERLAP:
        raise InvalidInput.for_field(
            "overlap_seconds", f"must be between 0 and {int(MAX_ROTATION_OVERLAP.total_seconds())}"
        )
    row = await _target(tx.conn, principal, org_ref, webhook_ref, scope="webhooks:write", lock=True)
    secret = signing.new_secret()
    now = utcnow()
    values: dict[str, Any] = {
        "secret_sealed": seal_secret(secret, row.public_id, secret_key),
        "previous_secret_sealed": row.secret_sealed if overlap else None,
        "previous_secret_expires_at": now + overlap if overlap else None,
        "updated_at": now,
    }
    updated = await repository.update(tx, row.id, values)
    audit.record(
        tx,
        actor,
        action="webhook.secret_rotated",
        root_id=row.root_id,
        org_id=row.org_id,
        target_type="webhook",
        target_id=row.public_id,
        after={"previous_secret_expires_at": values["previous_secret_expires_at"]},
    )
    return Created(row=updated, secret=secret)


async def attempts(
    conn: Reader,
    principal: Principal,
    org_ref: str,
    webhook_ref: str,
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """The webhook's delivery log, newest first: one row per request sent."""
    row = await _target(conn, principal, org_ref, webhook_ref, scope="webhooks:read")
    before = decode_cursor(cursor, int)
    rows = await repository.attempts_page(
        conn, row.id, before=before[0] if before else None, limit=limit
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].id) if more else None


async def redeliver(
    tx: Tx,
    *,
    actor: Actor,
    org_ref: str,
    webhook_ref: str,
    event_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Queue again, for this webhook, the event ``event_id`` or the events of a time range
    (``since`` <= event time < ``until``) that were queued for it before; each goes once, with
    its own id, whatever became of its earlier deliveries. How many were queued."""
    principal = _principal(actor)
    if (event_id is None) == (since is None and until is None):
        raise InvalidInput.for_field("event_id", "give either event_id or a since/until range")
    if event_id is None and since is None:
        raise InvalidInput.for_field("since", "a range needs its start")
    since, until = time_window(since, until)
    row = await _target(tx.conn, principal, org_ref, webhook_ref, scope="webhooks:write", lock=True)
    found = await repository.queued_events(
        tx.conn, row.id, event_id=event_id, since=since, until=until, limit=MAX_REDELIVERY + 1
    )
    if event_id is not None and not found:
        raise NotFound(f"event {event_id!r} was never queued for webhook {row.public_id!r}")
    if len(found) > MAX_REDELIVERY:
        raise InvalidInput.for_field(
            "until", f"the range holds more than {MAX_REDELIVERY} events; narrow it"
        )
    now = utcnow()
    await repository.queue(
        tx,
        [
            {
                "webhook_id": row.id,
                "root_id": row.root_id,
                "seq": e.seq,
                "event_id": e.event_id,
                "event_at": e.event_at,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for e in found
        ],
    )
    audit.record(
        tx,
        actor,
        action="webhook.redelivery_requested",
        root_id=row.root_id,
        org_id=row.org_id,
        target_type="webhook",
        target_id=row.public_id,
        after={
            "event_id": event_id,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "queued": len(found),
        },
    )
    return len(found)


async def send_test(
    db: Database,
    sender: Sender,
    *,
    actor: Actor,
    org_ref: str,
    webhook_ref: str,
    secret_key: str,
) -> tuple[dict[str, Any], Outcome]:
    """Send a ``webhook.test`` event to the webhook now (not queued, not retried); its attempt
    is in the delivery log. The event sent (shaped as every event is, the webhook its target,
    0 its sequence: it is not in the log) and the attempt's outcome."""
    principal = _principal(actor)
    async with db.read() as conn:
        row = await _target(conn, principal, org_ref, webhook_ref, scope="webhooks:write")
    now = utcnow()
    event_id = "evt_test_" + new_public_id()
    event = {
        "id": event_id,
        "type": TEST_EVENT,
        "timestamp": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "data": {
            "org_id": row.org_public_id,
            "sequence": 0,
            "actor": actor.label,
            "actor_key_id": principal.key_id,
            "surface": actor.meta.surface,
            "target_type": "webhook",
            "target_id": row.public_id,
            "before": None,
            "after": None,
            "request_id": actor.meta.request_id,
        },
    }
    body = orjson.dumps(event)
    headers = signing.headers(
        signing_secrets(row, secret_key, now), event_id, int(time.time()), body
    )
    outcome = await sender.send(row.url, headers, body)
    await db.transaction(_record_test, webhook=row, event_id=event_id, at=now, outcome=outcome)
    return event, outcome


async def _record_test(
    tx: Tx, *, webhook: Any, event_id: str, at: datetime, outcome: Outcome
) -> None:
    """The test's attempt in the delivery log, unless the webhook was deleted while the test
    was on its way (404: there is no log to add it to)."""
    if not await repository.still_there(tx, webhook.id):
        raise NotFound(
            f"webhook {webhook.public_id!r} was deleted while its test event was being sent; "
            "the attempt is not recorded"
        )
    await repository.record_attempt(
        tx, attempt_values(webhook.id, None, event_id, TEST_EVENT, 1, at, outcome)
    )


def attempt_values(
    webhook_pk: int,
    delivery_pk: int | None,
    event_id: str,
    event_type: str,
    attempt: int,
    at: datetime,
    outcome: Outcome,
) -> dict[str, Any]:
    return {
        "webhook_id": webhook_pk,
        "delivery_id": delivery_pk,
        "event_id": event_id,
        "event_type": event_type,
        "attempt": attempt,
        "at": at,
        "status_code": outcome.status_code,
        "error": outcome.error,
        "latency_ms": outcome.latency_ms,
        "response_excerpt": outcome.excerpt,
    }
