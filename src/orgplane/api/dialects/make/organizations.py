"""Organizations: list, create, get, change, delete, and their daily usage."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from litestar import Request, delete, get, patch, post
from litestar.params import JSONBody, QueryParameter
from msgspec import UNSET, Struct, UnsetType

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.dialects.make import enums
from orgplane.api.dialects.make.errors import DELETE_ERRORS, ERRORS
from orgplane.api.dialects.make.managed import (
    CENTICREDITS_PER_CREDIT,
    EnumId,
    OrgKey,
    PgLimit,
    PgOffset,
)
from orgplane.core.access.principal import Principal
from orgplane.core.access.service import reach, require_scope
from orgplane.core.credits import ledger as ledger_queries
from orgplane.core.errors import InvalidInput
from orgplane.core.orgs import queries as org_queries
from orgplane.core.orgs import service as org_service
from orgplane.core.usage import consumption, counters
from orgplane.db.engine import Reader

USAGE_DAYS = 30
# Make's default columns of a listed organization.
DEFAULT_COLUMNS = ("id", "name", "timezoneId")
SORTS = {"id": "id", "name": "name", "createdAt": "created_at"}

SortBy = Annotated[Literal["id", "name", "createdAt"], QueryParameter(name="pg[sortBy]")]
SortDir = Annotated[Literal["asc", "desc"], QueryParameter(name="pg[sortDir]")]
Columns = Annotated[list[str] | None, QueryParameter(name="cols[]", max_items=40)]


class OrganizationCreate(Struct):
    name: str
    regionId: EnumId
    timezoneId: EnumId
    countryId: EnumId


class OrganizationUpdate(Struct):
    name: str | UnsetType = UNSET
    countryId: EnumId | UnsetType = UNSET
    timezoneId: EnumId | UnsetType = UNSET


def summary(row: Any, request: Request[Any, Any, Any]) -> dict[str, Any]:
    """An organization as Make lists it."""
    return {
        "id": row.id,
        "name": row.name,
        "countryId": enums.country_id(row.country),
        "timezoneId": enums.timezone_id(row.timezone),
        "zone": enums.zone_domain(request),
        "regionId": enums.region_id(row.deployment),
        "serviceName": "default",
        "isPaused": row.status == "disabled",
        "createdAt": row.created_at.isoformat(),
    }


async def detail(conn: Reader, row: Any, request: Request[Any, Any, Any]) -> dict[str, Any]:
    """An organization as Make shows one: its limits (the operations and transfer meters), what
    it consumed this period, and when the period resets."""
    limits = {
        meter: (await ledger_queries.balances(conn, [row.id], meter)).get(row.id, (0, 0))[0]
        for meter in ("operations", "transfer")
    }
    used = await counters.consumed_this_period(conn, [row])
    period = consumption.month_of(counters.local_today(row.timezone))
    tz = ZoneInfo(row.timezone)
    operations = used.get((row.id, "operations"), 0)
    transfer = used.get((row.id, "transfer"), 0)
    return {
        **summary(row, request),
        "license": {"operations": limits["operations"], "transfer": limits["transfer"]},
        "operations": str(operations),
        "transfer": str(transfer),
        "operationsExt": str(max(0, operations - limits["operations"])),
        "transferExt": str(max(0, transfer - limits["transfer"])),
        "unusedOperations": str(max(0, limits["operations"] - operations)),
        "unusedTransfer": str(max(0, limits["transfer"] - transfer)),
        "lastReset": datetime.combine(period.start, datetime.min.time(), tz).isoformat(),
        "nextReset": datetime.combine(period.end, datetime.min.time(), tz).isoformat(),
        "productName": row.plan,
        "teams": [],
        "deleted": row.deleted_at is not None,
    }


def _select(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    unknown = [c for c in columns if c not in row]
    if unknown:
        raise InvalidInput.for_field(
            "cols[]", f"unknown column {unknown[0]!r}; known: {', '.join(row)}"
        )
    return {c: row[c] for c in columns}


@get("/organizations", summary="List organizations", responses=ERRORS)
async def list_organizations(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    principal: PrincipalDep,
    offset: PgOffset = 0,
    limit: PgLimit = 10_000,
    sort_by: SortBy = "name",
    sort_dir: SortDir = "asc",
    columns: Columns = None,
) -> dict[str, Any]:
    async with services.db.read() as conn:
        rows = await org_queries.list_subtree(
            conn,
            principal,
            sort=SORTS[sort_by],
            descending=sort_dir == "desc",
            offset=offset,
            limit=limit,
        )
    wanted = columns or list(DEFAULT_COLUMNS)
    return {
        "organizations": [_select(summary(row, request), wanted) for row in rows],
        "pg": {"sortBy": sort_by, "sortDir": sort_dir, "limit": limit, "offset": offset},
    }


@post(
    "/organizations",
    summary="Create an organization (a child of the token's organization)",
    responses=ERRORS,
    status_code=200,
)
async def create_organization(
    request: Request[Any, Any, Any],
    data: JSONBody[OrganizationCreate],
    services: ServicesDep,
    actor: ActorDep,
) -> dict[str, Any]:
    # Scope first: a token that may not create learns nothing about the ids it sent.
    require_scope(actor.principal, "orgs:write")
    fields = {
        "name": data.name,
        "deployment": enums.deployment_of(data.regionId),
        "timezone": enums.timezone_of(data.timezoneId),
        "country": enums.country_of(data.countryId),
    }
    row = await services.db.transaction(
        org_service.create_child,
        actor=actor,
        parent_ref=actor.principal.org_public_id,
        fields=fields,
        max_depth=services.settings.max_tree_depth,
    )
    async with services.db.read() as conn:
        return {"organization": await detail(conn, row, request)}


async def _reached(conn: Reader, principal: Principal, key: int, scope: str) -> Any:
    return await reach(conn, principal, key, scope=scope)


@get("/organizations/{organizationId:int}", summary="Get an organization", responses=ERRORS)
async def get_organization(
    request: Request[Any, Any, Any],
    organizationId: OrgKey,
    services: ServicesDep,
    principal: PrincipalDep,
    wait: Annotated[bool, QueryParameter()] = False,
) -> dict[str, Any]:
    # ``wait`` (wait for the zone to sync) is accepted: every read here is already in sync.
    async with services.db.read() as conn:
        row = await _reached(conn, principal, organizationId, "orgs:read")
        return {"organization": await detail(conn, row, request)}


def _changes(data: OrganizationUpdate) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if not isinstance(data.name, UnsetType):
        changes["name"] = data.name
    if not isinstance(data.countryId, UnsetType):
        changes["country"] = enums.country_of(data.countryId)
    if not isinstance(data.timezoneId, UnsetType):
        changes["timezone"] = enums.timezone_of(data.timezoneId)
    return changes


@patch("/organizations/{organizationId:int}", summary="Update an organization", responses=ERRORS)
async def update_organization(
    request: Request[Any, Any, Any],
    organizationId: OrgKey,
    data: JSONBody[OrganizationUpdate],
    services: ServicesDep,
    actor: ActorDep,
) -> dict[str, Any]:
    row = await services.db.transaction(
        org_service.update, actor=actor, org_ref=organizationId, changes=_changes(data)
    )
    async with services.db.read() as conn:
        return {"organization": await detail(conn, row, request)}


@delete(
    "/organizations/{organizationId:int}",
    summary="Delete an organization",
    description="An organization in use (children, members or usage this period) is deleted, "
    "with everything in it, only with `confirmed=true`; otherwise 406 IM004.",
    responses=DELETE_ERRORS,
    status_code=200,
)
async def delete_organization(
    organizationId: OrgKey,
    services: ServicesDep,
    actor: ActorDep,
    confirmed: Annotated[bool, QueryParameter()] = False,
) -> dict[str, Any]:
    await services.db.transaction(
        org_service.delete_confirmed, actor=actor, org_ref=organizationId, confirmed=confirmed
    )
    return {"organization": organizationId}


def _days(today: date) -> list[date]:
    return [today - timedelta(days=USAGE_DAYS - 1 - i) for i in range(USAGE_DAYS)]


@get(
    "/organizations/{organizationId:int}/usage",
    summary="An organization's daily usage over the last 30 days",
    responses=ERRORS,
)
async def organization_usage(
    organizationId: OrgKey,
    services: ServicesDep,
    principal: PrincipalDep,
    organizationTimezone: Annotated[bool, QueryParameter()] = False,
) -> dict[str, Any]:
    async with services.db.read() as conn:
        row = await _reached(conn, principal, organizationId, "usage:read")
        # Usage is counted per day of the org's time zone, so its days are always the org's.
        days = _days(counters.local_today(row.timezone))
        totals = await counters.daily_totals(
            conn,
            row.id,
            days[0],
            days[-1] + timedelta(days=1),
            ("operations", "transfer", "credits"),
        )
    return {
        "data": [
            {
                "date": day.isoformat(),
                "operations": totals.get((day, "operations"), 0),
                "dataTransfer": totals.get((day, "transfer"), 0),
                "centicredits": totals.get((day, "credits"), 0) * CENTICREDITS_PER_CREDIT,
            }
            for day in days
        ]
    }


HANDLERS = [
    list_organizations,
    create_organization,
    get_organization,
    update_organization,
    delete_organization,
    organization_usage,
]
