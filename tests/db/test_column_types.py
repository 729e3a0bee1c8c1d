"""The shared column types read back what was written, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from orgplane.db.engine import Tx
from orgplane.models import orgs
from support.harness import Harness

MOMENTS = [
    datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC),
    datetime(2026, 11, 22, 10, 0, 0, 1, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    # Another zone is stored as the same instant in UTC.
    datetime(2026, 6, 1, 12, 30, 15, 250_000, tzinfo=timezone(timedelta(hours=-7))),
]


@pytest.mark.parametrize("moment", MOMENTS)
async def test_utc_datetimes_round_trip_aware_and_exact(h: Harness, moment: datetime) -> None:
    async def write(tx: Tx) -> None:
        await tx.execute(
            orgs.update().where(orgs.c.public_id == h.root.org_id).values(modified_at=moment)
        )

    await h.services.db.transaction(write)
    async with h.services.db.read() as conn:
        value = (
            await conn.execute(
                sa.select(orgs.c.modified_at).where(orgs.c.public_id == h.root.org_id)
            )
        ).scalar()
    assert value == moment
    assert value.tzinfo is UTC
    assert value.utcoffset() == timedelta(0)


async def test_null_datetimes_read_as_none(h: Harness) -> None:
    async with h.services.db.read() as conn:
        value = (
            await conn.execute(
                sa.select(orgs.c.deleted_at).where(orgs.c.public_id == h.root.org_id)
            )
        ).scalar()
    assert value is None
