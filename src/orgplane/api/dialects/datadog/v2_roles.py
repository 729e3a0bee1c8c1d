"""Datadog v2 roles and permissions: the key's org's roles (system and its own), the
capabilities they grant as Datadog permissions, and who holds them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import delete, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET, Meta, Struct, UnsetType

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.dialects.datadog import permissions, shapes
from orgplane.api.dialects.datadog.errors import ERRORS
from orgplane.api.dialects.datadog.v2_users import (
    PageNumber,
    PageSize,
    Ref,
    Text,
    own_org,
    users_page,
)
from orgplane.core.access.principal import Principal
from orgplane.core.errors import InvalidInput, Unprocessable
from orgplane.core.people import roles as role_service
from orgplane.core.people.roles import RoleView

RoleId = Annotated[str, PathParameter(description="The role's id", max_length=64)]
ROLE_SORTS = {
    "name": lambda r: r.name.lower(),
    "modified_at": lambda r: r.modified_at.isoformat() if r.modified_at else "",
    "user_count": lambda r: r.users,
}


class Refs(Struct):
    data: Annotated[list[Ref], Meta(max_length=100)] = []


class RoleRelationships(Struct):
    permissions: Refs | None = None


class RoleCreateAttributes(Struct):
    name: str
    default_permissions_opt_out: bool = False
    receives_permissions_from: list[str] | None = None


class RoleCreateData(Struct):
    attributes: RoleCreateAttributes
    type: Literal["roles"] = "roles"
    relationships: RoleRelationships | None = None


class RoleCreateRequest(Struct):
    data: RoleCreateData


class RoleUpdateAttributes(Struct):
    name: str | UnsetType = UNSET


class RoleUpdateData(Struct):
    id: str
    type: Literal["roles"]
    attributes: RoleUpdateAttributes
    relationships: RoleRelationships | None = None


class RoleUpdateRequest(Struct):
    data: RoleUpdateData


class RoleCloneAttributes(Struct):
    name: str


class RoleCloneData(Struct):
    attributes: RoleCloneAttributes
    type: Literal["roles"] = "roles"


class RoleCloneRequest(Struct):
    data: RoleCloneData


class PermissionRef(Struct):
    id: Annotated[
        str,
        Meta(
            max_length=64,
            description="GET /api/v2/permissions",
            examples=[permissions.BY_CAPABILITY["viewOrganizations"].id],
        ),
    ]
    type: Literal["permissions"] = "permissions"


class PermissionRelationship(Struct):
    data: PermissionRef


class UserRef(Struct):
    id: Annotated[str, Meta(max_length=64)]
    type: Literal["users"]


class UserRelationship(Struct):
    data: UserRef


def _capabilities(relationships: RoleRelationships | None, field: str) -> list[str]:
    if relationships is None or relationships.permissions is None:
        return []
    out = []
    for i, ref in enumerate(relationships.permissions.data):
        if ref.type != "permissions":
            raise InvalidInput.for_field(f"{field}[{i}].type", "must be 'permissions'")
        out.append(permissions.capability_of(ref.id, f"{field}[{i}].id"))
    return out


def _role_document(view: RoleView) -> dict[str, Any]:
    return {"data": shapes.role(view)}


@get("/api/v2/roles", summary="List roles", responses=ERRORS)
async def list_roles(
    services: ServicesDep,
    principal: PrincipalDep,
    page_size: PageSize = 10,
    page_number: PageNumber = 0,
    sort: Annotated[
        Literal["name", "-name", "modified_at", "-modified_at", "user_count", "-user_count"],
        QueryParameter(),
    ] = "name",
    filter: Text = None,
    filter_id: Annotated[str | None, QueryParameter(name="filter[id]", max_length=2000)] = None,
) -> dict[str, Any]:
    async with services.db.read() as conn:
        views = await role_service.list_roles(conn, principal, principal.org_public_id)
    total = len(views)
    if filter:
        views = [v for v in views if filter.lower() in v.name.lower()]
    if filter_id:
        wanted = {i.strip() for i in filter_id.split(",")}
        views = [v for v in views if v.id in wanted]
    views.sort(key=ROLE_SORTS[sort.removeprefix("-")], reverse=sort.startswith("-"))
    start = page_size * page_number
    return {
        "data": [shapes.role(v) for v in views[start : start + page_size]],
        "meta": {"page": {"total_count": total, "total_filtered_count": len(views)}},
    }


@post(
    "/api/v2/roles",
    summary="Create role",
    status_code=200,
    responses=ERRORS,
    description="The role grants exactly the permissions sent: orgplane attaches no default "
    "set (`default_permissions_opt_out` is accepted and has no effect).",
)
async def create_role(
    data: JSONBody[RoleCreateRequest], services: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    body = data.data
    view = await services.db.transaction(
        role_service.create_role,
        actor,
        actor.principal.org_public_id,
        name=body.attributes.name,
        description="",
        capabilities=_capabilities(body.relationships, "data.relationships.permissions.data"),
    )
    return _role_document(view)


@get("/api/v2/roles/{role_id:str}", summary="Get a role", responses=ERRORS)
async def get_role(role_id: RoleId, services: ServicesDep, principal: PrincipalDep) -> Any:
    async with services.db.read() as conn:
        view = await role_service.get_role(conn, principal, principal.org_public_id, role_id)
    return _role_document(view)


@patch("/api/v2/roles/{role_id:str}", summary="Update a role", responses=ERRORS)
async def update_role(
    role_id: RoleId, data: JSONBody[RoleUpdateRequest], services: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    if data.data.id != role_id:
        raise Unprocessable("UUID's in the URL and request body do not match")
    body = data.data
    fields: dict[str, Any] = {}
    if not isinstance(body.attributes.name, UnsetType):
        fields["name"] = body.attributes.name
    if body.relationships is not None and body.relationships.permissions is not None:
        fields["capabilities"] = _capabilities(
            body.relationships, "data.relationships.permissions.data"
        )
    view = await services.db.transaction(
        role_service.update_role, actor, actor.principal.org_public_id, role_id, fields
    )
    return _role_document(view)


@delete("/api/v2/roles/{role_id:str}", summary="Delete role", status_code=204, responses=ERRORS)
async def delete_role(role_id: RoleId, services: ServicesDep, actor: ActorDep) -> None:
    await services.db.transaction(
        role_service.delete_role, actor, actor.principal.org_public_id, role_id
    )


@post(
    "/api/v2/roles/{role_id:str}/clone",
    summary="Create a new role by cloning an existing role",
    status_code=200,
    responses=ERRORS,
)
async def clone_role(
    role_id: RoleId, data: JSONBody[RoleCloneRequest], services: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    view = await services.db.transaction(
        role_service.clone_role,
        actor=actor,
        org_ref=actor.principal.org_public_id,
        role_ref=role_id,
        name=data.data.attributes.name,
    )
    return _role_document(view)


# --- permissions ---------------------------------------------------------------------------------


@get(
    "/api/v2/permissions",
    summary="List permissions",
    responses=ERRORS,
    description="orgplane's capabilities as Datadog permissions (stable uuid5 ids).",
)
async def list_permissions(
    principal: PrincipalDep,
    include_scopes: Annotated[bool | None, QueryParameter()] = None,
) -> dict[str, Any]:
    return {"data": permissions.every()}


@get(
    "/api/v2/roles/{role_id:str}/permissions",
    summary="List permissions for a role",
    responses=ERRORS,
)
async def list_role_permissions(
    role_id: RoleId, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    async with services.db.read() as conn:
        view = await role_service.get_role(conn, principal, principal.org_public_id, role_id)
    return {"data": permissions.resources(view.capabilities)}


@post(
    "/api/v2/roles/{role_id:str}/permissions",
    summary="Grant permission to a role",
    status_code=200,
    responses=ERRORS,
)
async def add_permission_to_role(
    role_id: RoleId,
    data: JSONBody[PermissionRelationship],
    services: ServicesDep,
    actor: ActorDep,
) -> dict[str, Any]:
    view = await services.db.transaction(
        role_service.change_capability,
        actor=actor,
        org_ref=actor.principal.org_public_id,
        role_ref=role_id,
        capability=permissions.capability_of(data.data.id, "data.id"),
        grant=True,
    )
    return {"data": permissions.resources(view.capabilities)}


@delete(
    "/api/v2/roles/{role_id:str}/permissions",
    summary="Revoke permission",
    status_code=200,
    responses=ERRORS,
)
async def remove_permission_from_role(
    role_id: RoleId,
    data: JSONBody[PermissionRelationship],
    services: ServicesDep,
    actor: ActorDep,
) -> dict[str, Any]:
    view = await services.db.transaction(
        role_service.change_capability,
        actor=actor,
        org_ref=actor.principal.org_public_id,
        role_ref=role_id,
        capability=permissions.capability_of(data.data.id, "data.id"),
        grant=False,
    )
    return {"data": permissions.resources(view.capabilities)}


# --- role users ----------------------------------------------------------------------------------


@get("/api/v2/roles/{role_id:str}/users", summary="Get all users of a role", responses=ERRORS)
async def list_role_users(
    role_id: RoleId,
    services: ServicesDep,
    principal: PrincipalDep,
    page_size: PageSize = 10,
    page_number: PageNumber = 0,
    sort: Annotated[str, QueryParameter(max_length=32)] = "name",
    filter: Text = None,
) -> dict[str, Any]:
    async with services.db.read() as conn:
        org = await own_org(conn, principal, "users:read")
        await role_service.get_role(conn, principal, org.public_id, role_id)
        return await users_page(
            conn,
            principal,
            org,
            size=page_size,
            number=page_number,
            sort=sort,
            sort_dir=None,
            text=filter,
            status=None,
            role=role_id,
        )


async def _role_users(services: ServicesDep, principal: Principal, role_id: str) -> Any:
    """The role's users after a change (the first 100)."""
    async with services.db.read() as conn:
        org = await own_org(conn, principal, "users:read")
        return await users_page(
            conn,
            principal,
            org,
            size=100,
            number=0,
            sort="name",
            sort_dir=None,
            text=None,
            status=None,
            role=role_id,
        )


