"""Make's MMS (managed organizations) API under ``/make/api/v2``: shapes only, on the core.

Authenticate with a ``make`` key (``POST /orgs/{id}/api_keys`` with ``"kind": "make"``), sent as
``Authorization: Token <uuid>``. Make's ids are the orgs' integer keys; each is resolved to the
org and reached through ``core.access`` like any native call, so reach, scopes, allocation rules
and audit are the core's. Errors use Make's body ``{"detail", "message", "code"}`` with the
status orgplane decided: 400 IM005, 401 IM102, 403 SC403, 404 SC404, 409 SC409; 429 is Make's
plain-text message.

Make's scopes map onto orgplane's as follows (a key holds orgplane scopes):

- ``managed-organizations:read``: list → ``credits:read`` on the parent and ``orgs:read``;
  consumption → ``usage:read``;
- ``managed-organizations:write``: create → ``orgs:write`` and ``credits:write``;
  change an allocation → ``credits:write``.

Operations are the core's ``operations`` meter (step 10,000). Not done yet: ``userEmail`` and
``userName`` of the create call are accepted but no owner is made; ``regionId`` and ``countryId``
are required but not stored; the organizations, users and enums endpoints.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, patch, post
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import Meta, Struct

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.dialects.openapi import MAKE_SECURITY, vendor_errors
from orgplane.core.access.principal import Actor
from orgplane.core.access.service import reach_by_key
from orgplane.core.credits import ledger as ledger_queries
from orgplane.core.credits import service as credit_service
from orgplane.core.errors import OrgplaneError
from orgplane.core.orgs import service as org_service
from orgplane.core.usage import consumption
from orgplane.db.engine import Tx

METER = "operations"
MAX_PG_LIMIT = 10_000
MAX_PG_OFFSET = 100_000
RATE_LIMIT_TEXT = "Requests limit for organization exceeded, please try again later."

OrgKey = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]
PgOffset = Annotated[int, QueryParameter(name="pg[offset]", ge=0, le=MAX_PG_OFFSET)]
PgLimit = Annotated[int, QueryParameter(name="pg[limit]", ge=1, le=MAX_PG_LIMIT)]
Operations = Annotated[int, Meta(ge=0, le=10**15)]


class ManagedOrganizationCreate(Struct):
    organizationName: str
    operations: Operations
    regionId: int
    countryId: int
    userEmail: str | None = None
    userName: str | None = None


class ManagedOrganizationUpdate(Struct):
    operations: Operations


class MakeError(Struct, omit_defaults=True):
    """Make's error body."""

    detail: str
    message: str
    code: str
    suberrors: list[dict[str, str]] | None = None


ERRORS = vendor_errors(
    MakeError,
    {
        400: "IM005: invalid input; `suberrors` names each bad field",
        401: "IM102: missing or invalid token",
        403: "SC403: the token lacks the scope",
        404: "SC404: no such organization within the token's reach",
        409: "SC409: the change conflicts with the current state (e.g. the pool is short)",
    },
) | vendor_errors(str, {429: RATE_LIMIT_TEXT}, media_type="text/plain")


# --- errors: Make's body, orgplane's status ----------------------------------------------------

_CODES = {
    400: ("IM005", "Invalid input parameters"),
    401: ("IM102", "Invalid credentials"),
    403: ("SC403", "Permission denied"),
    404: ("SC404", "Not found"),
    409: ("SC409", "Conflict"),
}


