"""Datadog v2 managed orgs, users and invitations: JSON:API over the key's org and its members."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Request, delete, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET, Meta, Struct, UnsetType

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.dialects.datadog import permissions, shapes
from orgplane.api.dialects.datadog.errors import ERRORS
from orgplane.api.dialects.datadog.v1 import datadog_base
from orgplane.core.access.principal import Principal
from orgplane.core.access.service import reach
from orgplane.core.errors import InvalidInput, Unprocessable
from orgplane.core.orgs import queries as org_queries
from orgplane.core.people import directory
from orgplane.core.people import invitations as invitation_service
from orgplane.core.people import memberships as ms
from orgplane.core.people import service as people
from orgplane.core.people import users as user_service
from orgplane.core.people.capabilities import expand
from orgplane.db.engine import Reader

UserId = Annotated[str, PathParameter(description="The user's id", max_length=64)]
InvitationId = Annotated[str, PathParameter(description="The invitation's id", max_length=64)]
PageSize = Annotated[int, QueryParameter(name="page[size]", ge=1, le=1000)]
PageNumber = Annotated[int, QueryParameter(name="page[number]", ge=0, le=100_000)]
Text = Annotated[str | None, QueryParameter(max_length=200)]
MANAGED_MAX = 1000


class Ref(Struct):
    id: Annotated[str, Meta(max_length=64)]
    type: str


class Refs(Struct):
    data: Annotated[list[Ref], Meta(max_length=100)] = []


class UserRelationships(Struct):
    roles: Refs | None = None


class UserCreateAttributes(Struct):
    email: str
    name: str | None = None
    title: str | None = None


class UserCreateData(Struct):
    type: Literal["users"]
    attributes: UserCreateAttributes
    relationships: UserRelationships | None = None


class UserCreateRequest(Struct):
    data: UserCreateData


class UserUpdateAttributes(Struct):
    disabled: bool | UnsetType = UNSET
    email: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    title: str | UnsetType | None = UNSET


class UserUpdateData(Struct):
    id: str
    type: Literal["users"]
    attributes: UserUpdateAttributes


class UserUpdateRequest(Struct):
    data: UserUpdateData


class UserRef(Struct):
    data: Ref


class InvitationRelationships(Struct):
    user: UserRef


class InvitationData(Struct):
    type: Literal["user_invitations"]
    relationships: InvitationRelationships


class InvitationsRequest(Struct):
    data: Annotated[list[InvitationData], Meta(min_length=1, max_length=100)]


async def own_org(conn: Reader, principal: Principal, scope: str) -> Any:
    return await reach(conn, principal, principal.org_public_id, scope=scope)


async def _own_uuid(services: ServicesDep, principal: Principal) -> str:
    async with services.db.read() as conn:
        uuid: str = (await own_org(conn, principal, "users:read")).uuid
    return uuid


# --- managed orgs --------------------------------------------------------------------------------


@get("/api/v2/org", summary="List your managed organizations", responses=ERRORS)
async def list_managed_orgs(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    principal: PrincipalDep,
    filter_name: Annotated[str | None, QueryParameter(name="filter[name]", max_length=100)] = None,
) -> dict[str, Any]:
    async with services.db.read() as conn:
        own = await own_org(conn, principal, "orgs:read")
        page = await org_queries.list_descendants(
            conn, principal, own.public_id, limit=MANAGED_MAX, name=filter_name
        )
    base = datadog_base(request)
    return {
        "data": {
            "id": own.uuid,
            "type": "managed_orgs",
            "relationships": {
                "current_org": {"data": shapes.org_ref(own)},
                "managed_orgs": {"data": [shapes.org_ref(r) for r in page.rows]},
            },
        },
        "included": [shapes.v2_org(own, base), *(shapes.v2_org(r, base) for r in page.rows)],
    }


# --- users ---------------------------------------------------------------------------------------


def user_document(member: user_service.Member, org: Any) -> dict[str, Any]:
    return {"data": shapes.user(member, org.uuid)}


def _sort(sort: str, sort_dir: str | None) -> tuple[str, bool]:
    descending = sort.startswith("-")
    key = sort.removeprefix("-")
    if sort_dir is not None:
        descending = sort_dir == "desc"
    return key, descending


def _statuses(value: str | None) -> list[str]:
    if not value:
        return []
    out = []
    for item in (part.strip() for part in value.split(",")):
        if item not in shapes.STATUS_IN:
            raise InvalidInput.for_field(
                "query.filter[status]", f"unknown status {item!r}; use Active, Pending, Disabled"
            )
        out.append(shapes.STATUS_IN[item])
    return out


async def users_page(
    conn: Reader,
    principal: Principal,
    org: Any,
    *,
    size: int,
    number: int,
    sort: str,
    sort_dir: str | None,
    text: str | None,
    status: str | None,
    role: str | None = None,
) -> dict[str, Any]:
    key, descending = _sort(sort, sort_dir)
    page = await directory.page_members(
        conn,
        principal,
        org.public_id,
        offset=size * number,
        limit=size,
        sort=key,
        descending=descending,
        text=text,
        statuses=_statuses(status),
        role=role,
    )
    return {
        "data": [shapes.user(m, org.uuid) for m in page.members],
        "meta": {"page": {"total_count": page.total, "total_filtered_count": page.filtered}},
    }


@get("/api/v2/users", summary="List all users", responses=ERRORS)
async def list_users(
    services: ServicesDep,
    principal: PrincipalDep,
    page_size: PageSize = 10,
    page_number: PageNumber = 0,
    sort: Annotated[str, QueryParameter(max_length=32)] = "name",
    sort_dir: Annotated[Literal["asc", "desc"] | None, QueryParameter()] = None,
    filter: Text = None,
    filter_status: Annotated[
        str | None, QueryParameter(name="filter[status]", max_length=64)
    ] = None,
) -> dict[str, Any]:
    async with services.db.read() as conn:
        org = await own_org(conn, principal, "users:read")
        return await users_page(
            conn,
            principal,
            org,
            size=page_size,
            number=page_number,
            sort=sort,
            sort_dir=sort_dir,
            text=filter,
            status=filter_status,
        )


def _role_refs(relationships: UserRelationships | None) -> list[str]:
    if relationships is None or relationships.roles is None:
        return []
    refs = []
    for i, ref in enumerate(relationships.roles.data):
        if ref.type != "roles":
            raise InvalidInput.for_field(
                f"data.relationships.roles.data[{i}].type", "must be 'roles'"
            )
        refs.append(ref.id)
    return refs


@post("/api/v2/users", summary="Create a user", status_code=201, responses=ERRORS)
async def create_user(
    data: JSONBody[UserCreateRequest], services: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    attributes = data.data.attributes
    profile: dict[str, Any] = {}
    if attributes.name is not None:
        profile.update(user_service.profile_from_full_name(attributes.name))
    if attributes.title is not None:
        profile["title"] = attributes.title
    # Datadog creates the user here and invites them with POST /api/v2/user_invitations.
    invited = await services.db.transaction(
        people.invite_member,
        actor=actor,
        org_ref=actor.principal.org_public_id,
        email=attributes.email,
        profile=profile,
        roles=_role_refs(data.data.relationships),
        invitation="never",
    )
    return user_document(invited.member, invited.org)


@get("/api/v2/users/{user_id:str}", summary="Get user details", responses=ERRORS)
async def get_user(user_id: UserId, services: ServicesDep, principal: PrincipalDep) -> Any:
    async with services.db.read() as conn:
        org = await own_org(conn, principal, "users:read")
        member = await user_service.get_member(conn, principal, org.public_id, user_id)
    return user_document(member, org)


@patch("/api/v2/users/{user_id:str}", summary="Update a user", responses=ERRORS)
async def update_user(
    user_id: UserId, data: JSONBody[UserUpdateRequest], services: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    if data.data.id != user_id:
        raise Unprocessable("UUID's in the URL and request body do not match")
    attributes = data.data.attributes
    profile: dict[str, Any] = {}
    if not isinstance(attributes.name, UnsetType):
        profile.update(user_service.profile_from_full_name(attributes.name))
    if not isinstance(attributes.title, UnsetType):
        profile["title"] = attributes.title or ""
    member = await services.db.transaction(
        people.change_member,
        actor=actor,
        org_ref=actor.principal.org_public_id,
        user_ref=user_id,
        fields=profile,
        active=None if isinstance(attributes.disabled, UnsetType) else not attributes.disabled,
        email=None if isinstance(attributes.email, UnsetType) else attributes.email,
        email_field="data.attributes.email",
    )
    return {"data": shapes.user(member, await _own_uuid(services, actor.principal))}


@delete(
    "/api/v2/users/{user_id:str}",
    summary="Disable a user",
    status_code=204,
    responses=ERRORS,
    description="Disables the user (everywhere: a user is one identity); the membership stays.",
)
async def disable_user(user_id: UserId, services: ServicesDep, actor: ActorDep) -> None:
    await services.db.transaction(
        user_service.set_status, actor, actor.principal.org_public_id, user_id, enable=False
    )


@get(
    "/api/v2/users/{user_id:str}/permissions",
    summary="Get a user permissions",
    responses=ERRORS,
)
async def list_user_permissions(
    user_id: UserId, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    async with services.db.read() as conn:
        org = await own_org(conn, principal, "users:read")
        member = await user_service.get_member(conn, principal, org.public_id, user_id)
        resolved = await ms.resolve_roles(conn, org, member.roles)
    held = expand(c for capabilities in resolved.values() for c in capabilities)
    return {"data": permissions.resources(held)}


# --- invitations ---------------------------------------------------------------------------------


@post(
    "/api/v2/user_invitations",
    summary="Send invitation emails",
    status_code=201,
    responses=ERRORS,
    description="orgplane sends no email: each invitation's one-time `token` is in this "
    "response only, to hand to the person (who accepts it at POST /invitations/accept).",
)
async def send_invitations(
    data: JSONBody[InvitationsRequest], services: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    refs = []
    for i, item in enumerate(data.data):
        ref = item.relationships.user.data
        if ref.type != "users":
            raise InvalidInput.for_field(
                f"data[{i}].relationships.user.data.type", "must be 'users'"
            )
        refs.append((ref.id, f"data[{i}].relationships.user.data.id"))
    issued = await services.db.transaction(
        people.issue_invitations,
        actor=actor,
        org_ref=actor.principal.org_public_id,
        user_refs=refs,
    )
    return {"data": [shapes.invitation(i.row, i.token) for i in issued]}


@get(
    "/api/v2/user_invitations/{invitation_id:str}",
    summary="Get a user invitation",
    responses=ERRORS,
)
async def get_invitation(
    invitation_id: InvitationId, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    async with services.db.read() as conn:
        row, _ = await invitation_service.get_invitation(
            conn, principal, principal.org_public_id, invitation_id
        )
    return {"data": shapes.invitation(row)}


HANDLERS = [
    list_managed_orgs,
    list_users,
    create_user,
    get_user,
    update_user,
    disable_user,
    list_user_permissions,
    send_invitations,
    get_invitation,
]
