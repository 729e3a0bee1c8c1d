"""Fan-out: the audit log read forward, each entry queued for every webhook it matches.

Per tenant, the dispatcher reads the entries after its position (``event_positions``, consumer
``webhooks``), queues one delivery per (matching webhook, entry), and moves the position, all in
one transaction: the fan-out of an entry happens exactly once, even if the process dies halfway.
Entries get their ``seq`` under the tenant's chain-head lock, which is held until commit, so a
committed entry's predecessors are committed before it: reading ``seq > last_seq`` never skips
one. On PostgreSQL the position row is taken with ``SKIP LOCKED``, so workers fan out different
tenants side by side.

A webhook matches an entry of its own org, or (``include_descendants``) of an org below it, whose
type matches one of its patterns (``core.events.matches``), committed after the webhook was.
"""

from __future__ import annotations

from typing import Any

from orgplane.core import events
from orgplane.core.access.principal import path_reaches
from orgplane.core.events import positions
from orgplane.core.webhooks import repository
from orgplane.core.webhooks.service import CONSUMER
from orgplane.db.engine import Database, Tx
from orgplane.models.base import utcnow

BATCH = 500


def matches(webhook: Any, entry: Any) -> bool:
    if entry.seq <= webhook.since_seq:
        return False
    if entry.org_id != webhook.org_id and not (
        webhook.include_descendants and path_reaches(webhook.org_id, entry.org_path)
    ):
        return False
    return events.matches(webhook.event_types, entry.action)


async def dispatch_tenant(tx: Tx, root_id: int, limit: int = BATCH) -> int:
    """Queue the deliveries of up to ``limit`` entries of the tenant past the position, and move
    it past them. How many entries were read (0: none, or another worker holds the tenant)."""
    last_seq = await positions.take_position(tx, CONSUMER, root_id)
    if last_seq is None:
        return 0
    # The head is read before the webhooks: one created after this read matches only entries
    # past the head it read itself, which is at least this one, so none is skipped.
    head = await positions.chain_head(tx.conn, root_id)
    hooks = await repository.live_webhooks_of_tenant(tx.conn, root_id)
    if not hooks:
        # Nothing can match: the position moves to the head without reading what lies between
        # (a tenant whose webhooks are all disabled or deleted costs two reads per pass).
        await positions.move_position(tx, CONSUMER, root_id, head)
        return 0
    entries = await repository.fan_out_entries(tx, root_id, last_seq, limit)
    if not entries:
        return 0
    now = utcnow()
    await repository.queue(
        tx,
        [
            {
                "webhook_id": hook.id,
                "root_id": root_id,
                "seq": entry.seq,
                "event_id": events.event_id(entry.hash),
                "event_at": entry.at,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for entry in entries
            for hook in hooks
            if matches(hook, entry)
        ],
    )
    await positions.move_position(tx, CONSUMER, root_id, entries[-1].seq)
    return len(entries)


async def dispatch(db: Database, limit: int = BATCH, *, drain: bool = True) -> int:
    """One pass over every tenant with entries past the position: all of them (``drain``), or
    up to ``limit`` of each (the worker's loop, which sends deliveries between its passes). How
    many entries were read."""
    async with db.read() as conn:
        behind = await positions.tenants_behind(conn, CONSUMER)
    read = 0
    for root_id in behind:
        while True:
            count = await db.transaction(dispatch_tenant, root_id, limit)
            read += count
            if count < limit or not drain:
                break
    return read
