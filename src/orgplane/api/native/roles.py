"""Native role endpoints: the capability catalog, an org's roles, and who holds them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Router, delete, get, patch, post, put
from litestar.params import JSONBody, PathParameter
from msgspec import UNSET, Meta, Struct, UnsetType

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.native.openapi import problems
from orgplane.api.native.orgs import OrgId
from orgplane.api.native.schemas import Name, set_fields
from orgplane.api.native.users import UserId
from orgplane.core.people import roles as role_service
from orgplane.core.people.capabilities import SYSTEM_ROLES

RoleId = Annotated[
    str,
    PathParameter(description="A system role key or a custom role id (rol_...)", max_length=64),
]
Description = Annotated[str, Meta(max_length=2000)]
Capabilities = Annotated[
    list[Annotated[str, Meta(max_length=64)]],
    Meta(max_length=100, description="Names from GET /capabilities"),
]


class Capability(Struct):
    name: str
    description: str
    implies: list[str]


class SystemRoleSummary(Struct):
    id: str
    name: str
    capabilities: list[str]


class CapabilityCatalog(Struct):
    data: list[Capability]
    system_roles: list[SystemRoleSummary]


class Role(Struct):
    id: str
    name: str
    description: str
    capabilities: list[str]
    system: bool
    users: int
    created_at: datetime | None
    modified_at: datetime | None


class RoleList(Struct):
    data: list[Role]


class RoleCreate(Struct, forbid_unknown_fields=True):
    name: Name
    capabilities: Capabilities
    description: Description = ""


class RoleUpdate(Struct, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    capabilities: Capabilities | UnsetType = UNSET
    description: Description | UnsetType = UNSET


def role_out(view: role_service.RoleView) -> Role:
    return Role(
        id=view.id,
        name=view.name,
        description=view.description,
        capabilities=view.capabilities,
        system=view.system,
        users=view.users,
        created_at=view.created_at,
        modified_at=view.modified_at,
    )


@get(
    "/capabilities",
    summary="The capability catalog",
    tags=["roles"],
    responses=problems(),
    description="Each capability, what it implies, and the system roles every org has.",
)
async def list_capabilities(principal: PrincipalDep) -> CapabilityCatalog:
    return CapabilityCatalog(
        data=[Capability(**c) for c in role_service.catalog()],
        system_roles=[
            SystemRoleSummary(id=key, name=name, capabilities=sorted(caps))
            for key, (name, caps) in SYSTEM_ROLES.items()
        ],
    )


@get("/{org_id:str}/roles", summary="List roles (system roles first)", responses=problems())
async def list_roles(org_id: OrgId, services: ServicesDep, principal: PrincipalDep) -> RoleList:
    async with services.db.read() as conn:
        views = await role_service.list_roles(conn, principal, org_id)
    return RoleList([role_out(v) for v in views])


@post("/{org_id:str}/roles", summary="Create a role", status_code=201, responses=problems(409))
async def create_role(
    org_id: OrgId, data: JSONBody[RoleCreate], services: ServicesDep, actor: ActorDep
) -> Role:
    view = await services.db.transaction(
        role_service.create_role,
        actor,
        org_id,
        name=data.name,
        description=data.description,
        capabilities=data.capabilities,
    )
    return role_out(view)


@get("/{org_id:str}/roles/{role_id:str}", summary="Get a role", responses=problems())
async def get_role(
    org_id: OrgId, role_id: RoleId, services: ServicesDep, principal: PrincipalDep
) -> Role:
    async with services.db.read() as conn:
        return role_out(await role_service.get_role(conn, principal, org_id, role_id))


@put(
    "/{org_id:str}/roles/{role_id:str}",
    summary="Replace a role",
    responses=problems(409),
    description="System roles cannot be changed (409).",
)
async def replace_role(
    org_id: OrgId,
    role_id: RoleId,
    data: JSONBody[RoleCreate],
    services: ServicesDep,
    actor: ActorDep,
) -> Role:
    fields = {"name": data.name, "description": data.description, "capabilities": data.capabilities}
    return role_out(
        await services.db.transaction(role_service.update_role, actor, org_id, role_id, fields)
    )


@patch("/{org_id:str}/roles/{role_id:str}", summary="Change a role", responses=problems(409))
async def update_role(
    org_id: OrgId,
    role_id: RoleId,
    data: JSONBody[RoleUpdate],
    services: ServicesDep,
    actor: ActorDep,
) -> Role:
    return role_out(
        await services.db.transaction(
            role_service.update_role, actor, org_id, role_id, set_fields(data)
        )
    )


@delete(
    "/{org_id:str}/roles/{role_id:str}",
    summary="Delete a role",
    status_code=204,
    responses=problems(409),
    description="A role held by any member cannot be deleted (409 with `users`, their number).",
)
async def delete_role(
    org_id: OrgId, role_id: RoleId, services: ServicesDep, actor: ActorDep
) -> None:
    await services.db.transaction(role_service.delete_role, actor, org_id, role_id)


@put(
    "/{org_id:str}/roles/{role_id:str}/users/{user_id:str}",
    summary="Give a role to a member",
    status_code=204,
    responses=problems(409),
)
async def assign_role(
    org_id: OrgId, role_id: RoleId, user_id: UserId, services: ServicesDep, actor: ActorDep
) -> None:
    await services.db.transaction(role_service.assign, actor, org_id, role_id, user_id, grant=True)


@delete(
    "/{org_id:str}/roles/{role_id:str}/users/{user_id:str}",
    summary="Take a role from a member",
    status_code=204,
    responses=problems(409),
    description="Refused (409) when it would leave the org without an owner or administrator.",
)
async def unassign_role(
    org_id: OrgId, role_id: RoleId, user_id: UserId, services: ServicesDep, actor: ActorDep
) -> None:
    await services.db.transaction(role_service.assign, actor, org_id, role_id, user_id, grant=False)


router = Router(
    path="/orgs",
    route_handlers=[
        list_roles,
        create_role,
        get_role,
        replace_role,
        update_role,
        delete_role,
        assign_role,
        unassign_role,
    ],
    tags=["roles"],
)
