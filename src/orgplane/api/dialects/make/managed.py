"""MMS > child organizations: list, create (with its owner), change the allocation, consumption."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import Meta, Struct

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.dialects.make import enums
from orgplane.api.dialects.make.errors import ERRORS
from orgplane.core.access.service import reach
from orgplane.core.credits import allocation as credits
from orgplane.core.credits import ledger as ledger_queries
from orgplane.core.orgs import managed
from orgplane.core.orgs import queries as org_queries
from orgplane.core.people import service as people
from orgplane.core.people import users as user_service
from orgplane.core.usage import consumption

METER = "operations"
OWNER_ROLE = "owner"
MAX_PG_LIMIT = 10_000
MAX_PG_OFFSET = 100_000
CENTICREDITS_PER_CREDIT = 100

OrgKey = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]
PgOffset = Annotated[int, QueryParameter(name="pg[offset]", ge=0, le=MAX_PG_OFFSET)]
PgLimit = Annotated[int, QueryParameter(name="pg[limit]", ge=1, le=MAX_PG_LIMIT)]
Operations = Annotated[int, Meta(ge=0, le=10**15)]
EnumId = Annotated[int, Meta(ge=0, le=2**32)]
RegionId = Annotated[int, Meta(ge=0, le=2**32, description="GET /enums/imt-regions", examples=[10])]
CountryId = Annotated[int, Meta(ge=0, le=2**32, description="GET /enums/countries", examples=[276])]


class ManagedOrganizationCreate(Struct):
    organizationName: str
    operations: Operations
    regionId: RegionId
    countryId: CountryId
    userEmail: str | None = None
    userName: str | None = None


class ManagedOrganizationUpdate(Struct):
    operations: Operations


@get(
    "/organizations/{organizationId:int}/managed-organizations",
    summary="List managed organizations",
    responses=ERRORS,
)
async def list_managed(
    request: Request[Any, Any, Any],
    organizationId: OrgKey,
    services: ServicesDep,
    principal: PrincipalDep,
    offset: PgOffset = 0,
    limit: PgLimit = 100,
) -> dict[str, Any]:
    async with services.db.read() as conn:
        parent = await reach(conn, principal, organizationId, scope="credits:read")
        page = await org_queries.list_children(
            conn, principal, parent.public_id, limit=offset + limit
        )
        rows = page.rows[offset:]
        amounts = await ledger_queries.balances(conn, [r.id for r in rows], METER)
    return {
        "managedOrganizations": [
            {
                "organizationId": row.id,
                "organizationName": row.name,
                "operationsAllocated": amounts.get(row.id, (0, 0))[0],
                "countryId": enums.country_id(row.country),
                "timezoneId": enums.timezone_id(row.timezone),
                "zoneId": enums.region_id(row.deployment),
                "zoneDomain": enums.zone_domain(request),
                "zoneName": row.deployment.upper(),
            }
            for row in rows
        ],
        "pg": {"sortBy": "id", "sortDir": "asc", "limit": limit, "offset": offset},
    }


def _owner(invited: people.Invited | None) -> dict[str, Any]:
    """Make's owner fields: the named person (an existing user, or a new pending one invited to
    set a password), or nobody."""
    if invited is None:
        return {
            "userId": None,
            "userEmail": None,
            "userName": None,
            "userLanguage": None,
            "userExisted": 0,
        }
    member = invited.member
    full_name = f"{member.row.first_name} {member.row.last_name}".strip()
    return {
        "userId": member.row.id,
        "userEmail": member.row.email,
        "userName": full_name or None,
        "userLanguage": "en",
        "userExisted": 0 if invited.created else 1,
    }


@post(
    "/organizations/{organizationId:int}/managed-organizations",
    summary="Create a managed organization",
    responses=ERRORS,
    status_code=200,
)
async def create_managed(
    request: Request[Any, Any, Any],
    organizationId: OrgKey,
    data: JSONBody[ManagedOrganizationCreate],
    services: ServicesDep,
    actor: ActorDep,
) -> dict[str, Any]:
    fields = {
        "name": data.organizationName,
        "deployment": enums.deployment_of(data.regionId),
        "country": enums.country_of(data.countryId),
    }
    owner = None
    if data.userEmail is not None:
        owner = managed.Owner(
            email=data.userEmail,
            profile=user_service.profile_from_full_name(data.userName),
            role=OWNER_ROLE,
        )
    created = await services.db.transaction(
        managed.create_managed,
        actor=actor,
        parent_ref=organizationId,
        fields=fields,
        max_depth=services.settings.max_tree_depth,
        allocations={METER: data.operations},
        owner=owner,
    )
    (given,) = created.allocations
    return {
        **_owner(created.owner),
        "childOrganizationId": created.org.id,
        "newParentOperations": given.parent_balance.available,
        "domain": enums.zone_domain(request),
    }


@patch(
    "/organizations/{organizationId:int}/managed-organizations/{childOrganizationId:int}",
    summary="Change a managed organization's operations",
    responses=ERRORS,
)
async def update_managed(
    organizationId: OrgKey,
    childOrganizationId: OrgKey,
    data: JSONBody[ManagedOrganizationUpdate],
    services: ServicesDep,
    actor: ActorDep,
) -> dict[str, Any]:
    allocation = await services.db.transaction(
        credits.allocate,
        actor=actor,
        parent_ref=organizationId,
        child_ref=childOrganizationId,
        meter=METER,
        amount=data.operations,
    )
    return {
        "newParentOperations": allocation.parent_balance.available,
        "newChildOperations": allocation.child_balance.amount,
        "operationsDiff": allocation.diff,
        "limitIncreased": allocation.limit_increased,
    }


def _meter(entry: dict[str, Any], name: str) -> tuple[int, int]:
    found = next((m for m in entry["meters"] if m["meter"] == name), None)
    return (found["consumed"], found["extra"]) if found else (0, 0)


@get(
    "/organizations/{organizationId:int}/managed-organizations-consumption",
    summary="Managed organizations' consumption",
    responses=ERRORS,
)
async def managed_consumption(
    organizationId: OrgKey,
    services: ServicesDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    async with services.db.read() as conn:
        parent = await reach(conn, principal, organizationId, scope="usage:read")
        report = await consumption.report(conn, principal, parent.public_id, rollup="children")
    out = []
    for entry in report["entries"]:
        operations, operations_extra = _meter(entry, "operations")
        credits, credits_extra = _meter(entry, "credits")
        transfer, transfer_extra = _meter(entry, "transfer")
        out.append(
            {
                "organizationId": entry["org"].id,
                "centicreditsConsumed": str(credits * CENTICREDITS_PER_CREDIT),
                "centicreditsExtra": str(credits_extra * CENTICREDITS_PER_CREDIT),
                "operationsConsumed": operations,
                "operationsExtra": operations_extra,
                "transferConsumed": transfer,
                "transferExtra": transfer_extra,
                "lastReset": report["last_reset"].isoformat(),
            }
        )
    return {"managedOrganizationsConsumption": out}


HANDLERS = [list_managed, create_managed, update_managed, managed_consumption]