def make_error(
    status: int,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    suberrors: list[str] | None = None,
) -> Response[Any]:
    if status == 429:
        return Response(RATE_LIMIT_TEXT, status_code=429, media_type="text/plain", headers=headers)
    code, message = _CODES.get(status, (f"SC{status}", "Error"))
    body: dict[str, Any] = {"detail": detail, "message": message, "code": code}
    if suberrors:
        body["suberrors"] = [{"message": m} for m in suberrors]
    return Response(
        msgspec.json.encode(body),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _orgplane_error(_: Request[Any, Any, Any], exc: OrgplaneError) -> Response[Any]:
    suberrors = [f"{e.field}: {e.message}" for e in exc.errors]
    return make_error(exc.status, exc.detail, headers=exc.headers, suberrors=suberrors)


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    messages = [
        f"{item.get('key') or 'body'}: {item.get('message')}"
        for item in exc.extra or []
        if isinstance(item, dict)
    ]
    return make_error(400, "; ".join(messages) or str(exc.detail), suberrors=messages)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return make_error(exc.status_code, str(exc.detail), headers=exc.headers)


# --- managed organizations ----------------------------------------------------------------------


@get(
    "/organizations/{organizationId:int}/managed-organizations",
    summary="List managed organizations",
    responses=ERRORS,
)
async def list_managed(
    organizationId: OrgKey,
    services: ServicesDep,
    principal: PrincipalDep,
    offset: PgOffset = 0,
    limit: PgLimit = 100,
) -> dict[str, Any]:
    async with services.db.read() as conn:
        parent = await reach_by_key(conn, principal, organizationId, scope="credits:read")
        page = await org_service.list_children(
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
                "timezone": row.timezone,
            }
            for row in rows
        ],
        "pg": {"sortBy": "id", "sortDir": "asc", "limit": limit, "offset": offset},
    }


async def _create(
    tx: Tx, actor: Actor, parent_key: int, data: ManagedOrganizationCreate, max_depth: int
) -> dict[str, Any]:
    assert actor.principal is not None
    parent = await reach_by_key(tx.conn, actor.principal, parent_key, scope="orgs:write")
    child = await org_service.create_child(
        tx,
        actor,
        parent.public_id,
        {"name": data.organizationName},
        max_depth=max_depth,
        allocations={METER: data.operations},
    )
    _, available = (await ledger_queries.balances(tx, [parent.id], METER))[parent.id]
    return {
        "userId": None,
        "userEmail": data.userEmail,
        "userName": data.userName,
        "userExisted": 0,
        "childOrganizationId": child.id,
        "newParentOperations": available,
    }


@post(
    "/organizations/{organizationId:int}/managed-organizations",
    summary="Create a managed organization",
    responses=ERRORS,
    status_code=200,
)
async def create_managed(
    organizationId: OrgKey,
    data: JSONBody[ManagedOrganizationCreate],
    services: ServicesDep,
    actor: ActorDep,
) -> dict[str, Any]:
    return await services.db.transaction(
        _create, actor, organizationId, data, services.settings.max_tree_depth
    )


async def _allocate(tx: Tx, actor: Actor, parent_key: int, child_key: int, amount: int) -> Any:
    assert actor.principal is not None
    parent = await reach_by_key(tx.conn, actor.principal, parent_key, scope="credits:write")
    child = await reach_by_key(tx.conn, actor.principal, child_key, scope="credits:write")
    return await credit_service.allocate(
        tx, actor, parent.public_id, child.public_id, METER, amount
    )


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
        _allocate, actor, organizationId, childOrganizationId, data.operations
    )
    return {
        "newParentOperations": allocation.parent_balance.available,
        "newChildOperations": allocation.child_balance.amount,
        "operationsDiff": allocation.diff,
        "limitIncreased": allocation.limit_increased,
    }


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
        parent = await reach_by_key(conn, principal, organizationId, scope="usage:read")
        report = await consumption.report(conn, principal, parent.public_id, rollup="children")
    out = []
    for entry in report["entries"]:
        ops = next((m for m in entry["meters"] if m["meter"] == METER), None)
        out.append(
            {
                "organizationId": entry["org"].id,
                "centicreditsConsumed": "0",
                "centicreditsExtra": "0",
                "operationsConsumed": ops["consumed"] if ops else 0,
                "operationsExtra": ops["extra"] if ops else 0,
                "transferConsumed": 0,
                "transferExtra": 0,
                "lastReset": report["last_reset"].isoformat(),
            }
        )
    return {"managedOrganizationsConsumption": out}


router = Router(
    path="/make/api/v2",
    route_handlers=[list_managed, create_managed, update_managed, managed_consumption],
    tags=["make"],
    security=MAKE_SECURITY,
    exception_handlers={
        OrgplaneError: _orgplane_error,
        ValidationException: _validation_error,
        HTTPException: _http_error,
    },
)
