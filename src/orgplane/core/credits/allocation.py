"""Setting a child's allocation: the one command every surface calls, and its rules.

The parent's pool pays for the difference (and any deployment charge); the child never goes
below what it handed on plus what it consumed this period; the parent never hands on what it
consumed itself. On PostgreSQL the same rules run in three statements (``allocation_pg``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from orgplane.core.access.principal import Actor, Caller
from orgplane.core.access.service import reach, reached
from orgplane.core.alerts import service as alerts
from orgplane.core.audit import service as audit
from orgplane.core.credits import allocation_pg
from orgplane.core.credits.errors import (
    BelowConsumption,
    CreditError,
    InsufficientPool,
    NoLimitForMeter,
)
from orgplane.core.credits.repository import (
    Balance,
    balance_of,
    find_meter,
    get_meter,
    ledger_row,
    lock_balances,
)
from orgplane.core.credits.service import (
    check_amount,
    consumed_by_parent,
    deployment_charge,
    move_amounts,
    shift,
)
from orgplane.core.errors import Conflict, InvalidInput, NotFound
from orgplane.core.locks import lock_tree
from orgplane.core.usage.counters import consumed_this_period, local_today, period_start
from orgplane.db.engine import Tx
from orgplane.db.grouped import grouped_by


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
    elif tx.is_postgres:
        # Both orgs, their key locks and the meter in one round trip (reach's decision on each).
        pair = await allocation_pg.read_pair(tx, parent_ref, child_ref, meter)
        parent = reached(principal, pair.parent, parent_ref, scope="credits:write")
        child = reached(principal, pair.child, child_ref, scope="credits:write")
        if child.parent_id != parent.id:
            raise NotFound(f"organization {child_ref!r} is not a child of {parent_ref!r}")
        if child.status == "deactivated":
            raise _deactivated(child)
        if pair.meter is None:
            raise NotFound(f"meter {meter!r} not found")
        return await _allocate_postgres(
            tx, actor, parent, child, pair.meter, amount, idempotency_key=idempotency_key
        )
    else:
        parent = await reach(tx.conn, principal, parent_ref, scope="credits:write")
        child = await reach(tx.conn, principal, child_ref, scope="credits:write")
        if child.parent_id != parent.id:
            raise NotFound(f"organization {child_ref!r} is not a child of {parent_ref!r}")
    return await allocate_reached(
        tx, actor, parent, child, meter, amount, idempotency_key=idempotency_key
    )


async def allocate_reached(
    tx: Tx,
    actor: Actor,
    parent: Any,
    child: Any,
    meter: str,
    amount: int,
    *,
    idempotency_key: str | None = None,
) -> Allocation:
    """``allocate`` for a command that locked the tree and read (reached) the parent and its
    child itself, under that lock."""
    if child.status == "deactivated":
        raise _deactivated(child)
    if tx.is_postgres:
        # The same rules in fewer round trips.
        meter_row = await allocation_pg.meter_and_key_locks(tx, meter, parent, child)
        if meter_row is None:
            raise NotFound(f"meter {meter!r} not found")
        return await _allocate_postgres(
            tx, actor, parent, child, meter_row, amount, idempotency_key=idempotency_key
        )
    meter_row = await get_meter(tx, meter)
    check_amount(amount, meter_row)
    return await _allocate_locked(
        tx, actor, parent, child, meter_row, amount, idempotency_key=idempotency_key
    )


def _deactivated(child: Any) -> Conflict:
    # Its unused allocation went back to the parent when it was deactivated.
    return Conflict(f"organization {child.public_id!r} is deactivated; reactivate it first")


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
        return consumed_by_parent(parent, change.parent_available, meter, parent_used, change.need)
    if change.child_may_use is not None and child_used > change.child_may_use:
        floor = child_allocated + child_used
        return BelowConsumption(
            f"organization {child.public_id!r} needs at least {floor} {meter.unit}: "
            f"{child_allocated} allocated to its children and {child_used} consumed "
            "this period"
        )
    return None


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
    parent_balance = balance_of(balances, parent.id, meter.name)
    child_balance = balance_of(balances, child.id, meter.name)
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
    await shift(
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
    await alerts.limit_changed(tx, actor, child, meter.name)
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
    meter: Any,
    amount: int,
    *,
    idempotency_key: str | None,
) -> Allocation:
    """``_allocate_locked`` on PostgreSQL, the orgs and the meter read (with the key locks of
    the writes' foreign keys) by the caller: the limit rows then the audit chain head locked in
    one statement, every write (made only if the consumption checks pass) in another — then the
    commit. The parent's row is held for two round trips after its lock, instead of eight.

    The audit entry is chained in place only when it is the transaction's first and last: when
    other entries wait to be chained before it, or others may follow (a transaction shared by
    several allocations, ``db.grouped``), it is queued for the commit, and the chain head is
    locked then, after every limit row of the transaction, as every audited write does."""
    check_amount(amount, meter)
    # An alert on the child may fire or re-arm after the change, locking its thresholds: the
    # chain head is then locked at commit, after them, as every audited write does.
    alerted = await alerts.has_alert(tx, child.id, meter.name)
    chain_here = not tx.pending_audit and not tx.grouped and not alerted
    locked = await allocation_pg.lock(
        tx, parent.root_id, parent.id, child.id, meter.name, head=chain_here
    )
    balances = {
        (org_id, meter.name): Balance(
            org_id, meter.name, int(r.amount), int(r.allocated), int(r.charge), True
        )
        for org_id, r in locked.pools.items()
    }
    parent_balance = balance_of(balances, parent.id, meter.name)
    child_balance = balance_of(balances, child.id, meter.name)
    change = _plan(meter, parent, child, amount, parent_balance, child_balance)
    if not change.changes:
        return Allocation(
            meter.name, parent, child, parent_balance, child_balance, 0, child_balance.charge, False
        )
    move_amounts(child_balance, parent_balance, change.delta, change.charge_delta)
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
        ledger_row=ledger_row(
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
    if alerted:
        await alerts.limit_changed(tx, actor, child, meter.name, known=True)
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


async def allocate_initial(
    tx: Tx, actor: Actor, parent: Any, child: Any, amounts: dict[str, Any]
) -> list[Allocation]:
    """Allocations given in a create request, taken from the parent in the same transaction."""
    results = []
    for meter_name in sorted(amounts):
        field = f"allocations.{meter_name}"
        meter = await find_meter(tx, meter_name)
        if meter is None:
            raise InvalidInput.for_field(field, "unknown meter")
        check_amount(amounts[meter_name], meter, field)
        results.append(
            await _allocate_locked(
                tx, actor, parent, child, meter, amounts[meter_name], idempotency_key=None
            )
        )
    return results


__all__ = ["Allocation", "allocate", "allocate_initial", "allocate_reached"]
