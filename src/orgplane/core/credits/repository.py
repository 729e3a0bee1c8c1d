"""The SQL of limits and the ledger: the balances' rows, locked and saved, and ledger rows.

The rules are ``service``'s and ``allocation``'s; PostgreSQL's one-statement allocation is in
``allocation_pg``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orgplane.core.access.principal import Actor
from orgplane.core.errors import NotFound
from orgplane.db.engine import Reader, Tx
from orgplane.models import ledger, meters, org_limits
from orgplane.models.base import utcnow


@dataclass
class Balance:
    """One org's numbers for one meter (zeros when it has no row yet)."""

    org_id: int
    meter: str
    amount: int = 0
    allocated: int = 0
    charge: int = 0
    exists: bool = False

    @property
    def available(self) -> int:
        return self.amount - self.allocated

    def as_dict(self) -> dict[str, int]:
        return {"limit": self.amount, "allocated": self.allocated, "available": self.available}


# The statements of every allocation, built once (building one costs more than running it).
_METER_BY_NAME = sa.select(meters).where(meters.c.name == sa.bindparam("name"))
_UPDATE_BALANCE = (
    sa.update(org_limits)
    .where(
        org_limits.c.org_id == sa.bindparam("balance_org_id"),
        org_limits.c.meter == sa.bindparam("balance_meter"),
    )
    .values(
        amount=sa.bindparam("new_amount"),
        allocated=sa.bindparam("new_allocated"),
        charge=sa.bindparam("new_charge"),
        updated_at=sa.bindparam("new_updated_at"),
    )
)
_INSERT_BALANCE = sa.insert(org_limits)
_INSERT_LEDGER = sa.insert(ledger)


async def get_meter(conn: Reader, name: str) -> Any:
    row = (await conn.execute(_METER_BY_NAME, {"name": name})).first()
    if row is None:
        raise NotFound(f"meter {name!r} not found")
    return row


async def find_meter(conn: Reader, name: str) -> Any | None:
    return (await conn.execute(_METER_BY_NAME, {"name": name})).first()


async def meters_by_name(conn: Reader) -> dict[str, Any]:
    return {row.name: row for row in (await conn.execute(sa.select(meters))).all()}


def _depth_order(rows: Iterable[Any]) -> list[Any]:
    return sorted(rows, key=lambda r: (r.depth, r.id))


async def lock_balances(
    tx: Tx, org_rows: Iterable[Any], meter: str | None = None
) -> dict[tuple[int, str], Balance]:
    """Lock (PostgreSQL) and read the limit rows of these orgs, ancestors first."""
    ordered = _depth_order(org_rows)
    if not ordered:
        return {}
    rank = {row.id: i for i, row in enumerate(ordered)}
    statement = sa.select(org_limits).where(org_limits.c.org_id.in_(list(rank)))
    if meter is not None:
        statement = statement.where(org_limits.c.meter == meter)
    if tx.is_postgres:
        # ORDER BY in SQL fixes the order in which PostgreSQL takes the row locks.
        depth_case = sa.case(rank, value=org_limits.c.org_id)
        statement = statement.order_by(depth_case, org_limits.c.meter).with_for_update()
    found = await _read_balances(tx, statement)
    if tx.is_postgres and meter is not None and len(found) < len(rank):
        # A row missing from this statement's snapshot may have been inserted by a transaction
        # that held an ancestor's lock we just waited for; read again now that we hold it, or
        # we would insert the row a second time.
        found = await _read_balances(tx, statement)
    return found


async def _read_balances(tx: Tx, statement: Any) -> dict[tuple[int, str], Balance]:
    return {
        (row.org_id, row.meter): Balance(
            row.org_id, row.meter, int(row.amount), int(row.allocated), int(row.charge), True
        )
        for row in await tx.execute(statement)
    }


def balance_of(balances: dict[tuple[int, str], Balance], org_id: int, meter: str) -> Balance:
    return balances.get((org_id, meter)) or Balance(org_id, meter)


async def save_balance(tx: Tx, root_id: int, balance: Balance) -> None:
    now = utcnow()
    if balance.exists:
        await tx.execute(
            _UPDATE_BALANCE,
            {
                "balance_org_id": balance.org_id,
                "balance_meter": balance.meter,
                "new_amount": balance.amount,
                "new_allocated": balance.allocated,
                "new_charge": balance.charge,
                "new_updated_at": now,
            },
        )
    else:
        await tx.execute(
            _INSERT_BALANCE,
            {
                "org_id": balance.org_id,
                "meter": balance.meter,
                "root_id": root_id,
                "amount": balance.amount,
                "allocated": balance.allocated,
                "charge": balance.charge,
                "updated_at": now,
            },
        )
        balance.exists = True


async def write_ledger(
    tx: Tx,
    actor: Actor,
    *,
    kind: str,
    root_id: int,
    meter: str,
    org: Balance,
    parent: Balance | None,
    delta: int,
    charge_delta: int = 0,
    idempotency_key: str | None = None,
) -> None:
    await tx.execute(
        _INSERT_LEDGER,
        ledger_row(
            actor,
            kind=kind,
            root_id=root_id,
            meter=meter,
            org=org,
            parent=parent,
            delta=delta,
            charge_delta=charge_delta,
            idempotency_key=idempotency_key,
        ),
    )


def ledger_row(
    actor: Actor,
    *,
    kind: str,
    root_id: int,
    meter: str,
    org: Balance,
    parent: Balance | None,
    delta: int,
    charge_delta: int,
    idempotency_key: str | None,
) -> dict[str, Any]:
    principal = actor.principal
    return {
        "root_id": root_id,
        "at": utcnow(),
        "meter": meter,
        "kind": kind,
        "org_id": org.org_id,
        "parent_id": parent.org_id if parent else None,
        "delta": delta,
        "charge_delta": charge_delta,
        "org_amount": org.amount,
        "org_allocated": org.allocated,
        "parent_amount": parent.amount if parent else None,
        "parent_allocated": parent.allocated if parent else None,
        "actor": actor.label,
        "actor_key_id": principal.key_id if principal else None,
        "request_id": actor.meta.request_id,
        "idempotency_key": idempotency_key,
    }
