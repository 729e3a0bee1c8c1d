"""Limits, allocations and their append-only ledger.

For each org and meter, ``org_limits`` holds ``amount`` (what the org was given), ``allocated``
(what it handed to its children, deployment charges included) and ``charge`` (the deployment
charge its own allocation costs its parent). The invariants, after every commit:

1. a parent's amount = its available pool + the sum over its children of (amount + charge),
   and no pool is negative (a CHECK constraint backs this up);
2. a child's amount is never set below what it handed on plus what it consumed this period,
   and a parent never hands on what it consumed itself (allocated + consumed <= amount is kept
   by every change of an amount or of what is allocated; only soft usage can break it);
3. amounts are multiples of the meter's step;
4. every change is a ledger row, and replaying the ledger gives back every balance (``verify``);
5. deleting or deactivating an org returns its unused allocation to its parent (in whole
   steps: it keeps what it handed on plus consumed, rounded up to the step).

Locking (PostgreSQL): the tenant root FOR KEY SHARE (moves and deletes take it FOR UPDATE),
then the ``org_limits`` rows involved FOR UPDATE in one order everywhere — ancestors first, by
(depth, org id) — then the audit chain head at commit. Allocators on one parent queue on the
parent's row; nothing waits in the opposite order, so allocation cannot deadlock. An allocation
(``_allocate_postgres``) keeps that order in fewer statements: the parent's and the child's org
rows FOR KEY SHARE with the root, then the two limit rows and the chain head in one statement,
then every write.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from orgplane.core.access.principal import Actor, Caller, Principal
from orgplane.core.access.service import reach
from orgplane.core.audit import service as audit
from orgplane.core.credits import allocation_pg
from orgplane.core.credits.errors import (
    BelowConsumption,
    CreditError,
    InsufficientPool,
    NoLimitForMeter,
    NotAStepMultiple,
)
from orgplane.core.errors import Conflict, InvalidInput, NotFound
from orgplane.core.locks import lock_tree
from orgplane.core.usage.counters import consumed_this_period, local_today, period_start
from orgplane.db.engine import Reader, Tx
from orgplane.db.grouped import grouped_by
from orgplane.models import ledger, meters, org_limits
from orgplane.models.base import utcnow

MAX_AMOUNT = 10**15


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


@dataclass(frozen=True)
class Allocation:
    meter: str
    parent: Any
    child: Any
    parent_balance: Balance
    child_balance: Balance
    diff: int
    charge: int
    changed: bool

    @property
    def limit_increased(self) -> bool:
        return self.diff > 0


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


def check_amount(amount: int, meter: Any, field: str = "amount") -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise InvalidInput.for_field(field, "must be a whole number ≥ 0")
    if amount > MAX_AMOUNT:
        raise InvalidInput.for_field(field, f"must be at most {MAX_AMOUNT}")
    if amount % meter.step:
        raise NotAStepMultiple(
            f"{field}: {amount} is not a multiple of the {meter.name!r} meter's step "
            f"({meter.step})",
            errors=[InvalidInput.for_field(field, f"must be a multiple of {meter.step}").errors[0]],
        )


def deployment_charge(meter: Any, parent: Any, child: Any, amount: int) -> int:
    """What allocating ``amount`` to a child in another deployment costs the parent on top."""
    pct = meter.deployment_charge_pct
    if not pct or parent.deployment == child.deployment or amount == 0:
        return 0
    return math.ceil(Decimal(amount) * Decimal(pct) / 100)


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


def _balance(balances: dict[tuple[int, str], Balance], org_id: int, meter: str) -> Balance:
    return balances.get((org_id, meter)) or Balance(org_id, meter)


async def _save(tx: Tx, root_id: int, balance: Balance) -> None:
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


async def _write_ledger(
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
        _ledger_row(
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


def _ledger_row(
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


def _move(org: Balance, parent: Balance, delta: int, charge_delta: int) -> None:
    """Move ``delta`` (and ``charge_delta`` of deployment charge) from the parent's pool to the
    org's amount — negative values give it back: the one place where the conservation of
    invariant 1 is applied, for allocations, releases and moves alike."""
    parent.allocated += delta + charge_delta
    org.amount += delta
    org.charge += charge_delta


async def _shift(
    tx: Tx,
    actor: Actor,
    kind: str,
    root_id: int,
    org: Balance,
    parent: Balance,
    delta: int,
    charge_delta: int,
    *,
    idempotency_key: str | None = None,
    save_org: bool = True,
) -> None:
    """``_move`` the amounts, save the balances and write the ledger row."""
    _move(org, parent, delta, charge_delta)
    await _save(tx, root_id, parent)
    if save_org:
        await _save(tx, root_id, org)
    await _write_ledger(
        tx,
        actor,
        kind=kind,
        root_id=root_id,
        meter=org.meter,
        org=org,
        parent=parent,
        delta=delta,
        charge_delta=charge_delta,
        idempotency_key=idempotency_key,
    )


async def set_root_limit(
    tx: Tx,
    actor: Actor,
    org_ref: str,
    meter_name: str,
    amount: int,
    *,
    idempotency_key: str | None = None,
) -> tuple[Any, Balance]:
    """The limit of a tenant root, set through the API by a key of that root."""
    principal = _principal(actor)
    org = await reach(tx.conn, principal, org_ref, scope="credits:write")
    return org, await apply_root_limit(
        tx, actor, org, meter_name, amount, idempotency_key=idempotency_key
    )


async def apply_root_limit(
    tx: Tx,
    actor: Actor,
    org: Any,
    meter_name: str,
    amount: int,
    *,
    idempotency_key: str | None = None,
) -> Balance:
    """Set a root's limit (the API after reach, or the operator's CLI); children get theirs by
    allocation. It cannot be lowered below what the root handed on plus what it consumed this
    period."""
    if org.parent_id is not None:
        raise Conflict(
            f"organization {org.public_id!r} is not a root: its limits come from its parent's "
            f"allocation (PUT /orgs/{{parent}}/children/{org.public_id}/allocations/{meter_name})"
        )
    meter = await get_meter(tx, meter_name)
    check_amount(amount, meter)
    await lock_tree(tx, org.root_id, shared=True)
    balance = _balance(await lock_balances(tx, [org], meter.name), org.id, meter.name)
    consumed = (await consumed_this_period(tx, [org], meter.name)).get((org.id, meter.name), 0)
    floor = balance.allocated + consumed
    # Only a cut is refused, as for a child's allocation: a root whose soft usage ran past its
    # limit can still be raised (or set to what it is), even if not yet above what it used.
    if amount < balance.amount and amount < floor:
        raise BelowConsumption(
            f"the limit cannot go below {floor}: {balance.allocated} is allocated to children "
            f"and {consumed} was consumed this period"
        )
    delta = amount - balance.amount
    if delta == 0 and balance.exists:
        return balance
    balance.amount = amount
    await _save(tx, org.root_id, balance)
    await _write_ledger(
        tx,
        actor,
        kind="limit.set",
        root_id=org.root_id,
        meter=meter.name,
        org=balance,
        parent=None,
        delta=delta,
        idempotency_key=idempotency_key,
    )
    audit.record(
        tx,
        actor,
        action="credits.limit_set",
        root_id=org.root_id,
        org_id=org.id,
        target_type="limit",
        target_id=f"{org.public_id}/{meter.name}",
        before={"limit": amount - delta},
        after={"limit": amount},
    )
    return balance


def _allocation_group(
    *,
    actor: Caller,
    parent_ref: str | int | None,
    child_ref: str | int,
    meter: str,
    **_: Any,
) -> Hashable:
    """Allocations from one parent queue on its pool row: those waiting at the same time share
    a transaction and its commit (``db.grouped``), each still refused on its own. Named as the
    caller named the parent (the child, when the parent is the child's own): two names of one
    parent make two groups, which only shares less."""
    parent = ("parent", parent_ref) if parent_ref is not None else ("parent of", child_ref)
    return ("allocation", actor.principal.root_id, parent, meter)


@grouped_by(_allocation_group)
async def allocate(
    tx: Tx,
    *,
    actor: Caller,
    parent_ref: str | int | None,
    child_ref: str | int,
    meter: str,
    amount: int,
    idempotency_key: str | None = None,
) -> Allocation:
    """Set a direct child's allocation of a meter, moving the difference from the parent's
    pool. ``parent_ref`` None: from the child's own parent, whichever it is at the time."""
    principal = actor.principal
    # The tree first, then the parent and the child read under it: a move, delete, restore or
    # deactivation (which lock the tree FOR UPDATE) either committed before these reads or
    # waits for this commit, so the checks below stay true until then.
    await lock_tree(tx, principal.root_id, shared=True)
    if parent_ref is None:
        child = await reach(tx.conn, principal, child_ref, scope="credits:write")
        if child.parent_id is None:
            raise Conflict(
                f"organization {child.public_id!r} is a root: set its limit instead "
                f"(PUT /orgs/{child.public_id}/limits/{meter})"
            )
        parent = await reach(tx.conn, principal, child.parent_public_id, scope="credits:write")
    else:
        parent = await reach(tx.conn, principal, parent_ref, scope="credits:write")
        child = await reach(tx.conn, principal, child_ref, scope="credits:write")
    if child.parent_id != parent.id:
        raise NotFound(f"organization {child_ref!r} is not a child of {parent_ref!r}")
    if child.status == "deactivated":
        # Its unused allocation went back to the parent when it was deactivated.
        raise Conflict(f"organization {child_ref!r} is deactivated; reactivate it first")
    if tx.is_postgres:
        # The same rules in fewer round trips.
        return await _allocate_postgres(
            tx, actor, parent, child, meter, amount, idempotency_key=idempotency_key
        )
    meter_row = await get_meter(tx, meter)
    check_amount(amount, meter_row)
    return await _allocate_locked(
        tx, actor, parent, child, meter_row, amount, idempotency_key=idempotency_key
    )


@dataclass(frozen=True)
class _Change:
    """What setting a child's allocation moves, decided before anything is written."""

    delta: int
    charge_delta: int
    new_charge: int
    parent_available: int
    # The most the parent, and the child, may have consumed themselves this period for the
    # change to stand (None: no check): a parent never hands on what it consumed, and a child
    # keeps at least what it handed on plus what it consumed.
    parent_may_use: int | None
    child_may_use: int | None

    @property
    def need(self) -> int:
        return self.delta + self.charge_delta

    @property
    def changes(self) -> bool:
        return self.delta != 0 or self.charge_delta != 0


def _plan(
    meter: Any,
    parent: Any,
    child: Any,
    amount: int,
    parent_balance: Balance,
    child_balance: Balance,
) -> _Change:
    """Refuse what the locked balances alone forbid; what consumption forbids is left to
    ``_consumption_refusal``."""
    if not parent_balance.exists:
        raise NoLimitForMeter(
            f"organization {parent.public_id!r} has no {meter.name!r} limit to allocate from"
        )
    new_charge = deployment_charge(meter, parent, child, amount)
    delta = amount - child_balance.amount
    charge_delta = new_charge - child_balance.charge
    need = delta + charge_delta
    available = parent_balance.available
    if need > available:
        raise InsufficientPool(
            f"organization {parent.public_id!r} has {available} {meter.unit} "
            f"available; this allocation needs {need} more"
            + (f" ({charge_delta} of it deployment charge)" if charge_delta else "")
        )
    return _Change(
        delta,
        charge_delta,
        new_charge,
        available,
        parent_may_use=available - need if need > 0 else None,
        child_may_use=amount - child_balance.allocated if delta < 0 else None,
    )


def _consumption_refusal(
    parent: Any,
    child: Any,
    meter: Any,
    change: _Change,
    child_allocated: int,
    parent_used: int,
    child_used: int,
) -> CreditError | None:
    """The error refusing ``change`` given what the parent and the child consumed this period
    (figures ignored where ``change`` has no check), or None."""
    if change.parent_may_use is not None and parent_used > change.parent_may_use:
        return _consumed_by_parent(parent, change.parent_available, meter, parent_used, change.need)
    if change.child_may_use is not None and child_used > change.child_may_use:
        floor = child_allocated + child_used
        return BelowConsumption(
            f"organization {child.public_id!r} needs at least {floor} {meter.unit}: "
            f"{child_allocated} allocated to its children and {child_used} consumed "
            "this period"
        )
    return None


def _consumed_by_parent(
    parent: Any, available: int, meter: Any, consumed: int, need: int
) -> InsufficientPool:
    return InsufficientPool(
        f"organization {parent.public_id!r} has {available} {meter.unit} available "
        f"but consumed {consumed} of it this period, which it cannot hand on; this needs "
        f"{need} more"
    )


def _allocation_audit(
    parent: Any, child: Any, meter: Any, amount: int, change: _Change
) -> dict[str, Any]:
    return {
        "action": "credits.allocated",
        "root_id": parent.root_id,
        "org_id": child.id,
        "target_type": "allocation",
        "target_id": f"{child.public_id}/{meter.name}",
        "before": {
            "limit": amount - change.delta,
            "charge": change.new_charge - change.charge_delta,
        },
        "after": {"limit": amount, "charge": change.new_charge, "parent": parent.public_id},
    }


async def _allocate_locked(
    tx: Tx,
    actor: Actor,
    parent: Any,
    child: Any,
    meter: Any,
    amount: int,
    *,
    idempotency_key: str | None,
) -> Allocation:
    balances = await lock_balances(tx, [parent, child], meter.name)
    parent_balance = _balance(balances, parent.id, meter.name)
    child_balance = _balance(balances, child.id, meter.name)
    change = _plan(meter, parent, child, amount, parent_balance, child_balance)
    used = {}
    for org, may_use in ((parent, change.parent_may_use), (child, change.child_may_use)):
        if may_use is not None:
            consumed = await consumed_this_period(tx, [org], meter.name)
            used[org.id] = consumed.get((org.id, meter.name), 0)
    refusal = _consumption_refusal(
        parent,
        child,
        meter,
        change,
        child_balance.allocated,
        used.get(parent.id, 0),
        used.get(child.id, 0),
    )
    if refusal is not None:
        raise refusal
    if not change.changes:
        return Allocation(
            meter.name, parent, child, parent_balance, child_balance, 0, child_balance.charge, False
        )
    await _shift(
        tx,
        actor,
        "allocation",
        parent.root_id,
        child_balance,
        parent_balance,
        change.delta,
        change.charge_delta,
        idempotency_key=idempotency_key,
    )
    audit.record(tx, actor, **_allocation_audit(parent, child, meter, amount, change))
    return Allocation(
        meter.name,
        parent,
        child,
        parent_balance,
        child_balance,
        change.delta,
        change.new_charge,
        True,
    )


async def _allocate_postgres(
    tx: Tx,
    actor: Actor,
    parent: Any,
    child: Any,
    meter_name: str,
    amount: int,
    *,
    idempotency_key: str | None,
) -> Allocation:
    """``_allocate_locked`` on PostgreSQL in three statements: the meter with the tree lock (and
    the key locks of the writes' foreign keys), the limit rows then the audit chain head locked,
    and every write (made only if the consumption checks pass) — then the commit. The parent's
    row is held for two round trips after its lock, instead of eight.

    The audit entry is chained in place only when it is the transaction's first and last: when
    other entries wait to be chained before it, or others may follow (a transaction shared by
    several allocations, ``db.grouped``), it is queued for the commit, and the chain head is
    locked then, after every limit row of the transaction, as every audited write does."""
    meter = await allocation_pg.meter_and_key_locks(tx, meter_name, parent, child)
    if meter is None:
        raise NotFound(f"meter {meter_name!r} not found")
    check_amount(amount, meter)
    chain_here = not tx.pending_audit and not tx.grouped
    locked = await allocation_pg.lock(
        tx, parent.root_id, parent.id, child.id, meter.name, head=chain_here
    )
    balances = {
        (org_id, meter.name): Balance(
            org_id, meter.name, int(r.amount), int(r.allocated), int(r.charge), True
        )
        for org_id, r in locked.pools.items()
    }
    parent_balance = _balance(balances, parent.id, meter.name)
    child_balance = _balance(balances, child.id, meter.name)
    change = _plan(meter, parent, child, amount, parent_balance, child_balance)
    if not change.changes:
        return Allocation(
            meter.name, parent, child, parent_balance, child_balance, 0, child_balance.charge, False
        )
    _move(child_balance, parent_balance, change.delta, change.charge_delta)
    entry = audit.make_entry(actor, **_allocation_audit(parent, child, meter, amount, change))
    if chain_here:
        assert locked.seq is not None and locked.last_hash is not None
        audit.link([entry], locked.seq, locked.last_hash)
    used = await allocation_pg.write(
        tx,
        root_id=parent.root_id,
        meter=meter.name,
        now=entry["at"],
        parent=parent_balance,
        child=child_balance,
        since=(
            period_start(local_today(parent.timezone)),
            period_start(local_today(child.timezone)),
        ),
        may_use=(change.parent_may_use, change.child_may_use),
        ledger_row=_ledger_row(
            actor,
            kind="allocation",
            root_id=parent.root_id,
            meter=meter.name,
            org=child_balance,
            parent=parent_balance,
            delta=change.delta,
            charge_delta=change.charge_delta,
            idempotency_key=idempotency_key,
        ),
        audit_entry=entry if chain_here else None,
    )
    if not used.ok:
        refusal = _consumption_refusal(
            parent, child, meter, change, child_balance.allocated, used.parent, used.child
        )
        raise refusal or AssertionError("the allocation's checks disagree")
    if not chain_here:
        tx.pending_audit.append(entry)
    child_balance.exists = True
    return Allocation(
        meter.name,
        parent,
        child,
        parent_balance,
        child_balance,
        change.delta,
        change.new_charge,
        True,
    )


async def _check_unconsumed(tx: Tx, parent: Any, balance: Balance, meter: Any, need: int) -> None:
    """Refuse to hand on what the parent consumed itself this period.

    Its pool (amount - allocated) still counts its own consumption: giving that away would let
    the child consume it again, quota created from nothing (on a hard meter, usage the hard limit
    had already counted). So a parent, like a root whose limit is set, keeps allocated +
    consumed <= amount. The caller holds the parent's limit row, which hard-meter ingestion
    locks too.
    """
    consumed = (await consumed_this_period(tx, [parent], meter.name)).get(
        (parent.id, meter.name), 0
    )
    if consumed and need > balance.available - consumed:
        raise _consumed_by_parent(parent, balance.available, meter, consumed, need)


async def allocate_initial(
    tx: Tx, actor: Actor, parent: Any, child: Any, amounts: dict[str, Any]
) -> list[Allocation]:
    """Allocations given in a create request, taken from the parent in the same transaction."""
    results = []
    for meter_name in sorted(amounts):
        field = f"allocations.{meter_name}"
        meter = (await tx.execute(sa.select(meters).where(meters.c.name == meter_name))).first()
        if meter is None:
            raise InvalidInput.for_field(field, "unknown meter")
        check_amount(amounts[meter_name], meter, field)
        results.append(
            await _allocate_locked(
                tx, actor, parent, child, meter, amounts[meter_name], idempotency_key=None
            )
        )
    return results


async def release(tx: Tx, actor: Actor, subtree: list[Any], parent: Any) -> None:
    """Return the unused allocations of ``subtree`` (live orgs being deleted or deactivated).

    Deepest orgs first, each keeps what its own children still hold plus what it consumed this
    period, rounded up to the meter's step (an amount is always a multiple of the step, so at
    most step - 1 of it is unused), and gives the rest back to its parent; so the top org's
    parent gets back everything the subtree did not use, in whole steps. The caller holds the
    tree lock.
    """
    if not subtree:
        return
    by_id = {row.id: row for row in [*subtree, parent]}
    balances = await lock_balances(tx, by_id.values())
    if not balances:
        return
    consumed = await consumed_this_period(tx, subtree)
    meter_rows = {m.name: m for m in (await tx.execute(sa.select(meters))).all()}
    for org in sorted(subtree, key=lambda r: (-r.depth, r.id)):
        holder = by_id[org.parent_id]
        for (org_id, meter_name), balance in sorted(balances.items()):
            if org_id != org.id:
                continue
            meter = meter_rows[meter_name]
            # What it still needs, in whole steps: amounts stay multiples of the step (3.), and
            # the amount, itself a multiple, caps it.
            needed = balance.allocated + consumed.get((org.id, meter_name), 0)
            keep = min(balance.amount, -(-needed // meter.step) * meter.step)
            new_charge = deployment_charge(meter, holder, org, keep)
            delta = keep - balance.amount
            charge_delta = new_charge - balance.charge
            if delta == 0 and charge_delta == 0:
                continue
            parent_balance = _balance(balances, holder.id, meter_name)
            await _shift(
                tx, actor, "release", org.root_id, balance, parent_balance, delta, charge_delta
            )
            audit.record(
                tx,
                actor,
                action="credits.released",
                root_id=org.root_id,
                org_id=org.id,
                target_type="allocation",
                target_id=f"{org.public_id}/{meter_name}",
                before={"limit": keep - delta},
                after={"limit": keep, "returned_to": holder.public_id},
            )


async def transfer(tx: Tx, actor: Actor, org: Any, old_parent: Any, new_parent: Any) -> None:
    """A moved org takes its allocations along: the old parent's pool gets them back and the
    new parent's pool pays for them (refused if it cannot). The caller holds the tree lock."""
    balances = await lock_balances(tx, [old_parent, new_parent, org])
    meter_rows = {m.name: m for m in (await tx.execute(sa.select(meters))).all()}
    for (org_id, meter_name), balance in sorted(balances.items()):
        if org_id != org.id or (balance.amount == 0 and balance.charge == 0):
            continue
        meter = meter_rows[meter_name]
        old_balance = _balance(balances, old_parent.id, meter_name)
        new_balance = _balance(balances, new_parent.id, meter_name)
        if not new_balance.exists:
            raise NoLimitForMeter(
                f"organization {new_parent.public_id!r} has no {meter_name!r} limit to take over "
                f"the {balance.amount} allocated to {org.public_id!r}"
            )
        new_charge = deployment_charge(meter, new_parent, org, balance.amount)
        if balance.amount + new_charge > new_balance.available:
            raise InsufficientPool(
                f"organization {new_parent.public_id!r} has {new_balance.available} {meter.unit} "
                f"available; taking over {org.public_id!r} needs {balance.amount + new_charge}"
            )
        await _check_unconsumed(tx, new_parent, new_balance, meter, balance.amount + new_charge)
        amount, old_charge = balance.amount, balance.charge
        # The org's row is written once, after move.in: in between, its amount of 0 would be
        # below what it handed on to its own children.
        await _shift(
            tx,
            actor,
            "move.out",
            org.root_id,
            balance,
            old_balance,
            -amount,
            -old_charge,
            save_org=False,
        )
        await _shift(tx, actor, "move.in", org.root_id, balance, new_balance, amount, new_charge)


def _principal(actor: Actor) -> Principal:
    if actor.principal is None:
        raise AssertionError("an API change needs a principal")
    return actor.principal


__all__ = [
    "Allocation",
    "Balance",
    "allocate",
    "allocate_initial",
    "release",
    "set_root_limit",
    "transfer",
]
