"""Usage ingestion: a batch of events is stored once per idempotency key, folded into the per-day
counters and checked against hard limits in one transaction. All of it commits, or none of it.

A batch costs the same few statements whatever its size: the tree lock, the org (reach), the
batch's other orgs, the meters, the hard-limit rows (only if a hard meter is used), the events
and the counters, and the audit entries (one per org). On PostgreSQL one statement inserts the
events, skipping keys already stored (``ON CONFLICT DO NOTHING``: an earlier or a concurrent
batch with the same key inserted it), and folds the inserted ones into the day counters and the
subtree day counters; it answers with the keys it inserted. SQLite takes the insert and the two
upserts as three multi-row statements, in pages of 1,000 rows (no round trips there, and it caps
the parameters of a statement).

Locking (PostgreSQL), in the order used everywhere: the tenant root FOR KEY SHARE; the
``org_limits`` rows of hard meters FOR UPDATE, ancestors first (depth, org id, meter), as the
allocator takes them; the event keys and then the counter rows, each in a sorted order, so two
batches wait for each other instead of deadlocking; the audit chain head at commit. The hard
limits are checked after the fold, against the counters less the batch's own new events.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from orgplane.core.access.principal import Actor, Caller, Principal
from orgplane.core.access.service import reach
from orgplane.core.alerts import service as alerts
from orgplane.core.audit import service as audit
from orgplane.core.errors import FieldError, InvalidInput, NotFound
from orgplane.core.locks import lock_tree
from orgplane.core.usage import repository, repository_pg
from orgplane.core.usage.counters import consumed_this_period, local_today, period_start
from orgplane.core.usage.errors import LimitExceeded
from orgplane.core.usage.repository import BatchOrg, Event
from orgplane.db.engine import Tx
from orgplane.models.base import utcnow

MAX_EVENTS = 10_000
# A full batch of the largest events still fits a BIGINT counter (10,000 x 10^14 < 2^63).
MAX_QUANTITY = 10**14
MAX_KEY_LENGTH = 255
FUTURE_SLACK = timedelta(minutes=5)
# A problem document lists at most this many bad fields; its detail gives the total.
MAX_LISTED_ERRORS = 1000


class UsageEventIn(Protocol):
    """One event as a client sends it; ``org_id`` is a public id, the batch's org if None."""

    @property
    def meter(self) -> str: ...
    @property
    def quantity(self) -> int: ...
    @property
    def timestamp(self) -> str: ...
    @property
    def idempotency_key(self) -> str: ...
    @property
    def org_id(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: int


async def ingest(
    tx: Tx, *, actor: Caller, org_ref: str, events: Sequence[UsageEventIn]
) -> IngestResult:
    """Record a batch of usage for ``org_ref`` and orgs in the caller's subtree."""
    principal = actor.principal
    await lock_tree(tx, principal.root_id, shared=True)
    target = await reach(tx.conn, principal, org_ref, scope="usage:write")
    if not events:
        raise InvalidInput.for_field("events", "must hold at least one event")
    if len(events) > MAX_EVENTS:
        raise InvalidInput.for_field(
            "events", f"must hold at most {MAX_EVENTS:,} events (got {len(events):,}); split it"
        )
    now = utcnow()
    orgs_by_ref = await _batch_orgs(tx, principal, target, events)
    modes = await repository.meter_modes(tx)
    parsed = _parse(events, orgs_by_ref, modes, now)

    unique: dict[str, Event] = {}
    for event in parsed:
        unique.setdefault(event.key, event)
    hard = [e for e in unique.values() if modes[e.meter] == "hard" and e.day >= e.org.current_start]
    limits = await repository.lock_limits(tx, hard) if hard else {}
    in_key_order = [unique[key] for key in sorted(unique)]
    if tx.is_postgres:
        inserted = await repository_pg.store(tx, in_key_order, now)
    else:
        inserted = await repository.insert_events(tx, in_key_order, now)
    if len(inserted) == len(unique):
        new = list(unique.values())
    else:
        new = [e for e in unique.values() if e.key in inserted]
    if not tx.is_postgres:
        await repository.fold(tx, new)
    if hard:
        await _check_limits(tx, [e for e in hard if e.key in inserted], limits)
    _audit(tx, actor, parsed, new)
    if new:
        await alerts.check_usage(tx, actor, {o.id: o for o in orgs_by_ref.values()}.values(), new)
    return IngestResult(accepted=len(new), duplicates=len(events) - len(new))


def _org(row: Any, zones: dict[str, tuple[tzinfo, date, date]]) -> BatchOrg:
    if row.timezone not in zones:
        current = period_start(local_today(row.timezone))
        previous = period_start(current - timedelta(days=1))
        zone: tzinfo = UTC if row.timezone == "UTC" else ZoneInfo(row.timezone)
        zones[row.timezone] = (zone, current, previous)
    zone, current, previous = zones[row.timezone]
    ancestors = tuple(int(part) for part in row.path.strip("/").split("/"))
    return BatchOrg(
        row.id,
        row.public_id,
        row.root_id,
        row.depth,
        row.timezone,
        zone,
        ancestors,
        current,
        previous,
    )


async def _batch_orgs(
    tx: Tx, principal: Principal, target: Any, events: Sequence[UsageEventIn]
) -> dict[str | None, BatchOrg]:
    """The org of every event by the reference it gives; 404, naming each event, for the rest.

    An org outside the caller's subtree, deleted or unknown gets the answer ``reach`` gives.
    """
    zones: dict[str, tuple[tzinfo, date, date]] = {}
    found = {None: _org(target, zones), target.public_id: _org(target, zones)}
    refs = {e.org_id for e in events} - found.keys()
    # Nothing that cannot be a public id reaches SQL (PostgreSQL text cannot hold NUL).
    lookup = sorted(r for r in refs if isinstance(r, str) and len(r) <= 64 and "\x00" not in r)
    if lookup:
        for row in await repository.orgs_by_public_id(tx, lookup):
            if row.deleted_at is None and principal.reaches(row.path):
                found[row.public_id] = _org(row, zones)
    if len(found) - 2 < len(refs):
        missing = [(i, e.org_id) for i, e in enumerate(events) if e.org_id not in found]
        raise NotFound(
            f"organization {missing[0][1]!r} not found",
            errors=[
                FieldError(f"events[{i}].org_id", f"organization {ref!r} not found")
                for i, ref in missing[:MAX_LISTED_ERRORS]
            ],
        )
    return found


def _parse(
    events: Sequence[UsageEventIn],
    orgs_by_ref: dict[str | None, BatchOrg],
    modes: dict[str, str],
    now: datetime,
) -> list[Event]:
    """Check every event; one 400 names every bad field of the batch.

    The loop is the hot path of ingestion (10,000 events a batch): one test of the valid case
    first, the messages only for an event that fails it.
    """
    errors: list[FieldError] = []
    parsed: list[Event] = []
    append = parsed.append
    latest = now + FUTURE_SLACK
    fromisoformat = datetime.fromisoformat
    for i, event in enumerate(events):
        org = orgs_by_ref[event.org_id]
        meter, quantity, key = event.meter, event.quantity, event.idempotency_key
        try:
            occurred = fromisoformat(event.timestamp)
            if (
                meter in modes
                and type(quantity) is int
                and 0 <= quantity <= MAX_QUANTITY
                and type(key) is str
                and 0 < len(key) <= MAX_KEY_LENGTH
                and key.isprintable()
                and occurred.tzinfo is not None
                and occurred <= latest
            ):
                day = occurred.astimezone(org.zone).date()
                if day >= org.previous_start:
                    append(Event(i, org, meter, quantity, occurred, day, key))
                    continue
        except (TypeError, ValueError, OverflowError):
            pass
        found = _errors(i, event, org, modes, latest)
        if not found:
            raise AssertionError(f"event {i} failed the fast check but no field check")
        errors.extend(found)
    if errors:
        first = f"{errors[0].field}: {errors[0].message}"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InvalidInput(
            f"{first}{more}; nothing was recorded", errors=errors[:MAX_LISTED_ERRORS]
        )
    return parsed


def _errors(
    i: int, event: UsageEventIn, org: BatchOrg, modes: dict[str, str], latest: datetime
) -> list[FieldError]:
    """What is wrong with one event, field by field."""
    errors = []
    if event.meter not in modes:
        known = ", ".join(sorted(modes))
        errors.append(
            FieldError(f"events[{i}].meter", f"unknown meter {event.meter!r}; known: {known}")
        )
    quantity = event.quantity
    if type(quantity) is not int or not 0 <= quantity <= MAX_QUANTITY:
        errors.append(
            FieldError(f"events[{i}].quantity", f"must be a whole number from 0 to {MAX_QUANTITY}")
        )
    key = event.idempotency_key
    if type(key) is not str or not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        errors.append(
            FieldError(
                f"events[{i}].idempotency_key",
                f"must be 1 to {MAX_KEY_LENGTH} printable characters",
            )
        )
    when = _when(event.timestamp, org, latest)
    if isinstance(when, str):
        errors.append(FieldError(f"events[{i}].timestamp", when))
    return errors


def _when(text: Any, org: BatchOrg, latest: datetime) -> tuple[datetime, date] | str:
    """The instant and the org's local day of a timestamp, or what is wrong with it."""
    try:
        occurred = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return "must be an ISO 8601 timestamp with a time zone, e.g. 2026-11-22T10:15:00Z"
    if occurred.utcoffset() is None:
        return "must include a time zone (Z or an offset such as +01:00)"
    if occurred > latest:
        return "must not be more than 5 minutes in the future"
    try:
        day = occurred.astimezone(org.zone).date()
    except OverflowError:
        day = date.min
    if day < org.previous_start:
        return (
            f"must not be before {org.previous_start.isoformat()} ({org.timezone}), the start "
            "of the previous period: that usage can no longer be counted"
        )
    return occurred, day


async def _check_limits(
    tx: Tx, new_hard: list[Event], limits: dict[tuple[int, str], tuple[int, int]]
) -> None:
    """Refuse the batch if, taken in order, an event takes its org's consumption this period
    over what it has available (amount - allocated; nothing without a limit row).

    The counters already hold the batch's new events (they are folded first): the running
    total starts from what they held before it.
    """
    if not new_hard:
        return
    involved = {e.org.id: e.org for e in new_hard}
    running = await consumed_this_period(tx, involved.values())
    for event in new_hard:
        pair = (event.org.id, event.meter)
        running[pair] = running.get(pair, 0) - event.quantity
    errors: list[FieldError] = []
    for event in new_hard:
        pair = (event.org.id, event.meter)
        total = running.get(pair, 0) + event.quantity
        running[pair] = total
        amount, allocated = limits.get(pair, (0, 0))
        available = amount - allocated
        if event.quantity and total > available:
            where = f"organization {event.org.public_id!r}"
            if pair in limits:
                why = f"{available} available ({amount} limit, {allocated} allocated to children)"
            else:
                why = f"no {event.meter!r} limit, so nothing available"
            errors.append(
                FieldError(
                    f"events[{event.index}]",
                    f"would bring {where}'s {event.meter!r} consumption this period to {total}; "
                    f"it has {why}",
                )
            )
    if errors:
        raise LimitExceeded(
            f"{len(errors)} event(s) would exceed a hard limit; nothing was recorded",
            errors=errors[:MAX_LISTED_ERRORS],
        )


def _audit(tx: Tx, actor: Actor, parsed: list[Event], new: list[Event]) -> None:
    """One entry per org that gained usage: what it gained per meter, and the counts."""
    sent = Counter([e.org.id for e in parsed])
    accepted = Counter([e.org.id for e in new])
    usage: defaultdict[tuple[int, str], int] = defaultdict(int)
    for event in new:
        usage[(event.org.id, event.meter)] += event.quantity
    gained: defaultdict[int, dict[str, int]] = defaultdict(dict)
    for (org_id, meter), quantity in sorted(usage.items()):
        gained[org_id][meter] = quantity
    orgs_by_id = {e.org.id: e.org for e in new}
    for org_id in sorted(accepted):
        org = orgs_by_id[org_id]
        audit.record(
            tx,
            actor,
            action="usage.ingested",
            root_id=org.root_id,
            org_id=org.id,
            target_type="org",
            target_id=org.public_id,
            after={
                "usage": gained[org_id],
                "accepted": accepted[org_id],
                "duplicates": sent[org_id] - accepted[org_id],
            },
        )
