"""Native user and invitation endpoints: members of an org, their roles, invitations."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Request, Router, delete, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter
from msgspec import UNSET, Meta, Struct, UnsetType

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep, limit_sign_in, request_meta
from orgplane.api.native.openapi import PublicOperation, problems
from orgplane.api.native.orgs import Cursor, Limit, OrgId
from orgplane.api.native.schemas import set_fields
from orgplane.core.pagination import DEFAULT_LIMIT
from orgplane.core.people import auth
from orgplane.core.people import invitations as invitation_service
from orgplane.core.people import service as people
from orgplane.core.people import users as user_service

UserId = Annotated[str, PathParameter(description="The user's id (usr_...)", max_length=64)]
InvitationId = Annotated[str, PathParameter(description="The invitation's id", max_length=64)]
Email = Annotated[str, Meta(min_length=3, max_length=254)]
Profile = Annotated[str, Meta(max_length=100)]
RoleRefs = Annotated[
    list[Annotated[str, Meta(min_length=1, max_length=32)]],
    Meta(
        max_length=20,
        description="System role keys (owner, administrator, standard, "
        "read-only) or ids of this organization's roles",
    ),
]


class User(Struct):
    id: str
    org_id: str
    email: str
    first_name: str
    last_name: str
    title: str
    status: str
    locked: bool
    mfa_enabled: bool
    roles: list[str]
    last_login_at: datetime | None
    member_since: datetime
    created_at: datetime
    modified_at: datetime
    created_by: str | None
    modified_by: str | None


class Invitation(Struct):
    id: str
    org_id: str
    user_id: str
    email: str
    roles: list[str]
    status: str
    invited_by: str
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None


class InvitationCreated(Invitation):
    """Returned on creation and resend only: ``token`` is never shown again."""

    token: str = ""


class UserCreated(User):
    """For a new identity, ``invitation`` carries the token that activates it (shown once)."""

    invitation: InvitationCreated | None = None


class UserCreate(Struct, forbid_unknown_fields=True):
    email: Email
    first_name: Profile = ""
    last_name: Profile = ""
    title: Profile = ""
    roles: RoleRefs = []


class UserUpdate(Struct, forbid_unknown_fields=True):
    first_name: Profile | UnsetType = UNSET
    last_name: Profile | UnsetType = UNSET
    title: Profile | UnsetType = UNSET
    roles: RoleRefs | UnsetType = UNSET


class UserPage(Struct):
    data: list[User]
    next_cursor: str | None


class InvitationCreate(Struct, forbid_unknown_fields=True):
    email: Email
    roles: RoleRefs = []
    first_name: Profile = ""
    last_name: Profile = ""
    title: Profile = ""


class InvitationPage(Struct):
    data: list[Invitation]
    next_cursor: str | None


class InvitationAccept(Struct, forbid_unknown_fields=True):
    password: Annotated[str, Meta(max_length=1024)] | None = None


class InvitationAccepted(Struct):
    user_id: str
    email: str
    org_id: str
    roles: list[str]
    status: str = "active"


def user_out(member: user_service.Member) -> User:
    row = member.row
    return User(
        id=row.public_id,
        org_id=member.org_public_id,
        email=row.email,
        first_name=row.first_name,
        last_name=row.last_name,
        title=row.title,
        status=row.status,
        locked=row.locked_at is not None,
        mfa_enabled=row.mfa_enabled,
        roles=member.roles,
        last_login_at=row.last_login_at,
        member_since=row.member_since,
        created_at=row.created_at,
        modified_at=row.modified_at,
        created_by=row.created_by,
        modified_by=row.modified_by,
    )


def invitation_out(row: Any, org_public_id: str) -> Invitation:
    return Invitation(
        id=row.public_id,
        org_id=org_public_id,
        user_id=row.user_public_id,
        email=row.email,
        roles=list(row.roles),
        status=invitation_service.state(row),
        invited_by=row.invited_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        accepted_at=row.accepted_at,
        revoked_at=row.revoked_at,
    )


def issued_out(issued: invitation_service.Issued) -> InvitationCreated:
    out = invitation_out(issued.row, issued.org_public_id)
    return InvitationCreated(
        **{f: getattr(out, f) for f in out.__struct_fields__}, token=issued.token
    )


@get("/{org_id:str}/users", summary="List the members of an organization", responses=problems())
async def list_users(
    org_id: OrgId,
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    sort: Annotated[
        Literal["email", "first_name", "last_name"], QueryParameter(description="Sort key")
    ] = "email",
    email: Annotated[
        str | None, QueryParameter(max_length=254, description="Case-insensitive substring")
    ] = None,
    status: Annotated[
        Literal["pending", "active", "disabled"] | None, QueryParameter(description="Status")
    ] = None,
    role: Annotated[
        str | None, QueryParameter(max_length=32, description="Holders of this role")
    ] = None,
) -> UserPage:
    async with services.db.read() as conn:
        page, next_cursor = await user_service.list_members(
            conn,
            principal,
            org_id,
            limit=limit,
            cursor=cursor,
            sort=sort,
            email=email,
            status=status,
            role=role,
        )
    return UserPage([user_out(m) for m in page], next_cursor)


@post(
    "/{org_id:str}/users",
    summary="Add a user to an organization",
    status_code=201,
    responses=problems(409),
    description="An email not seen before creates a `pending` user and an invitation whose "
    "token (in `invitation.token`, shown once) activates it; a known email adds that user.",
)
async def create_user(
    org_id: OrgId, data: JSONBody[UserCreate], services: ServicesDep, actor: ActorDep
) -> UserCreated:
    invited = await services.db.transaction(
        people.invite_member,
        actor=actor,
        org_ref=org_id,
        email=data.email,
        profile={"first_name": data.first_name, "last_name": data.last_name, "title": data.title},
        roles=data.roles,
    )
    member, issued = invited.member, invited.invitation
    out = user_out(member)
    return UserCreated(
        **{f: getattr(out, f) for f in out.__struct_fields__},
        invitation=issued_out(issued) if issued else None,
    )


@get("/{org_id:str}/users/{user_id:str}", summary="Get a member", responses=problems())
async def get_user(
    org_id: OrgId, user_id: UserId, services: ServicesDep, principal: PrincipalDep
) -> User:
    async with services.db.read() as conn:
        return user_out(await user_service.get_member(conn, principal, org_id, user_id))


@patch(
    "/{org_id:str}/users/{user_id:str}",
    summary="Change a member's profile or roles",
    responses=problems(409),
    description="`roles` replaces the member's roles in this organization. The profile is the "
    "person's everywhere, so only a credential reaching all their organizations may change it.",
)
async def update_user(
    org_id: OrgId,
    user_id: UserId,
    data: JSONBody[UserUpdate],
    services: ServicesDep,
    actor: ActorDep,
) -> User:
    member = await services.db.transaction(
        user_service.update_member, actor, org_id, user_id, set_fields(data)
    )
    return user_out(member)


@delete(
    "/{org_id:str}/users/{user_id:str}",
    summary="Remove a member from an organization",
    status_code=204,
    responses=problems(409),
    description="API keys of this organization bound to the user pass to `transfer_to` (another "
    "member) or are revoked; open invitations are revoked. The last owner or administrator "
    "cannot be removed.",
)
async def remove_user(
    org_id: OrgId,
    user_id: UserId,
    services: ServicesDep,
    actor: ActorDep,
    transfer_to: Annotated[
        str | None, QueryParameter(max_length=64, description="The member who takes over")
    ] = None,
) -> None:
    await services.db.transaction(
        user_service.remove_member, actor, org_id, user_id, transfer_to=transfer_to
    )


@post(
    "/{org_id:str}/users/{user_id:str}/disable",
    summary="Disable a user",
    status_code=200,
    responses=problems(409),
    description="The user (everywhere) can no longer act: sessions and bound keys stop working.",
)
async def disable_user(
    org_id: OrgId, user_id: UserId, services: ServicesDep, actor: ActorDep
) -> User:
    member = await services.db.transaction(
        user_service.set_status, actor, org_id, user_id, enable=False
    )
    return user_out(member)


@post(
    "/{org_id:str}/users/{user_id:str}/enable",
    summary="Enable a disabled user",
    status_code=200,
    responses=problems(409),
)
async def enable_user(
    org_id: OrgId, user_id: UserId, services: ServicesDep, actor: ActorDep
) -> User:
    member = await services.db.transaction(
        user_service.set_status, actor, org_id, user_id, enable=True
    )
    return user_out(member)


class IssuedToken(Struct):
    """A single-use token, shown once: hand it to the person (orgplane sends no mail)."""

    token: str


class EmailChange(Struct, forbid_unknown_fields=True):
    new_email: Annotated[str, Meta(min_length=3, max_length=254)]


@post(
    "/{org_id:str}/users/{user_id:str}/unlock",
    summary="Unlock a user locked out by failed sign-ins",
    status_code=200,
    responses=problems(),
)
async def unlock_user(
    org_id: OrgId, user_id: UserId, services: ServicesDep, actor: ActorDep
) -> User:
    return user_out(await services.db.transaction(user_service.unlock, actor, org_id, user_id))


@post(
    "/{org_id:str}/users/{user_id:str}/password/reset",
    summary="Issue a password-reset token",
    status_code=201,
    responses=problems(),
    description="Returns a single-use token, valid one hour, for POST /auth/password/reset. "
    "No password is ever returned.",
)
async def reset_password(
    org_id: OrgId, user_id: UserId, services: ServicesDep, actor: ActorDep
) -> IssuedToken:
    token = await services.db.transaction(user_service.start_password_reset, actor, org_id, user_id)
    return IssuedToken(token)


@post(
    "/{org_id:str}/users/{user_id:str}/email/request_change",
    summary="Request a change of the user's email",
    status_code=201,
    responses=problems(409),
    description="Returns a single-use token, valid 24 hours, for POST /auth/email/confirm.",
)
async def request_email_change(
    org_id: OrgId,
    user_id: UserId,
    data: JSONBody[EmailChange],
    services: ServicesDep,
    actor: ActorDep,
) -> IssuedToken:
    token = await services.db.transaction(
        user_service.start_email_change, actor, org_id, user_id, data.new_email
    )
    return IssuedToken(token)


@post(
    "/{org_id:str}/invitations",
    summary="Invite a person to an organization",
    status_code=201,
    responses=problems(409),
    description="Adds the membership with its roles now (a new person as a `pending` user) and "
    "returns a token, valid 7 days and shown only here, for `POST /invitations/{token}/accept`.",
)
async def create_invitation(
    org_id: OrgId, data: JSONBody[InvitationCreate], services: ServicesDep, actor: ActorDep
) -> InvitationCreated:
    _, issued = await services.db.transaction(
        people.invite,
        actor=actor,
        org_ref=org_id,
        email=data.email,
        profile={"first_name": data.first_name, "last_name": data.last_name, "title": data.title},
        roles=data.roles,
    )
    return issued_out(issued)


@get("/{org_id:str}/invitations", summary="List invitations", responses=problems())
async def list_invitations(
    org_id: OrgId,
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> InvitationPage:
    async with services.db.read() as conn:
        rows, org_public_id, next_cursor = await invitation_service.list_invitations(
            conn, principal, org_id, limit=limit, cursor=cursor
        )
    return InvitationPage([invitation_out(r, org_public_id) for r in rows], next_cursor)


@get(
    "/{org_id:str}/invitations/{invitation_id:str}",
    summary="Get an invitation",
    responses=problems(),
)
async def get_invitation(
    org_id: OrgId, invitation_id: InvitationId, services: ServicesDep, principal: PrincipalDep
) -> Invitation:
    async with services.db.read() as conn:
        row, org_public_id = await invitation_service.get_invitation(
            conn, principal, org_id, invitation_id
        )
    return invitation_out(row, org_public_id)


@post(
    "/{org_id:str}/invitations/{invitation_id:str}/resend",
    summary="Resend an invitation (new token, old one void)",
    status_code=200,
    responses=problems(409),
)
async def resend_invitation(
    org_id: OrgId, invitation_id: InvitationId, services: ServicesDep, actor: ActorDep
) -> InvitationCreated:
    issued = await services.db.transaction(invitation_service.resend, actor, org_id, invitation_id)
    return issued_out(issued)


@delete(
    "/{org_id:str}/invitations/{invitation_id:str}",
    summary="Revoke an invitation",
    status_code=204,
    responses=problems(409),
)
async def revoke_invitation(
    org_id: OrgId, invitation_id: InvitationId, services: ServicesDep, actor: ActorDep
) -> None:
    await services.db.transaction(invitation_service.revoke, actor, org_id, invitation_id)


@post(
    "/invitations/{token:str}/accept",
    summary="Accept an invitation and set the password",
    status_code=200,
    tags=["users"],
    operation_class=PublicOperation,
    responses=problems(409, 410),
    description="No credentials: the token is the credential. Unknown token → 404; revoked or "
    "expired → 410; already accepted → 409.",
)
async def accept_invitation(
    token: Annotated[str, PathParameter(max_length=200)],
    data: JSONBody[InvitationAccept],
    request: Request[Any, Any, Any],
    services: ServicesDep,
) -> InvitationAccepted:
    await limit_sign_in(request, services)
    # argon2 is slow by design: hash off the event loop and before the transaction.
    password_hash = (
        await asyncio.to_thread(auth.hash_password, data.password) if data.password else None
    )
    accepted = await services.db.transaction(
        invitation_service.accept, request_meta(request), token, password_hash
    )
    return InvitationAccepted(
        user_id=accepted.user_public_id,
        email=accepted.email,
        org_id=accepted.org_public_id,
        roles=accepted.roles,
    )


router = Router(
    path="/orgs",
    route_handlers=[
        list_users,
        create_user,
        get_user,
        update_user,
        remove_user,
        disable_user,
        enable_user,
        unlock_user,
        reset_password,
        request_email_change,
        create_invitation,
        list_invitations,
        get_invitation,
        resend_invitation,
        revoke_invitation,
    ],
    tags=["users"],
)
