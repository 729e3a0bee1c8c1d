"""Users in organizations: roles, user-organization-roles, invitations, and the token itself.

Make's organization roles are orgplane's system roles, with Make's integer ids; an org's own
(custom) roles have no Make id and show as ``usersRoleId: null``.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import get, post
from litestar.params import JSONBody, PathParameter
from msgspec import Meta, Struct

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.dialects.make import enums
from orgplane.api.dialects.make.errors import ERRORS
from orgplane.api.dialects.make.managed import OrgKey
from orgplane.api.dialects.make.scopes import granted
from orgplane.core.access.service import reach, require_scope
from orgplane.core.errors import InvalidInput
from orgplane.core.people import invitations as invitation_service
from orgplane.core.people import service as people
from orgplane.core.people import users as user_service
from orgplane.core.people.capabilities import SYSTEM_ROLES, expand

# Make's id of each system role (11 is the owner's, as in Make's own responses).
ROLE_IDS = {"owner": 11, "administrator": 12, "standard": 13, "read-only": 14}
_ROLE_KEYS = {i: key for key, i in ROLE_IDS.items()}
MAX_MEMBERS = 1000

UserKey = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]
RoleId = Annotated[
    int,
    Meta(
        ge=1,
        le=2**31,
        description="11 owner, 12 administrator, 13 standard, 14 read-only",
        examples=[ROLE_IDS["standard"]],
    ),
]


class RoleChange(Struct):
    usersRoleId: RoleId


class Invitation(Struct):
    email: str
    name: str
    usersRoleId: RoleId = ROLE_IDS["standard"]
    note: str | None = None
    teamsId: list[int] | None = None


def role_key(value: int, field: str = "usersRoleId") -> str:
    if value not in _ROLE_KEYS:
        known = ", ".join(f"{i} ({k})" for k, i in ROLE_IDS.items())
        raise InvalidInput.for_field(field, f"unknown role id {value}; known: {known}")
    return _ROLE_KEYS[value]


def role_id(refs: list[str]) -> int | None:
    """The Make id of a member's first system role (roles come system roles first)."""
    return next((ROLE_IDS[r] for r in refs if r in ROLE_IDS), None)


def user_organization_role(
    member: user_service.Member, org_key: int, invitation: str | None
) -> dict[str, Any]:
    return {
        "userId": member.row.id,
        "organizationId": org_key,
        "usersRoleId": role_id(member.roles),
        "invitation": invitation,
    }


def _invitation(member: user_service.Member) -> str | None:
    """Make's invitation field: null for a user who has joined, else the invitation's state."""
    return "pending" if member.row.status == "pending" else None


@get("/users/roles", summary="List organization roles", responses=ERRORS)
async def list_roles(principal: PrincipalDep) -> dict[str, Any]:
    require_scope(principal, "users:read")
    return {
        "usersRoles": [
            {
                "id": ROLE_IDS[key],
                "name": name,
                "identifier": key,
                "category": "organization",
                "subsidiary": False,
                "managementType": "system_locked",
                "permissions": sorted(expand(capabilities)),
            }
            for key, (name, capabilities) in SYSTEM_ROLES.items()
        ]
    }


@get(
    "/users/me/current-authorization",
    summary="The token's authorization and Make scopes",
    responses=ERRORS,
)
async def current_authorization(principal: PrincipalDep) -> dict[str, Any]:
    return {"authorization": {"authUsed": "token", "scope": granted(principal)}}


@get(
    "/organizations/{organizationId:int}/user-organization-roles",
    summary="List the users' roles in an organization",
    responses=ERRORS,
)
async def list_user_roles(
    organizationId: OrgKey, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    async with services.db.read() as conn:
        org = await reach(conn, principal, organizationId, scope="users:read")
        members, _ = await user_service.list_members(
            conn, principal, org.public_id, limit=MAX_MEMBERS, cursor=None
        )
    return {
        "userOrganizationRoles": [
            user_organization_role(m, organizationId, _invitation(m)) for m in members
        ]
    }


@get(
    "/organizations/{organizationId:int}/user-organization-roles/{userId:int}",
    summary="A user's role in an organization",
    responses=ERRORS,
)
async def get_user_role(
    organizationId: OrgKey, userId: UserKey, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    async with services.db.read() as conn:
        org = await reach(conn, principal, organizationId, scope="users:read")
        user_ref = await user_service.member_public_id_by_key(conn, org, userId)
        member = await user_service.get_member(conn, principal, org.public_id, user_ref)
    return {
        "userOrganizationRole": user_organization_role(member, organizationId, _invitation(member))
    }


@post(
    "/users/{userId:int}/user-organization-roles/{organizationId:int}",
    summary="Set a user's role in an organization",
    responses=ERRORS,
    status_code=200,
)
async def set_user_role(
    userId: UserKey,
    organizationId: OrgKey,
    data: JSONBody[RoleChange],
    services: ServicesDep,
    actor: ActorDep,
) -> dict[str, Any]:
    role = role_key(data.usersRoleId)
    member = await services.db.transaction(
        people.change_member,
        actor=actor,
        org_ref=organizationId,
        user_ref=userId,
        fields={"roles": [role]},
    )
    return {
        "userOrganizationRole": user_organization_role(member, organizationId, _invitation(member))
    }


@post(
    "/organizations/{organizationId:int}/invite",
    summary="Invite a user to an organization",
    responses=ERRORS,
    status_code=200,
)
async def invite_user(
    organizationId: OrgKey, data: JSONBody[Invitation], services: ServicesDep, actor: ActorDep
) -> dict[str, Any]:
    if data.teamsId:
        raise InvalidInput.for_field("teamsId", "orgplane has no teams; leave it out")
    member, issued = await services.db.transaction(
        people.invite,
        actor=actor,
        org_ref=organizationId,
        email=data.email,
        roles=[role_key(data.usersRoleId)],
        profile=user_service.profile_from_full_name(data.name),
    )
    row = member.row
    return {
        "user": {
            "id": row.id,
            "name": f"{row.first_name} {row.last_name}".strip(),
            "email": row.email,
            "language": "en",
            "timezoneId": enums.timezone_id("UTC"),
            "countryId": None,
            "features": {},
            "avatar": None,
            "lastLogin": None,
        },
        "userOrganizationRole": user_organization_role(
            member, organizationId, invitation_service.state(issued.row)
        ),
    }


HANDLERS = [
    list_roles,
    current_authorization,
    list_user_roles,
    get_user_role,
    set_user_role,
    invite_user,
]
