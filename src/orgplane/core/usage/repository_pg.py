"""Usage ingestion's PostgreSQL statement: the events stored once and folded into both day
counters in one round trip."""

from __future__ import annotations

from datetime import datetime

import orjson
import sqlalchemy as sa

from orgplane.core.usage.repository import Event
from orgplane.db.engine import Tx

_PG_STORE = sa.text(
    # One statement whatever the batch size. The events come as one JSON document, sorted by
    # key: one parameter (a VALUES list would hit PostgreSQL's 32,767 parameters at 4,096
    # events); typed arrays cost asyncpg several times the CPU to encode, and JSONB costs the server
    # more than JSON (it builds the whole document before reading it). The inserted events are
    # summed per (org, meter, day) once, then upserted into both counters in that order (the
    # subtree counters through the (org, ancestor) pairs of the batch's orgs). Meters group and
    # sort in the "C" collation: the order Python sorts them in, cheaper than the database's
    # locale. The keys are taken first (the final SELECT reads them), the counter rows after,
    # each table's in its ORDER BY; every batch runs this one plan, so two batches take shared
    # rows in the same order.
    """
    WITH inserted AS (
        INSERT INTO usage_events
            (root_id, idempotency_key, org_id, meter, quantity, occurred_at, day, received_at)
        SELECT CAST(:root_id AS BIGINT), e.k, e.o, e.m, e.q, e.t, e.d,
               CAST(:received_at AS TIMESTAMPTZ)
        FROM json_to_recordset(CAST(:events AS JSON))
            AS e(k VARCHAR, o BIGINT, m VARCHAR, q BIGINT, t TIMESTAMPTZ, d DATE)
        ON CONFLICT (root_id, idempotency_key) DO NOTHING
        RETURNING idempotency_key, org_id, meter, quantity, day
    ),
    sums AS (
        SELECT org_id, meter COLLATE "C" AS meter, day, sum(quantity) AS quantity
        FROM inserted
        WHERE quantity > 0
        GROUP BY org_id, meter COLLATE "C", day
    ),
    daily AS (
        INSERT INTO usage_daily AS c (org_id, meter, day, root_id, quantity)
        SELECT org_id, meter, day, CAST(:root_id AS BIGINT), quantity
        FROM sums
        ORDER BY org_id, meter, day
        ON CONFLICT (org_id, meter, day) DO UPDATE SET quantity = c.quantity + excluded.quantity
    ),
    subtree AS (
        INSERT INTO usage_subtree_daily AS c (org_id, meter, day, root_id, quantity)
        SELECT a.ancestor, s.meter, s.day, CAST(:root_id AS BIGINT), sum(s.quantity)
        FROM sums AS s
        JOIN json_to_recordset(CAST(:ancestors AS JSON)) AS a(org BIGINT, ancestor BIGINT)
            ON a.org = s.org_id
        GROUP BY a.ancestor, s.meter, s.day
        ORDER BY a.ancestor, s.meter, s.day
        ON CONFLICT (org_id, meter, day) DO UPDATE SET quantity = c.quantity + excluded.quantity
    )
    SELECT array_agg(idempotency_key) FROM inserted
    """
)


async def store(tx: Tx, events: list[Event], now: datetime) -> set[str]:
    """Insert the events whose key is new to the tenant tree and fold them into the counters;
    return the keys inserted."""
    orgs_by_id = {e.org.id: e.org for e in events}
    document = orjson.dumps(
        [
            {
                "k": e.key,
                "o": e.org.id,
                "m": e.meter,
                "q": e.quantity,
                "t": e.occurred_at,
                "d": e.day,
            }
            for e in events
        ]
    )
    ancestors = orjson.dumps(
        [{"org": org.id, "ancestor": a} for org in orgs_by_id.values() for a in org.ancestors]
    )
    result = await tx.execute(
        _PG_STORE,
        {
            "root_id": events[0].org.root_id,  # a batch stays within one tenant tree
            "received_at": now,
            "events": document.decode(),
            "ancestors": ancestors.decode(),
        },
    )
    return set(result.scalar_one() or ())
