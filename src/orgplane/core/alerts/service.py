"""Usage alerts: thresholds of an org's limit of a meter that fire ``usage.threshold_crossed``
once per period.

An alert is a set of percentages of the org's limit of a meter (``org_limits.amount``, the
``limit`` of the consumption report), measured against the org's own consumption of the period
(``scope="org"``) or its subtree's (``"subtree"``), as the consumption report computes them.
A threshold fires when a check finds consumption at or above it and it has not fired in that
period yet, or was re-armed since: the event is an audit entry written in the transaction that
made the change, so it exists exactly when the change does. Checks run:

* when usage is ingested (``check_usage``, in the ingest transaction, after the counters are
  folded): the batch's orgs, and their ancestors for subtree alerts. A batch whose orgs and
  ancestors have no alerts costs one lookup on the primary key;
* when an org's limit changes (``limit_changed``: an allocation, a root's limit) or an alert is
  set: a threshold that usage is now below is re-armed (it fires again when usage crosses it
  again), one it is now above fires if it may.

Concurrent checks of one threshold cannot both fire it: on PostgreSQL a check locks the
thresholds it looks at before it reads the counters (so the second one waits for the first to
commit and then sees its usage and its firing), and firing is a conditional update; SQLite runs
one writer at a time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from orgplane.core.access.principal import Actor, Caller, Principal
from orgplane.core.access.service import reach
from orgplane.core.alerts import repository
from orgplane.core.audit import service as audit
from orgplane.core.credits.repository import find_meter
from orgplane.core.errors import FieldError, InvalidInput, NotFound
from orgplane.core.usage.consumption import month_of
from orgplane.core.usage.counters import local_today, period_start
from orgplane.db.engine import Reader, Tx
from orgplane.models.base import utcnow

DEFAULT_THRESHOLDS = (50, 80, 100)
MAX_THRESHOLDS = 10
LOWEST, HIGHEST = 1, 1000
SCOPES = ("org", "subtree")
EVENT = "usage.threshold_crossed"


@dataclass(frozen=True)
class Threshold:
    """One threshold and its state: the period it last fired in (None: never, or not since
    the alert was set) and whether it is armed to fire again in that period."""

    percent: int
    last_fired_period: str | None
    armed: bool


@dataclass(frozen=True)
class Alert:
    org: Any
    meter: str
    scope: str
    thresholds: list[Threshold]
    updated_at: datetime


def check_thresholds(values: Sequence[Any] | None, field: str = "thresholds") -> list[int]:
    """The thresholds, sorted; 400 naming each bad one. None: the defaults."""
    if values is None:
        return list(DEFAULT_THRESHOLDS)
    if not isinstance(values, (list, tuple)):
        raise InvalidInput.for_field(field, "must be a list of whole percentages")
    if not values:
        raise InvalidInput.for_field(field, "must hold at least one threshold")
    if len(values) > MAX_THRESHOLDS:
        raise InvalidInput.for_field(field, f"must hold at most {MAX_THRESHOLDS} thresholds")
    errors: list[FieldError] = []
    seen: set[int] = set()
    for i, value in enumerate(values):
        if type(value) is not int:
            errors.append(FieldError(f"{field}[{i}]", "must be a whole number (a percentage)"))
        elif not LOWEST <= value <= HIGHEST:
            errors.append(FieldError(f"{field}[{i}]", f"must be from {LOWEST} to {HIGHEST}"))
        elif value in seen:
            errors.append(FieldError(f"{field}[{i}]", f"{value} is listed twice"))
        else:
            seen.add(value)
    if errors:
        raise InvalidInput(f"{errors[0].field}: {errors[0].message}", errors=errors)
    return sorted(seen)


def check_scope(scope: Any, field: str = "scope") -> str:
    if scope not in SCOPES:
        raise InvalidInput.for_field(field, "must be 'org' or 'subtree'")
    return str(scope)


def _alert(org: Any, meter: str, rows: list[Any]) -> Alert:
    return Alert(
        org=org,
        meter=meter,
        scope=rows[0].scope,
        thresholds=[Threshold(r.threshold, r.period, r.armed) for r in rows],
        updated_at=max(r.updated_at for r in rows),
    )


def _described(rows: list[Any]) -> dict[str, Any] | None:
    if not rows:
        return None
    return {"scope": rows[0].scope, "thresholds": [r.threshold for r in rows]}


async def _meter(conn: Reader, name: str) -> Any:
    meter = await find_meter(conn, name)
    if meter is None:
        raise NotFound(f"meter {name!r} not found")
    return meter


async def set_alert(
    tx: Tx,
    *,
    actor: Caller,
    org_ref: str,
    meter: str,
    thresholds: Sequence[Any] | None = None,
    scope: str = "org",
) -> Alert:
    """Set an org's alert on a meter (replacing its thresholds). Thresholds kept from the
    previous alert keep their state (they do not fire twice in a period for being set again);
    a change of scope starts every threshold afresh."""
    org = await reach(tx.conn, actor.principal, org_ref, scope="credits:write")
    await _meter(tx.conn, meter)
    values = check_thresholds(thresholds)
    scope = check_scope(scope)
    now = utcnow()
    existing = await repository.lock_of_org(tx, org.id, meter)
    kept = {r.threshold for r in existing}
    if existing and existing[0].scope != scope:
        await repository.reset(tx, org.id, meter, scope, now)
    gone = kept - set(values)
    if gone:
        await repository.delete(tx, org.id, meter, gone)
    await repository.insert(tx, org, meter, scope, sorted(set(values) - kept), now)
    before = _described(existing)
    after = {"scope": scope, "thresholds": values}
    if before != after:
        audit.record(
            tx,
            actor,
            action="alert.updated",
            root_id=org.root_id,
            org_id=org.id,
            target_type="alert",
            target_id=f"{org.public_id}/{meter}",
            before=before,
            after=after,
        )
        # Usage may already be past a new threshold: it fires now, not at the next usage.
        await limit_changed(tx, actor, org, meter, known=True)
    return _alert(org, meter, await repository.of_org(tx.conn, org.id, meter))


async def delete_alert(tx: Tx, *, actor: Caller, org_ref: str, meter: str) -> None:
    org = await reach(tx.conn, actor.principal, org_ref, scope="credits:write")
    existing = await repository.lock_of_org(tx, org.id, meter)
    if not existing:
        raise _no_alert(org_ref, meter)
    await repository.delete(tx, org.id, meter)
    audit.record(
        tx,
        actor,
        action="alert.deleted",
        root_id=org.root_id,
        org_id=org.id,
        target_type="alert",
        target_id=f"{org.public_id}/{meter}",
        before=_described(existing),
    )


def _no_alert(org_ref: str, meter: str) -> NotFound:
    return NotFound(f"organization {org_ref!r} has no alert on meter {meter!r}")


async def get_alert(conn: Reader, principal: Principal, org_ref: str, meter: str) -> Alert:
    org = await reach(conn, principal, org_ref, scope="credits:read")
    rows = await repository.of_org(conn, org.id, meter)
    if not rows:
        raise _no_alert(org_ref, meter)
    return _alert(org, meter, rows)


async def list_alerts(conn: Reader, principal: Principal, org_ref: str) -> list[Alert]:
    """Every alert of the org, by meter."""
    org = await reach(conn, principal, org_ref, scope="credits:read")
    by_meter: dict[str, list[Any]] = defaultdict(list)
    for row in await repository.of_org(conn, org.id):
        by_meter[row.meter].append(row)
    return [_alert(org, meter, rows) for meter, rows in sorted(by_meter.items())]


# --- checks ----------------------------------------------------------------------------------


async def check_usage(tx: Tx, actor: Actor, orgs: Iterable[Any], new: Sequence[Any]) -> None:
    """After a batch's usage is folded into the counters (same transaction): fire the
    thresholds it took consumption to. ``orgs`` are the batch's orgs (``BatchOrg``), ``new``
    its events stored now (``usage.repository.Event``)."""
    ancestors = {org.id: org.ancestors for org in orgs}
    found = await repository.candidates(tx, {a for path in ancestors.values() for a in path})
    if not found:
        return
    scopes = {(r.org_id, r.meter): r.scope for r in found}
    months: defaultdict[tuple[int, str], set[date]] = defaultdict(set)
    for org_id, meter, day in {(e.org.id, e.meter, e.day) for e in new if e.quantity}:
        start = period_start(day)
        if scopes.get((org_id, meter)) == "org":
            months[(org_id, meter)].add(start)
        for ancestor in ancestors[org_id]:
            if scopes.get((ancestor, meter)) == "subtree":
                months[(ancestor, meter)].add(start)
    if months:
        await _check(tx, actor, months, [r for r in found if (r.org_id, r.meter) in months])


async def limit_changed(tx: Tx, actor: Actor, org: Any, meter: str, *, known: bool = False) -> None:
    """After an org's limit of a meter changed (same transaction): re-arm the thresholds
    usage is now below, fire those it is now at or above. ``known``: the caller already knows
    the org has an alert on the meter (``has_alert``)."""
    if not known and not await has_alert(tx, org.id, meter):
        return
    states = await repository.lock_of_org(tx, org.id, meter)
    if states:
        start = period_start(local_today(org.timezone))
        public_ids = {org.id: org.public_id}
        await _check(tx, actor, {(org.id, meter): {start}}, states, public_ids)


async def has_alert(tx: Tx, org_id: int, meter: str) -> bool:
    """Whether the org has an alert on the meter: one probe of the primary key."""
    return await repository.any_on(tx, org_id, meter)


async def _check(
    tx: Tx,
    actor: Actor,
    months: Mapping[tuple[int, str], set[date]],
    states: Sequence[Any],
    public_ids: Mapping[int, str] | None = None,
) -> None:
    """Compare the thresholds ``states`` (read under their lock) of these (org, meter) pairs
    with their consumption in each period starting on the given days, oldest first, firing
    and re-arming them."""
    by_pair: defaultdict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for row in states:
        by_pair[(row.org_id, row.meter)].append(row._asdict())
    if public_ids is None:
        public_ids = {row.org_id: row.public_id for row in states}
    org_ids = {org_id for org_id, _ in by_pair}
    figures: dict[date, dict[tuple[int, str], tuple[int | None, int]]] = {}
    for start in sorted({start for pair in by_pair for start in months[pair]}):
        period = month_of(start)
        figures[start] = await repository.figures(tx, org_ids, period.start, period.end)
    now = utcnow()
    system = Actor(meta=actor.meta, label_override="system")
    for pair in sorted(by_pair):
        for start in sorted(months[pair]):
            label = month_of(start).label
            limit, used = figures[start].get(pair, (None, 0))
            for state in by_pair[pair]:
                reached = bool(limit) and used * 100 >= state["threshold"] * (limit or 0)
                last = state["period"]
                if reached and (last is None or last < label or (last == label and state["armed"])):
                    if await repository.fire(tx, _Key(state), label, now):
                        state["period"], state["armed"] = label, False
                        _record(tx, system, state, public_ids[pair[0]], used, limit, label)
                elif not reached and last == label and not state["armed"]:
                    await repository.rearm(tx, _Key(state), now)
                    state["armed"] = True


class _Key:
    """A threshold's key, as the repository's updates name it."""

    __slots__ = ("meter", "org_id", "threshold")

    def __init__(self, state: Mapping[str, Any]) -> None:
        self.org_id = state["org_id"]
        self.meter = state["meter"]
        self.threshold = state["threshold"]


def _record(
    tx: Tx,
    actor: Actor,
    state: Mapping[str, Any],
    org_public_id: str,
    used: int,
    limit: int | None,
    period: str,
) -> None:
    audit.record(
        tx,
        actor,
        action=EVENT,
        root_id=state["root_id"],
        org_id=state["org_id"],
        target_type="alert",
        target_id=f"{org_public_id}/{state['meter']}",
        after={
            "meter": state["meter"],
            "scope": state["scope"],
            "threshold": state["threshold"],
            "consumed": used,
            "limit": limit,
            "utilization_pct": round(100.0 * used / limit, 2) if limit else None,
            "period": period,
        },
    )
