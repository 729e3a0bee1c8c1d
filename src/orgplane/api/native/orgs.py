"""Native organization endpoints: one org, its children and descendants, moves, delete/restore."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from litestar import Request, Response, Router, delete, get, patch, post
from litestar.params import FromQuery, HeaderParameter, JSONBody, PathParameter, QueryParameter

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.idempotency import run_once
from orgplane.api.native.openapi import problems
from orgplane.api.native.schemas import (
    Message,
    Org,
    OrgCreate,
    OrgMove,
    OrgPage,
    OrgUpdate,
    org_out,
    org_page_out,
    set_fields,
)
from orgplane.core.access.principal import Principal
from orgplane.core.access.service import reach
from orgplane.core.orgs import queries as org_queries
from orgplane.core.orgs import service as org_service
from orgplane.core.pagination import DEFAULT_LIMIT, MAX_LIMIT

OrgId = Annotated[str, PathParameter(description="The organization's public id", max_length=64)]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Page size")]
Cursor = Annotated[
    str | None, QueryParameter(description="`next_cursor` of the previous page", max_length=512)
]
NameFilter = Annotated[
    str | None,
    QueryParameter(
        name="filter[name]", max_length=100, description="Case-insensitive substring of the name"
    ),
]
StatusFilter = Annotated[
    Literal["active", "disabled", "deactivated", "deleted"] | None,
    QueryParameter(description="Status"),
]
TagFilter = Annotated[
    str | None, QueryParameter(max_length=200, description="Only orgs with this tag")
]
IfMatch = Annotated[str | None, HeaderParameter(name="If-Match", required=False)]


def org_response(row: Any, principal: PrincipalDep, status_code: int = 200) -> Response[Org]:
    return Response(
        org_out(row, show_parent=row.id != principal.org_id),
        status_code=status_code,
        headers={"ETag": org_service.etag(row)},
    )


@get("/{org_id:str}", summary="Get an organization", responses=problems())
async def get_org(org_id: OrgId, services: ServicesDep, principal: PrincipalDep) -> Response[Org]:
    async with services.db.read() as conn:
        row = await reach(conn, principal, org_id, scope="orgs:read")
    return org_response(row, principal)


@patch("/{org_id:str}", summary="Update an organization", responses=problems(409, 412))
async def update_org(
    org_id: OrgId,
    data: JSONBody[OrgUpdate],
    services: ServicesDep,
    actor: ActorDep,
    if_match: IfMatch = None,
) -> Response[Org]:
    row = await services.db.transaction(
        org_service.update,
        actor=actor,
        org_ref=org_id,
        changes=set_fields(data),
        if_match=if_match,
    )
    return org_response(row, actor.principal)


@delete(
    "/{org_id:str}",
    summary="Delete an organization",
    status_code=200,
    responses=problems(409),
    description="Soft-deletes the organization; it can be restored for the configured window "
    "(30 days by default). An organization with children needs `cascade=true`.",
)
async def delete_org(
    org_id: OrgId, services: ServicesDep, actor: ActorDep, cascade: FromQuery[bool] = False
) -> Message:
    await services.db.transaction(org_service.delete, actor=actor, org_ref=org_id, cascade=cascade)
    return Message(message="Organization deleted successfully")


@post(
    "/{org_id:str}/restore",
    summary="Restore a deleted organization",
    status_code=200,
    responses=problems(409, 410),
)
async def restore_org(org_id: OrgId, services: ServicesDep, actor: ActorDep) -> Response[Org]:
    row = await services.db.transaction(
        org_service.restore,
        actor=actor,
        org_ref=org_id,
        window_days=services.settings.restore_window_days,
    )
    return org_response(row, actor.principal)


@post(
    "/{org_id:str}/children",
    summary="Create a child organization",
    status_code=201,
    responses=problems(409, 422),
    description="Send an `Idempotency-Key` header to make retries safe: a repeated key returns "
    "the first response (with `Idempotent-Replayed: true`) and creates nothing.",
)
async def create_child(
    org_id: OrgId,
    data: JSONBody[OrgCreate],
    request: Request[Any, Any, Any],
    services: ServicesDep,
    actor: ActorDep,
    idempotency_key: Annotated[
        str | None, HeaderParameter(name="Idempotency-Key", required=False)
    ] = None,
) -> Response[Any]:
    fields = set_fields(data)
    allocations = fields.pop("allocations", None)
    command = functools.partial(
        org_service.create_child,
        actor=actor,
        parent_ref=org_id,
        fields=fields,
        max_depth=services.settings.max_tree_depth,
        allocations=allocations,
    )
    return await run_once(request, services, actor.principal, idempotency_key, command, _created)


def _created(row: Any, principal: Principal) -> Response[Org]:
    response = org_response(row, principal, status_code=201)
    response.headers["Location"] = f"/orgs/{row.public_id}"
    return response


@get("/{org_id:str}/children", summary="List child organizations", responses=problems())
async def list_children(
    org_id: OrgId,
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    name: NameFilter = None,
    status: StatusFilter = None,
    tag: TagFilter = None,
) -> OrgPage:
    async with services.db.read() as conn:
        page = await org_queries.list_children(
            conn, principal, org_id, limit=limit, cursor=cursor, name=name, status=status, tag=tag
        )
    return org_page_out(page)


@get(
    "/{org_id:str}/descendants",
    summary="List all descendants, depth first",
    responses=problems(),
)
async def list_descendants(
    org_id: OrgId,
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    max_depth: Annotated[
        int | None, QueryParameter(ge=1, le=64, description="Levels below")
    ] = None,
    name: NameFilter = None,
    status: StatusFilter = None,
    tag: TagFilter = None,
) -> OrgPage:
    async with services.db.read() as conn:
        page = await org_queries.list_descendants(
            conn,
            principal,
            org_id,
            limit=limit,
            cursor=cursor,
            max_depth=max_depth,
            name=name,
            status=status,
            tag=tag,
        )
    return org_page_out(page)


@post(
    "/{org_id:str}/move",
    summary="Move an organization under another parent",
    status_code=200,
    responses=problems(409, 412),
)
async def move_org(
    org_id: OrgId,
    data: JSONBody[OrgMove],
    services: ServicesDep,
    actor: ActorDep,
    if_match: IfMatch = None,
) -> Response[Org]:
    row = await services.db.transaction(
        org_service.move,
        actor=actor,
        org_ref=org_id,
        new_parent_ref=data.parent_id,
        max_depth=services.settings.max_tree_depth,
        if_match=if_match,
    )
    return org_response(row, actor.principal)


router = Router(
    path="/orgs",
    route_handlers=[
        get_org,
        update_org,
        delete_org,
        restore_org,
        create_child,
        list_children,
        list_descendants,
        move_org,
    ],
    tags=["organizations"],
)
