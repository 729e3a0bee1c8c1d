"""Limits, allocations to children, an org's credits, and its ledger."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated, Any

from litestar import Request, Response, Router, get, put
from litestar.params import FromQuery, HeaderParameter, JSONBody, PathParameter, QueryParameter
from msgspec import Meta, Struct

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.idempotency import run_once
from orgplane.api.native.exports import EXPORT_DOC, export_format, export_response
from orgplane.api.native.openapi import problems
from orgplane.api.native.orgs import Cursor, Limit, OrgId
from orgplane.core.access.principal import Principal
from orgplane.core.credits import allocation
from orgplane.core.credits import ledger as ledger_queries
from orgplane.core.credits import service as credits
from orgplane.core.pagination import DEFAULT_LIMIT

MeterName = Annotated[str, PathParameter(max_length=64, description="Meter name, e.g. operations")]
IdempotencyKey = Annotated[str | None, HeaderParameter(name="Idempotency-Key", required=False)]


class AmountBody(Struct, forbid_unknown_fields=True):
    amount: Annotated[int, Meta(ge=0, le=credits.MAX_AMOUNT)]


class Pool(Struct):
    org_id: str
    limit: int
    allocated: int
    available: int


class LimitSet(Struct):
    org_id: str
    meter: str
    limit: int
    allocated: int
    available: int


class AllocationResult(Struct):
    """``new_parent_available`` is what the parent has left to hand out (Make's
    ``newParentOperations``); ``diff`` is the change of the child's limit."""

    meter: str
    parent: Pool
    child: Pool
    diff: int
    limit_increased: bool
    deployment_charge: int
    new_parent_available: int
    new_child_limit: int


class MeterCredits(Struct):
    meter: str
    unit: str
    step: int
    enforcement: str
    limit: int | None
    allocated: int
    available: int | None
    deployment_charge: int
    consumed: int
    extra: int


class Credits(Struct):
    org_id: str
    meters: list[MeterCredits]


class LedgerEntry(Struct):
    id: int
    timestamp: datetime
    meter: str
    kind: str
    org_id: str
    parent_id: str | None
    delta: int
    deployment_charge_delta: int
    org_limit: int
    org_allocated: int
    parent_limit: int | None
    parent_allocated: int | None
    actor: str
    actor_key_id: str | None
    request_id: str | None
    idempotency_key: str | None


class LedgerPage(Struct):
    data: list[LedgerEntry]
    next_cursor: str | None


def _pool(org: Any, balance: credits.Balance) -> Pool:
    return Pool(org.public_id, balance.amount, balance.allocated, balance.available)


def allocation_out(result: allocation.Allocation) -> AllocationResult:
    return AllocationResult(
        meter=result.meter,
        parent=_pool(result.parent, result.parent_balance),
        child=_pool(result.child, result.child_balance),
        diff=result.diff,
        limit_increased=result.limit_increased,
        deployment_charge=result.charge,
        new_parent_available=result.parent_balance.available,
        new_child_limit=result.child_balance.amount,
    )


def ledger_out(row: Any) -> LedgerEntry:
    return LedgerEntry(
        id=row.id,
        timestamp=row.at,
        meter=row.meter,
        kind=row.kind,
        org_id=row.org_public_id,
        parent_id=row.parent_public_id,
        delta=row.delta,
        deployment_charge_delta=row.charge_delta,
        org_limit=row.org_amount,
        org_allocated=row.org_allocated,
        parent_limit=row.parent_amount,
        parent_allocated=row.parent_allocated,
        actor=row.actor,
        actor_key_id=row.actor_key_id,
        request_id=row.request_id,
        idempotency_key=row.idempotency_key,
    )


@put(
    "/{org_id:str}/limits/{meter:str}",
    summary="Set a tenant root's limit",
    responses=problems(409),
    description="The operator's limit of a root organization for one meter. It cannot be lowered "
    "below what the root has allocated to its children plus what it consumed this period.",
)
async def set_limit(
    org_id: OrgId,
    meter: MeterName,
    data: JSONBody[AmountBody],
    services: ServicesDep,
    actor: ActorDep,
) -> LimitSet:
    org, balance = await services.db.transaction(
        credits.set_root_limit, actor=actor, org_ref=org_id, meter=meter, amount=data.amount
    )
    return LimitSet(org.public_id, meter, balance.amount, balance.allocated, balance.available)


@put(
    "/{org_id:str}/children/{child_id:str}/allocations/{meter:str}",
    summary="Set a child's allocation",
    responses=problems(409, 422),
    description="Moves the difference between the child's current and new allocation from or to "
    "the parent's available pool. Refused when the amount is not a multiple of the meter's step, "
    "exceeds the parent's available pool, or is below what the child handed on plus consumed "
    "this period. A child in another deployment may carry the meter's deployment charge.",
)
async def set_allocation(
    org_id: OrgId,
    child_id: Annotated[str, PathParameter(max_length=64)],
    meter: MeterName,
    data: JSONBody[AmountBody],
    request: Request[Any, Any, Any],
    services: ServicesDep,
    actor: ActorDep,
    idempotency_key: IdempotencyKey = None,
) -> Response[Any]:
    command = functools.partial(
        allocation.allocate,
        actor=actor,
        parent_ref=org_id,
        child_ref=child_id,
        meter=meter,
        amount=data.amount,
        idempotency_key=idempotency_key,
    )
    return await run_once(request, services, actor.principal, idempotency_key, command, _allocated)


def _allocated(result: allocation.Allocation, _: Principal) -> Response[AllocationResult]:
    # An explicit status: the idempotency record stores it (None would be a 500).
    return Response(allocation_out(result), status_code=200)


@get("/{org_id:str}/credits", summary="Limits, allocations and consumption", responses=problems())
async def get_credits(org_id: OrgId, services: ServicesDep, principal: PrincipalDep) -> Credits:
    async with services.db.read() as conn:
        org, rows = await ledger_queries.credits_report(conn, principal, org_id)
    return Credits(org.public_id, [MeterCredits(**row) for row in rows])


@get(
    "/{org_id:str}/ledger",
    summary="The org's ledger",
    responses=problems(),
    description="Every change of the org's limits and of its pool (allocations to its children "
    "included)." + EXPORT_DOC,
)
async def get_ledger(
    org_id: OrgId,
    request: Request[Any, Any, Any],
    services: ServicesDep,
    principal: PrincipalDep,
    meter: Annotated[str | None, QueryParameter(max_length=64)] = None,
    kind: Annotated[
        str | None, QueryParameter(max_length=16, description=", ".join(ledger_queries.KINDS))
    ] = None,
    since: FromQuery[datetime | None] = None,
    until: FromQuery[datetime | None] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Any:
    filters = ledger_queries.LedgerFilters(meter, kind, since, until).check()
    fmt = export_format(request)
    async with services.db.read() as conn:
        org = await ledger_queries.target(conn, principal, org_id)
        if fmt is None:
            rows, next_cursor = await ledger_queries.page(
                conn, principal, org, filters, limit=limit, cursor=cursor
            )
            return LedgerPage([ledger_out(r) for r in rows], next_cursor)
    return export_response(
        services.db,
        fmt,
        lambda c: ledger_queries.stream(c, principal, org, filters),
        ledger_out,
        LedgerEntry,
        f"{org.public_id}-ledger",
    )


router = Router(
    path="/orgs",
    route_handlers=[set_limit, set_allocation, get_credits, get_ledger],
    tags=["credits"],
)
