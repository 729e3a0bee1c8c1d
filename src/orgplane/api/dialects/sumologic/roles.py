"""Sumo Logic's roles API, v1 (``/v1/roles``) and v2 (``/v2/roles``): the roles of the access
key's organization, system roles included (``systemDefined``; they cannot be changed).

Capabilities are translated in ``capabilities.py``; ``autofillDependencies`` (default true) adds
what a capability implies in orgplane's catalog, or, false, refuses a list that lacks it. A
role's ``users`` are its holders; a create or update sets them in the same transaction. orgplane
holds no log, audit or security data, so the data filters (``filterPredicate`` in v1,
``logAnalyticsFilter``/``auditDataFilter``/``securityDataFilter``/``selectedViews`` in v2) must
be empty and ``selectionType`` ``All``; anything else is a 400 rather than a filter never applied.
Scopes: ``users:read`` to read, ``users:write`` to change (the core decides).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import delete, get, post, put
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import Meta, Struct

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.dialects.sumologic import capabilities as caps
from orgplane.api.dialects.sumologic.errors import ERRORS
from orgplane.core.access.principal import Caller, Principal
from orgplane.core.access.service import reach
from orgplane.core.errors import InvalidInput
from orgplane.core.people import roles as role_service
from orgplane.core.people import users as user_service
from orgplane.db.engine import Reader

RoleId = Annotated[str, PathParameter(description="The role's id", max_length=64)]
UserId = Annotated[str, PathParameter(description="The user's id", max_length=64)]
Limit = Annotated[int, QueryParameter(ge=1, le=1000, description="Page size (1-1000)")]
Token = Annotated[str | None, QueryParameter(max_length=32, description="`next` of a page")]
UserIds = Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=1000)]
CapabilityNames = Annotated[list[Annotated[str, Meta(max_length=100)]], Meta(max_length=200)]
Filter = Annotated[str, Meta(max_length=10_000)]
MAX_HOLDERS = 1000


class RoleFields(Struct):
    name: Annotated[str, Meta(min_length=1, max_length=128)]
    description: Annotated[str, Meta(max_length=255)] = ""
    users: UserIds = []
    capabilities: CapabilityNames = []
    autofillDependencies: bool = True


class CreateRoleDefinition(RoleFields):
    filterPredicate: Filter = ""


class CreateRoleDefinitionV2(RoleFields):
    logAnalyticsFilter: Filter = ""
    auditDataFilter: Filter = ""
    securityDataFilter: Filter = ""
    selectionType: Literal["All", "Allow", "Deny"] = "All"
    selectedViews: Annotated[list[dict[str, Any]], Meta(max_length=100)] = []


class RoleModel(Struct):
    id: str
    name: str
    description: str
    filterPredicate: str
    users: list[str]
    capabilities: list[str]
    autofillDependencies: bool
    systemDefined: bool
    createdAt: datetime
    createdBy: str
    modifiedAt: datetime
    modifiedBy: str


class RoleModelV2(Struct):
    id: str
    name: str
    description: str
    logAnalyticsFilter: str
    auditDataFilter: str
    securityDataFilter: str
    selectionType: str
    selectedViews: list[dict[str, Any]]
    users: list[str]
    capabilities: list[str]
    autofillDependencies: bool
    systemDefined: bool
    createdAt: datetime
    createdBy: str
    modifiedAt: datetime
    modifiedBy: str


class ListRoleModelsResponse(Struct):
    data: list[RoleModel]
    next: str | None


class ListRoleModelsResponseV2(Struct):
    data: list[RoleModelV2]
    next: str | None


def _no_filters(data: CreateRoleDefinition | CreateRoleDefinitionV2) -> None:
    if isinstance(data, CreateRoleDefinition):
        filters = {"filterPredicate": data.filterPredicate}
    else:
        filters = {
            "logAnalyticsFilter": data.logAnalyticsFilter,
            "auditDataFilter": data.auditDataFilter,
            "securityDataFilter": data.securityDataFilter,
        }
        if data.selectionType != "All" or data.selectedViews:
            raise InvalidInput.for_field(
                "selectionType", "orgplane holds no log views to select: use 'All' and no views"
            )
    for field, value in filters.items():
        if value.strip():
            raise InvalidInput.for_field(
                field, "orgplane holds no log data to filter: leave it empty"
            )


# --- rendering ---------------------------------------------------------------------------------


class _Role(Struct):
    """A role as both versions show it."""

    view: Any
    users: list[str]
    since: datetime


async def _holders(conn: Reader, principal: Principal, org_ref: str, role_ref: str) -> list[str]:
    members, _ = await user_service.list_members(
        conn, principal, org_ref, limit=MAX_HOLDERS, cursor=None, role=role_ref
    )
    return [m.row.public_id for m in members]


async def _load(conn: Reader, principal: Principal, view: Any, org: Any) -> _Role:
    users = await _holders(conn, principal, org.public_id, view.id)
    return _Role(view, users, org.created_at)


def _v1(role: _Role) -> RoleModel:
    view = role.view
    return RoleModel(
        id=view.id,
        name=view.name,
        description=view.description,
        filterPredicate="",
        users=role.users,
        capabilities=caps.to_sumo(view.capabilities),
        autofillDependencies=True,
        systemDefined=view.system,
        createdAt=view.created_at or role.since,
        createdBy="system" if view.system else "",
        modifiedAt=view.modified_at or role.since,
        modifiedBy="system" if view.system else "",
    )


def _v2(role: _Role) -> RoleModelV2:
    v1 = _v1(role)
    return RoleModelV2(
        id=v1.id,
        name=v1.name,
        description=v1.description,
        logAnalyticsFilter="",
        auditDataFilter="",
        securityDataFilter="",
        selectionType="All",
        selectedViews=[],
        users=v1.users,
        capabilities=v1.capabilities,
        autofillDependencies=True,
        systemDefined=v1.systemDefined,
        createdAt=v1.createdAt,
        createdBy=v1.createdBy,
        modifiedAt=v1.modifiedAt,
        modifiedBy=v1.modifiedBy,
    )


# --- operations (shared by v1 and v2) ----------------------------------------------------------


def _offset(token: str | None) -> int:
    if token is None:
        return 0
    if not token.isdigit():
        raise InvalidInput.for_field("query.token", "is not a `next` value from a previous page")
    return int(token)


async def _list(
    conn: Reader, principal: Principal, limit: int, token: str | None, name: str | None
) -> tuple[list[_Role], str | None]:
    """All roles sorted by name (an org has at most a few hundred), a page of them."""
    org = await reach(conn, principal, principal.org_public_id, scope="users:read")
    views = await role_service.list_roles(conn, principal, org.public_id)
    views.sort(key=lambda v: (v.name.lower(), v.id))
    if name is not None:
        views = [v for v in views if v.name.lower() == name.lower()]
    start = _offset(token)
    page = views[start : start + limit]
    more = start + limit < len(views)
    return [await _load(conn, principal, v, org) for v in page], (
        str(start + limit) if more else None
    )


async def _get(conn: Reader, principal: Principal, role_ref: str) -> _Role:
    org = await reach(conn, principal, principal.org_public_id, scope="users:read")
    view = await role_service.get_role(conn, principal, org.public_id, role_ref)
    return await _load(conn, principal, view, org)


async def _create(
    services: ServicesDep, actor: Caller, data: CreateRoleDefinition | CreateRoleDefinitionV2
) -> str:
    _no_filters(data)
    view = await services.db.transaction(
        role_service.create_role,
        actor,
        actor.principal.org_public_id,
        name=data.name,
        description=data.description,
        capabilities=caps.to_orgplane(data.capabilities, autofill=data.autofillDependencies),
        holders=data.users,
    )
    return view.id


async def _update(
    services: ServicesDep,
    actor: Caller,
    role_ref: str,
    data: CreateRoleDefinition | CreateRoleDefinitionV2,
) -> None:
    _no_filters(data)
    fields = {
        "name": data.name,
        "description": data.description,
        "capabilities": caps.to_orgplane(data.capabilities, autofill=data.autofillDependencies),
    }
    await services.db.transaction(
        role_service.update_role,
        actor,
        actor.principal.org_public_id,
        role_ref,
        fields,
        holders=data.users,
    )


async def _assign(
    services: ServicesDep, actor: Caller, role_ref: str, user_ref: str, grant: bool
) -> None:
    await services.db.transaction(
        role_service.assign, actor, actor.principal.org_public_id, role_ref, user_ref, grant=grant
    )


async def _delete(services: ServicesDep, actor: Caller, role_ref: str) -> None:
    await services.db.transaction(
        role_service.delete_role, actor, actor.principal.org_public_id, role_ref
    )


async def _read(services: ServicesDep, principal: Principal, role_ref: str) -> _Role:
    async with services.db.read() as conn:
        return await _get(conn, principal, role_ref)


# --- v1 ----------------------------------------------------------------------------------------

NameQuery = Annotated[str | None, QueryParameter(max_length=128, description="Exact role name")]
SortBy = Annotated[Literal["name"], QueryParameter(description="Sort key")]


@get("/v1/roles", summary="List roles", responses=ERRORS)
async def list_roles(
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = 100,
    token: Token = None,
    sortBy: SortBy = "name",
    name: NameQuery = None,
) -> ListRoleModelsResponse:
    async with services.db.read() as conn:
        page, next_token = await _list(conn, principal, limit, token, name)
    return ListRoleModelsResponse([_v1(r) for r in page], next_token)


@post("/v1/roles", summary="Create a new role", status_code=200, responses=ERRORS)
async def create_role(
    data: JSONBody[CreateRoleDefinition], services: ServicesDep, actor: ActorDep
) -> RoleModel:
    role_ref = await _create(services, actor, data)
    return _v1(await _read(services, actor.principal, role_ref))


@get("/v1/roles/{id:str}", summary="Get a role", responses=ERRORS)
async def get_role(id: RoleId, services: ServicesDep, principal: PrincipalDep) -> RoleModel:
    return _v1(await _read(services, principal, id))


@put("/v1/roles/{id:str}", summary="Update a role", responses=ERRORS)
async def update_role(
    id: RoleId,
    data: JSONBody[CreateRoleDefinition],
    services: ServicesDep,
    actor: ActorDep,
) -> RoleModel:
    await _update(services, actor, id, data)
    return _v1(await _read(services, actor.principal, id))


@delete("/v1/roles/{id:str}", summary="Delete a role", status_code=204, responses=ERRORS)
async def delete_role(id: RoleId, services: ServicesDep, actor: ActorDep) -> None:
    await _delete(services, actor, id)


@put(
    "/v1/roles/{roleId:str}/users/{userId:str}", summary="Assign a role to a user", responses=ERRORS
)
async def assign_role(
    roleId: RoleId,
    userId: UserId,
    services: ServicesDep,
    actor: ActorDep,
) -> RoleModel:
    await _assign(services, actor, roleId, userId, True)
    return _v1(await _read(services, actor.principal, roleId))


@delete(
    "/v1/roles/{roleId:str}/users/{userId:str}",
    summary="Remove role from a user",
    status_code=204,
    responses=ERRORS,
)
async def remove_role(
    roleId: RoleId,
    userId: UserId,
    services: ServicesDep,
    actor: ActorDep,
) -> None:
    await _assign(services, actor, roleId, userId, False)


# --- v2 ----------------------------------------------------------------------------------------


@get("/v2/roles", summary="List roles (v2)", responses=ERRORS)
async def list_roles_v2(
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = 100,
    token: Token = None,
    sortBy: SortBy = "name",
    name: NameQuery = None,
) -> ListRoleModelsResponseV2:
    async with services.db.read() as conn:
        page, next_token = await _list(conn, principal, limit, token, name)
    return ListRoleModelsResponseV2([_v2(r) for r in page], next_token)


@post("/v2/roles", summary="Create a new role (v2)", status_code=200, responses=ERRORS)
async def create_role_v2(
    data: JSONBody[CreateRoleDefinitionV2], services: ServicesDep, actor: ActorDep
) -> RoleModelV2:
    role_ref = await _create(services, actor, data)
    return _v2(await _read(services, actor.principal, role_ref))


@get("/v2/roles/{id:str}", summary="Get a role (v2)", responses=ERRORS)
async def get_role_v2(id: RoleId, services: ServicesDep, principal: PrincipalDep) -> RoleModelV2:
    return _v2(await _read(services, principal, id))


@put("/v2/roles/{id:str}", summary="Update a role (v2)", responses=ERRORS)
async def update_role_v2(
    id: RoleId,
    data: JSONBody[CreateRoleDefinitionV2],
    services: ServicesDep,
    actor: ActorDep,
) -> RoleModelV2:
    await _update(services, actor, id, data)
    return _v2(await _read(services, actor.principal, id))


@delete("/v2/roles/{id:str}", summary="Delete a role (v2)", status_code=204, responses=ERRORS)
async def delete_role_v2(id: RoleId, services: ServicesDep, actor: ActorDep) -> None:
    await _delete(services, actor, id)


@put(
    "/v2/roles/{roleId:str}/users/{userId:str}",
    summary="Assign a role to a user (v2)",
    responses=ERRORS,
)
async def assign_role_v2(
    roleId: RoleId,
    userId: UserId,
    services: ServicesDep,
    actor: ActorDep,
) -> RoleModelV2:
    await _assign(services, actor, roleId, userId, True)
    return _v2(await _read(services, actor.principal, roleId))


@delete(
    "/v2/roles/{roleId:str}/users/{userId:str}",
    summary="Remove role from a user (v2)",
    status_code=204,
    responses=ERRORS,
)
async def remove_role_v2(
    roleId: RoleId,
    userId: UserId,
    services: ServicesDep,
    actor: ActorDep,
) -> None:
    await _assign(services, actor, roleId, userId, False)


HANDLERS = [
    list_roles,
    create_role,
    get_role,
    update_role,
    delete_role,
    assign_role,
    remove_role,
    list_roles_v2,
    create_role_v2,
    get_role_v2,
    update_role_v2,
    delete_role_v2,
    assign_role_v2,
    remove_role_v2,
]
