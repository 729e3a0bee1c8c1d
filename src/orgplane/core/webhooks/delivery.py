"""Delivery: due deliveries claimed with a lease, sent, and their outcome recorded.

A worker claims a batch of due deliveries in a short transaction (on PostgreSQL ``FOR UPDATE SKIP
LOCKED``, so workers never claim the same row; SQLite has one writer), which leases each: it is
due again when the lease ends. It reads what the batch sends in one go (``prepare``), sends the
requests side by side, and records the attempts and the deliveries' next states in another
transaction (``record``, one for many attempts: the worker records together whatever finished
while it was writing the previous ones). A worker killed before it records leaves the lease to
run out: the delivery is then sent again (at least once). Every attempt of an event carries the
same ``webhook-id`` (the event's id), so receivers can drop duplicates.

A failed attempt (anything but a 2xx: a 3xx, an error status, a timeout, a refused or unreachable
destination) is retried after the next delay of ``ORGPLANE_WEBHOOK_RETRY_SCHEDULE``, jittered by
+-20%; once they are spent the delivery has failed. An endpoint whose attempts have all failed
for ``ORGPLANE_WEBHOOK_DISABLE_AFTER_DAYS`` is disabled, an event in its own right
(``webhook.disabled``, by the system).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from orgplane.config import Settings
from orgplane.core import events, sealing
from orgplane.core.access.principal import Actor, RequestMeta
from orgplane.core.audit import service as audit
from orgplane.core.audit.queries import as_seen_from_org
from orgplane.core.webhooks import repository, service, signing
from orgplane.core.webhooks.sender import Outcome, Sender
from orgplane.db.engine import Database, Tx
from orgplane.models.base import utcnow

log = logging.getLogger("orgplane.webhooks")

SYSTEM = Actor(meta=RequestMeta(user_agent=signing.USER_AGENT), label_override="system")
JITTER = 0.2


@dataclass(frozen=True)
class Policy:
    """How deliveries are retried and endpoints disabled (from the settings)."""

    retry_delays: Sequence[float]
    disable_after: timedelta
    lease: timedelta
    secret_key: str

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(
            retry_delays=settings.webhook_retry_delays,
            disable_after=timedelta(days=settings.webhook_disable_after_days),
            lease=timedelta(seconds=settings.webhook_lease_seconds),
            secret_key=settings.secret_key,
        )

    def next_delay(self, attempt: int) -> float | None:
        """Seconds before the attempt after ``attempt`` (1-based), or None: no more."""
        if attempt > len(self.retry_delays):
            return None
        delay = self.retry_delays[attempt - 1]
        return delay * random.uniform(1 - JITTER, 1 + JITTER)


async def claim(tx: Tx, limit: int, lease: timedelta) -> list[Any]:
    now = utcnow()
    return await repository.claim(tx, now, now + lease, limit)


@dataclass(frozen=True)
class Ready:
    """A claimed delivery with what its request needs: the URL and the signed request, or the
    outcome that stops it before it is sent (``refused``)."""

    claimed: Any
    event_type: str
    url: str
    headers: dict[str, str]
    body: bytes
    refused: Outcome | None = None


@dataclass(frozen=True)
class Sent:
    """A delivery's attempt, to be recorded. No ``outcome``: its webhook or its entry is gone,
    and the delivery ends without an attempt."""

    claimed: Any
    event_type: str | None
    started: datetime
    outcome: Outcome | None


async def prepare(db: Database, policy: Policy, claimed: Sequence[Any]) -> list[Ready | Sent]:
    """What each claimed delivery sends, read in one go: their webhooks, their entries, and the
    entries as each webhook's org sees them (orgs out of its reach are null), each body made
    once per org and entry. A delivery whose webhook or entry is gone comes back ``Sent``
    without an outcome."""
    async with db.read() as conn:
        hooks = await repository.by_pks(conn, {c.webhook_id for c in claimed})
        entries = await repository.entries(conn, {(c.root_id, c.seq) for c in claimed})
        wanted: dict[int, set[tuple[int, int]]] = defaultdict(set)
        for c in claimed:
            if c.webhook_id in hooks and (c.root_id, c.seq) in entries:
                wanted[hooks[c.webhook_id].org_id].add((c.root_id, c.seq))
        bodies: dict[tuple[int, int, int], bytes] = {}
        for org_id, keys in wanted.items():
            ordered = sorted(keys)
            seen = await as_seen_from_org(conn, org_id, [entries[key] for key in ordered])
            for key, row in zip(ordered, seen, strict=True):
                bodies[(org_id, *key)] = orjson.dumps(events.payload(row, row.org_public_id))
    now = utcnow()
    timestamp = int(time.time())
    signers: dict[int, list[str] | Outcome] = {}
    ready: list[Ready | Sent] = []
    for c in claimed:
        hook = hooks.get(c.webhook_id)
        entry = entries.get((c.root_id, c.seq))
        if hook is None or entry is None:
            ready.append(Sent(c, None, now, None))
            continue
        body = bodies[(hook.org_id, c.root_id, c.seq)]
        if hook.id not in signers:
            try:
                signers[hook.id] = service.signing_secrets(hook, policy.secret_key, now)
            except sealing.Unsealable:
                signers[hook.id] = Outcome(
                    None, "the signing secret does not open: ORGPLANE_SECRET_KEY changed", 0, None
                )
        signer = signers[hook.id]
        if isinstance(signer, Outcome):
            ready.append(Ready(c, entry.action, hook.url, {}, body, refused=signer))
        else:
            headers = signing.headers(signer, c.event_id, timestamp, body)
            ready.append(Ready(c, entry.action, hook.url, headers, body))
    return ready


async def send(sender: Sender, ready: Ready | Sent) -> Sent:
    """The attempt of one prepared delivery (sent, or stopped before)."""
    if isinstance(ready, Sent):
        return ready
    started = utcnow()
    outcome = ready.refused or await sender.send(ready.url, ready.headers, ready.body)
    return Sent(ready.claimed, ready.event_type, started, outcome)


async def record(tx: Tx, sent: Sequence[Sent], policy: Policy) -> None:
    """The attempts in the delivery log, each delivery's next state (if its lease is still this
    attempt's), and the endpoints' failing streaks, which may disable them. Nothing for a
    webhook deleted (with its deliveries and log) while its requests were on their way.

    Locks are taken in one order by every recording transaction (the webhooks kept, the
    deliveries by key, then each webhook whose streak changes, by key), so that two workers
    recording side by side on PostgreSQL wait for each other but never deadlock."""
    kept = await repository.keep_existing(tx, {s.claimed.webhook_id for s in sent})
    sent = [s for s in sent if s.claimed.webhook_id in kept]
    now = utcnow()
    await repository.record_attempts(
        tx,
        [
            service.attempt_values(
                s.claimed.webhook_id,
                s.claimed.id,
                s.claimed.event_id,
                s.event_type,
                s.claimed.attempts,
                s.started,
                s.outcome,
            )
            for s in sent
            if s.outcome is not None and s.event_type is not None
        ],
    )
    await repository.settle_many(tx, [_next_state(s, now, policy) for s in sent])
    by_hook: dict[int, list[Sent]] = defaultdict(list)
    for s in sent:
        if s.outcome is not None:
            by_hook[s.claimed.webhook_id].append(s)
    streaks = {hook_pk: _streak(attempts) for hook_pk, attempts in by_hook.items()}
    to_clear = await repository.failing(
        tx, {hook_pk for hook_pk, failed in streaks.items() if failed is None}
    )
    for hook_pk in sorted(streaks):
        failed = streaks[hook_pk]
        if failed is None:
            if hook_pk in to_clear:
                await repository.clear_failing(tx, hook_pk)
        else:
            await _failing(
                tx,
                hook_pk,
                failed,
                cleared=len(failed) < len(by_hook[hook_pk]),
                now=now,
                policy=policy,
            )


def _next_state(s: Sent, now: datetime, policy: Policy) -> dict[str, Any]:
    state = {
        "delivery_pk": s.claimed.id,
        "attempt": s.claimed.attempts,
        "new_status": "pending",
        "new_delivered_at": None,
        "new_next_attempt_at": None,
    }
    if s.outcome is None:
        state["new_status"] = "failed"
    elif s.outcome.delivered:
        state.update(new_status="delivered", new_delivered_at=now)
    elif (delay := policy.next_delay(s.claimed.attempts)) is None:
        state["new_status"] = "failed"
    else:
        state["new_next_attempt_at"] = now + timedelta(seconds=delay)
    return state


def _streak(attempts: list[Sent]) -> list[Sent] | None:
    """The failed attempts after the endpoint's last success in this batch (None: the last
    attempt succeeded, the endpoint is not failing)."""
    last_ok = max((s.started for s in attempts if s.outcome and s.outcome.delivered), default=None)
    failed = [
        s
        for s in attempts
        if s.outcome and not s.outcome.delivered and (last_ok is None or s.started > last_ok)
    ]
    return failed or None


async def _failing(
    tx: Tx, hook_pk: int, failed: list[Sent], *, cleared: bool, now: datetime, policy: Policy
) -> None:
    """An endpoint whose latest attempts failed: its streak starts (at the first of them, or
    carries on), and past ``policy.disable_after`` it is disabled, an event of its own."""
    hook = await repository.lock_webhook(tx, hook_pk)
    if hook is None or not hook.enabled:
        return
    first = min(s.started for s in failed)
    failing_since = first if cleared or hook.failing_since is None else hook.failing_since
    if now - failing_since < policy.disable_after:
        if hook.failing_since != failing_since:
            await repository.update(tx, hook.id, {"failing_since": failing_since})
        return
    last = max(failed, key=lambda s: s.started).outcome
    assert last is not None
    reason = (
        f"every delivery failed for {policy.disable_after.total_seconds() / 86400:g} days; "
        f"last: {last.error or last.status_code}"
    )[:200]
    await repository.update(
        tx,
        hook.id,
        {
            "enabled": False,
            "disabled_at": now,
            "disabled_reason": reason,
            "failing_since": None,
            "updated_at": now,
        },
    )
    audit.record(
        tx,
        SYSTEM,
        action="webhook.disabled",
        root_id=hook.root_id,
        org_id=hook.org_id,
        target_type="webhook",
        target_id=hook.public_id,
        before={"enabled": True},
        after={"enabled": False, "reason": reason, "failing_since": failing_since.isoformat()},
    )
    log.warning("webhook %s disabled: %s", hook.public_id, reason)


async def deliver_due(db: Database, sender: Sender, policy: Policy, limit: int) -> int:
    """Claim up to ``limit`` due deliveries, send them side by side, record them in one
    transaction. How many were claimed."""
    async with db.read() as conn:
        if not await repository.any_due(conn, utcnow()):
            return 0
    claimed = await db.transaction(claim, limit, policy.lease)
    if claimed:
        ready = await prepare(db, policy, claimed)
        sent = await asyncio.gather(*(send(sender, one) for one in ready))
        await db.transaction(record, sent, policy)
    return len(claimed)
