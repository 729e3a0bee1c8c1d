"""SCIM Groups: the roles of the key's organization and who holds them."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, patch, post, put
from scim2_models import (
    Context,
    Group,
    GroupMember,
    Meta,
    PatchOp,
)

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.scim.common import (
    Attributes,
    ExcludedAttributes,
    GroupRef,
    ListingDep,
    _body,
    _dump,
    _listed,
    _location,
    _params,
    _respond,
    _validate,
)
from orgplane.api.scim.openapi import LOCATION, SendsPatchOp, SendsResource, scim
from orgplane.api.scim.shapes import ScimGroup, ScimGroupList
from orgplane.api.scim.users import _all_members
from orgplane.core.access.principal import Principal
from orgplane.core.access.service import reach
from orgplane.core.people import roles as role_service
from orgplane.db.engine import Reader

# --- Groups (roles) ---------------------------------------------------------------------------


async def _group(
    request: Request[Any, Any, Any], conn: Reader, principal: Principal, view: Any
) -> Group:
    members = await _all_members(conn, principal, role=view.id)
    return Group(
        id=view.id,
        display_name=view.name,
        members=[
            GroupMember(
                value=m.row.public_id,
                ref=_location(request, "Users", m.row.public_id),  # type: ignore[arg-type]
                type="User",
            )
            for m in members
        ]
        or None,
        meta=Meta(
            resource_type="Group",
            created=view.created_at,
            last_modified=view.modified_at,
            location=_location(request, "Groups", view.id),
        ),
    )


@get("/Groups", **scim("List groups"))
async def list_groups(
    request: Request[Any, Any, Any], services: ServicesDep, principal: PrincipalDep, q: ListingDep
) -> Response[ScimGroupList]:
    params = _params(Group, q.attributes, q.excludedAttributes)
    async with services.db.read() as conn:
        views = await role_service.list_roles(conn, principal, principal.org_public_id)
        groups = [await _group(request, conn, principal, v) for v in views]
    return _listed(Group, groups, q, params)


async def _reply_group(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    principal: Principal,
    group_id: GroupRef,
    status: int = 200,
    params: Any = None,
) -> Response[ScimGroup]:
    async with services.db.read() as conn:
        view = await role_service.get_role(conn, principal, principal.org_public_id, group_id)
        group = await _group(request, conn, principal, view)
    headers = {"Location": group.meta.location} if status == 201 and group.meta else None
    return _respond(_dump(group, params=params), status, headers)  # type: ignore[arg-type]


@get("/Groups/{group_id:str}", **scim("Get a group"))
async def get_group(
    request: Request[Any, Any, Any],
    group_id: GroupRef,
    services: ServicesDep,
    principal: PrincipalDep,
    attributes: Attributes = None,
    excludedAttributes: ExcludedAttributes = None,
) -> Response[ScimGroup]:
    params = _params(Group, attributes, excludedAttributes)
    return await _reply_group(request, services, principal, group_id, params=params)


def _member_ids(group: Group) -> set[str]:
    return {m.value for m in group.members or [] if m.value}


@post("/Groups", **scim("Create a group", 409, body=SendsResource, headers=[LOCATION]))
async def create_group(
    request: Request[Any, Any, Any], services: ServicesDep, actor: ActorDep
) -> Response[ScimGroup]:
    group = _validate(Group, await _body(request), Context.RESOURCE_CREATION_REQUEST)

    view = await services.db.transaction(
        role_service.create_role,
        actor,
        actor.principal.org_public_id,
        name=group.display_name,
        description="",
        capabilities=[],
        holders=_member_ids(group),
    )
    group_id = view.id
    return await _reply_group(request, services, actor.principal, group_id, 201)


async def _current_group(
    request: Request[Any, Any, Any], services: ServicesDep, principal: Principal, group_id: str
) -> Group:
    async with services.db.read() as conn:
        view = await role_service.get_role(conn, principal, principal.org_public_id, group_id)
        return await _group(request, conn, principal, view)


async def _apply_group(
    services: ServicesDep, actor: ActorDep, group_id: str, before: Group, after: Group
) -> None:
    """Write what changed between two SCIM representations of a group: one core call."""
    fields = {}
    if after.display_name and after.display_name != before.display_name:
        fields["name"] = after.display_name
    await services.db.transaction(
        role_service.update_role,
        actor,
        actor.principal.org_public_id,
        group_id,
        fields,
        holders=_member_ids(after),
    )


@put("/Groups/{group_id:str}", **scim("Replace a group", 409, body=SendsResource))
async def replace_group(
    request: Request[Any, Any, Any], group_id: GroupRef, services: ServicesDep, actor: ActorDep
) -> Response[ScimGroup]:
    async with services.db.read() as conn:
        await reach(conn, actor.principal, actor.principal.org_public_id, scope="users:write")
    after = _validate(Group, await _body(request), Context.RESOURCE_REPLACEMENT_REQUEST)
    before = await _current_group(request, services, actor.principal, group_id)
    await _apply_group(services, actor, group_id, before, after)
    return await _reply_group(request, services, actor.principal, group_id)


@patch("/Groups/{group_id:str}", **scim("Change a group", 409, body=SendsPatchOp))
async def patch_group(
    request: Request[Any, Any, Any], group_id: GroupRef, services: ServicesDep, actor: ActorDep
) -> Response[ScimGroup]:
    async with services.db.read() as conn:
        await reach(conn, actor.principal, actor.principal.org_public_id, scope="users:write")
    data = await _body(request)
    before = await _current_group(request, services, actor.principal, group_id)
    op = _validate(PatchOp[Group], data, Context.RESOURCE_PATCH_REQUEST)  # type: ignore[misc]
    after = before.model_copy(deep=True)
    op.patch(after)
    await _apply_group(services, actor, group_id, before, after)
    return await _reply_group(request, services, actor.principal, group_id)


@delete("/Groups/{group_id:str}", status_code=204, **scim("Delete a group", 409))
async def delete_group(group_id: GroupRef, services: ServicesDep, actor: ActorDep) -> None:
    await services.db.transaction(
        role_service.delete_role, actor, actor.principal.org_public_id, group_id
    )
