"""Delivery: due deliveries claimed with a lease, sent, and their outcome recorded.

A worker claims due deliveries in a short transaction (on PostgreSQL ``FOR UPDATE SKIP LOCKED``,
so workers never claim the same row; SQLite has one writer), which leases each: it is due again
when the lease ends. It then sends each one, and records the attempt and the delivery's next
state in a second transaction. A worker killed between the two leaves the lease to run out: the
delivery is then sent again (at least once). Every attempt of an event carries the same
``webhook-id`` (the event's id), so receivers can drop duplicates.

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


async def _prepare(db: Database, claimed: Any) -> tuple[Any, Any, bytes] | None:
    """The webhook, the entry and the body of one claimed delivery (None: the webhook or the
    entry is gone)."""
    async with db.read() as conn:
        hook = await repository.by_pk(conn, claimed.webhook_id)
        entry = await repository.entry(conn, claimed.root_id, claimed.seq)
        if hook is None or entry is None:
            return None
        (seen,) = await as_seen_from_org(conn, hook.org_id, [entry])
    return hook, entry, orjson.dumps(events.payload(seen, entry.org_public_id))


async def deliver_one(db: Database, sender: Sender, policy: Policy, claimed: Any) -> Outcome | None:
    """Send one claimed delivery and record its outcome."""
    started = utcnow()
    prepared = await _prepare(db, claimed)
    if prepared is None:
        await db.transaction(_drop, claimed=claimed)
        return None
    hook, entry, body = prepared
    try:
        secrets_ = service.signing_secrets(hook, policy.secret_key, started)
    except sealing.Unsealable:
        outcome = Outcome(
            None, "the signing secret does not open: ORGPLANE_SECRET_KEY changed", 0, None
        )
    else:
        headers = signing.headers(secrets_, claimed.event_id, int(time.time()), body)
        outcome = await sender.send(hook.url, headers, body)
    await db.transaction(
        record,
        claimed=claimed,
        event_type=entry.action,
        started=started,
        outcome=outcome,
        policy=policy,
    )
    return outcome


async def _drop(tx: Tx, *, claimed: Any) -> None:
    await repository.settle(
        tx, claimed.id, claimed.attempts, {"status": "failed", "leased_until": None}
    )


async def record(
    tx: Tx, *, claimed: Any, event_type: str, started: datetime, outcome: Outcome, policy: Policy
) -> None:
    """The attempt in the delivery log, the delivery's next state (if the lease is still this
    attempt's), and the endpoint's failing streak, which may disable it. Nothing, if the
    webhook was deleted (with its deliveries and log) while the request was on its way."""
    if not await repository.still_there(tx, claimed.webhook_id):
        return
    await repository.record_attempt(
        tx,
        service.attempt_values(
            claimed.webhook_id,
            claimed.id,
            claimed.event_id,
            event_type,
            claimed.attempts,
            started,
            outcome,
        ),
    )
    now = utcnow()
    if outcome.delivered:
        await repository.settle(
            tx,
            claimed.id,
            claimed.attempts,
            {"status": "delivered", "delivered_at": now, "leased_until": None},
        )
        await repository.clear_failing(tx, claimed.webhook_id)
        return
    delay = policy.next_delay(claimed.attempts)
    if delay is None:
        state: dict[str, Any] = {"status": "failed", "leased_until": None}
    else:
        state = {"next_attempt_at": now + timedelta(seconds=delay), "leased_until": None}
    await repository.settle(tx, claimed.id, claimed.attempts, state)
    hook = await repository.lock_webhook(tx, claimed.webhook_id)
    if hook is None or not hook.enabled:
        return
    failing_since = hook.failing_since or started
    if now - failing_since >= policy.disable_after:
        reason = (
            f"every delivery failed for {policy.disable_after.total_seconds() / 86400:g} days; "
            f"last: {outcome.error or outcome.status_code}"
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
    elif hook.failing_since is None:
        await repository.update(tx, hook.id, {"failing_since": started})


async def deliver_due(db: Database, sender: Sender, policy: Policy, limit: int) -> int:
    """Claim up to ``limit`` due deliveries, send them side by side, record each. How many."""
    async with db.read() as conn:
        if not await repository.any_due(conn, utcnow()):
            return 0
    claimed = await db.transaction(claim, limit, policy.lease)
    if claimed:
        await asyncio.gather(*(deliver_one(db, sender, policy, c) for c in claimed))
    return len(claimed)