@post(
    "/api/v2/roles/{role_id:str}/users",
    summary="Add a user to a role",
    status_code=200,
    responses=ERRORS,
    description="Answers with the role's users afterwards (the first 100).",
)
async def add_user_to_role(
    role_id: RoleId, data: JSONBody[UserRelationship], services: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    await services.db.transaction(
        role_service.assign,
        actor,
        actor.principal.org_public_id,
        role_id,
        data.data.id,
        grant=True,
    )
    page: dict[str, Any] = await _role_users(services, actor.principal, role_id)
    return page


@delete(
    "/api/v2/roles/{role_id:str}/users",
    summary="Remove a user from a role",
    status_code=200,
    responses=ERRORS,
    description="Answers with the role's users afterwards (the first 100).",
)
async def remove_user_from_role(
    role_id: RoleId, data: JSONBody[UserRelationship], services: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    await services.db.transaction(
        role_service.assign,
        actor,
        actor.principal.org_public_id,
        role_id,
        data.data.id,
        grant=False,
    )
    page: dict[str, Any] = await _role_users(services, actor.principal, role_id)
    return page


HANDLERS = [
    list_roles,
    create_role,
    get_role,
    update_role,
    delete_role,
    clone_role,
    list_permissions,
    list_role_permissions,
    add_permission_to_role,
    remove_permission_from_role,
    list_role_users,
    add_user_to_role,
    remove_user_from_role,
]
