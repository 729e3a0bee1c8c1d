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
parent's row; nothing waits in the opposite order, so allocation cannot deadlock. An
allocation (``allocation._allocate_postgres``) keeps that order in fewer statements: the
parent's and the child's org rows FOR KEY SHARE with the root, then the two limit rows and the
chain head in one statement, then every write.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from orgplane.core.access.principal import Actor, Caller
from orgplane.core.access.service import reach
from orgplane.core.alerts import service as alerts
from orgplane.core.audit import service as audit
from orgplane.core.credits.errors import (
    BelowConsumption,
    InsufficientPool,
    NoLimitForMeter,
    NotAStepMultiple,
)
from orgplane.core.credits.repository import (
    Balance,
    balance_of,
    get_meter,
    lock_balances,
    meters_by_name,
    save_balance,
    write_ledger,
)
from orgplane.core.errors import Conflict, InvalidInput
from orgplane.core.locks import lock_tree
from orgplane.core.usage.counters import consumed_this_period
from orgplane.db.engine import Tx

MAX_AMOUNT = 10**15


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


def move_amounts(org: Balance, parent: Balance, delta: int, charge_delta: int) -> None:
    """Move ``delta`` (and ``charge_delta`` of deployment charge) from the parent's pool to the
    org's amount — negative values give it back: the one place where the conservation of
    invariant 1 is applied, for allocations, releases and moves alike."""
    parent.allocated += delta + charge_delta
    org.amount += delta
    org.charge += charge_delta


async def shift(
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
    """``move_amounts`` the amounts, save the balances and write the ledger row."""
    move_amounts(org, parent, delta, charge_delta)
    await save_balance(tx, root_id, parent)
    if save_org:
        await save_balance(tx, root_id, org)
    await write_ledger(
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
    *,
    actor: Caller,
    org_ref: str,
    meter: str,
    amount: int,
    idempotency_key: str | None = None,
) -> tuple[Any, Balance]:
    """The limit of a tenant root, set through the API by a key of that root."""
    org = await reach(tx.conn, actor.principal, org_ref, scope="credits:write")
    return org, await apply_root_limit(
        tx, actor, org, meter, amount, idempotency_key=idempotency_key
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
    balance = balance_of(await lock_balances(tx, [org], meter.name), org.id, meter.name)
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
    await save_balance(tx, org.root_id, balance)
    await write_ledger(
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
    await alerts.limit_changed(tx, actor, org, meter.name)
    return balance


def consumed_by_parent(
    parent: Any, available: int, meter: Any, consumed: int, need: int
) -> InsufficientPool:
    return InsufficientPool(
        f"organization {parent.public_id!r} has {available} {meter.unit} available "
        f"but consumed {consumed} of it this period, which it cannot hand on; this needs "
        f"{need} more"
    )


async def check_unconsumed(tx: Tx, parent: Any, balance: Balance, meter: Any, need: int) -> None:
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
        raise consumed_by_parent(parent, balance.available, meter, consumed, need)


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
    meter_rows = await meters_by_name(tx)
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
            parent_balance = balance_of(balances, holder.id, meter_name)
            await shift(
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
    meter_rows = await meters_by_name(tx)
    for (org_id, meter_name), balance in sorted(balances.items()):
        if org_id != org.id or (balance.amount == 0 and balance.charge == 0):
            continue
        meter = meter_rows[meter_name]
        old_balance = balance_of(balances, old_parent.id, meter_name)
        new_balance = balance_of(balances, new_parent.id, meter_name)
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
        await check_unconsumed(tx, new_parent, new_balance, meter, balance.amount + new_charge)
        amount, old_charge = balance.amount, balance.charge
        # The org's row is written once, after move.in: in between, its amount of 0 would be
        # below what it handed on to its own children.
        await shift(
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
        await shift(tx, actor, "move.in", org.root_id, balance, new_balance, amount, new_charge)


__all__ = [
    "MAX_AMOUNT",
    "Balance",
    "apply_root_limit",
    "check_amount",
    "deployment_charge",
    "release",
    "set_root_limit",
    "transfer",
]
