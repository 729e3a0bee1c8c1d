"""Meters: installation-wide kinds of quota, defined by the administrators of tenant roots."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from orgplane.core.access.principal import Caller, Principal
from orgplane.core.access.service import require_scope
from orgplane.core.audit import service as audit
from orgplane.core.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from orgplane.db.engine import Reader, Tx
from orgplane.models import meters, org_limits, orgs
from orgplane.models.base import utcnow

_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
PERIODS = ("month",)
ENFORCEMENTS = ("soft", "hard")
MUTABLE = frozenset({"unit", "description", "enforcement", "deployment_charge_pct", "step"})


async def _installation_admin(conn: Reader, principal: Principal) -> None:
    """Meters apply to every tenant, so only keys of the installation's first root (the one
    ``orgplane bootstrap`` creates) may define or change them."""
    require_scope(principal, "meters:write")
    first_root = (
        await conn.execute(sa.select(sa.func.min(orgs.c.id)).where(orgs.c.parent_id.is_(None)))
    ).scalar_one()
    if principal.org_id != first_root:
        raise Forbidden(
            "meters apply to the whole installation: only keys of its first root organization "
            "may define or change them"
        )


async def list_meters(conn: Reader) -> list[Any]:
    return list((await conn.execute(sa.select(meters).order_by(meters.c.name))).all())


async def get(conn: Reader, name: str) -> Any:
    row = (await conn.execute(sa.select(meters).where(meters.c.name == name))).first()
    if row is None:
        raise NotFound(f"meter {name!r} not found")
    return row


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    errors: list[FieldError] = []
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "name" and not (isinstance(value, str) and _NAME.match(value)):
            errors.append(
                FieldError(key, "1-64 characters: a lower-case letter, then a-z 0-9 _ . -")
            )
        elif key == "unit" and not (isinstance(value, str) and 1 <= len(value.strip()) <= 32):
            errors.append(FieldError(key, "must be 1 to 32 characters"))
        elif key == "step" and not (
            isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 10**12
        ):
            errors.append(FieldError(key, "must be a whole number from 1 to 10^12"))
        elif key == "period" and value not in PERIODS:
            errors.append(FieldError(key, f"must be one of {', '.join(PERIODS)}"))
        elif key == "enforcement" and value not in ENFORCEMENTS:
            errors.append(FieldError(key, f"must be one of {', '.join(ENFORCEMENTS)}"))
        elif (
            key == "deployment_charge_pct"
            and value is not None
            and not (
                isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 100
            )
        ):
            errors.append(FieldError(key, "must be a percentage from 0 to 100, or null"))
        elif key == "description" and not (isinstance(value, str) and len(value) <= 2000):
            errors.append(FieldError(key, "must be a string of at most 2000 characters"))
        else:
            out[key] = (
                Decimal(str(round(value, 2)))
                if key == "deployment_charge_pct" and value is not None
                else value.strip()
                if key == "unit"
                else value
            )
    if errors:
        raise InvalidInput("; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)
    return out


def describe(row: Any) -> dict[str, Any]:
    pct = row.deployment_charge_pct
    return {
        "name": row.name,
        "unit": row.unit,
        "step": int(row.step),
        "period": row.period,
        "enforcement": row.enforcement,
        "description": row.description,
        "deployment_charge_pct": float(pct) if pct is not None else None,
    }


async def create(tx: Tx, actor: Caller, fields: dict[str, Any]) -> Any:
    principal = actor.principal
    await _installation_admin(tx, principal)
    values = _clean(fields)
    if (await tx.execute(sa.select(meters.c.name).where(meters.c.name == values["name"]))).first():
        raise Conflict(f"meter {values['name']!r} already exists")
    await tx.execute(sa.insert(meters).values(**values, created_at=utcnow()))
    row = await get(tx, values["name"])
    audit.record(
        tx,
        actor,
        action="meter.created",
        root_id=principal.root_id,
        org_id=principal.org_id,
        target_type="meter",
        target_id=row.name,
        after=describe(row),
    )
    return row


async def update(tx: Tx, actor: Caller, name: str, changes: dict[str, Any]) -> Any:
    principal = actor.principal
    await _installation_admin(tx, principal)
    unknown = sorted(set(changes) - MUTABLE)
    if unknown:
        raise InvalidInput.for_field(unknown[0], "cannot be changed")
    values = _clean(changes)
    row = await get(tx, name)
    if "step" in values and values["step"] != row.step:
        off_step = (
            await tx.execute(
                sa.select(sa.func.count())
                .select_from(org_limits)
                .where(org_limits.c.meter == name, org_limits.c.amount % values["step"] != 0)
            )
        ).scalar_one()
        if off_step:
            raise Conflict(
                f"{off_step} existing limit(s) of {name!r} are not multiples of {values['step']}"
            )
    before = describe(row)
    if values:
        await tx.execute(sa.update(meters).where(meters.c.name == name).values(**values))
    updated = await get(tx, name)
    after = describe(updated)
    changed = {k: v for k, v in after.items() if before[k] != v}
    if changed:
        audit.record(
            tx,
            actor,
            action="meter.updated",
            root_id=principal.root_id,
            org_id=principal.org_id,
            target_type="meter",
            target_id=name,
            before={k: before[k] for k in changed},
            after=changed,
        )
    return updated
