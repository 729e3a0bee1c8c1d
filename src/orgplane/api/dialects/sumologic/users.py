"""Sumo Logic's users API (``/v1/users``): the members of the access key's organization.

Scopes: reads need ``users:read``, changes ``users:write`` (and, for a user-bound key, the
``viewUsersAndRoles`` / ``manageUsersAndRoles`` capabilities); the core decides.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import delete, get, post, put
from litestar.params import FromQuery, JSONBody, PathParameter, QueryParameter
from msgspec import UNSET, Meta, Struct, UnsetType

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.dialects.sumologic.errors import ERRORS
from orgplane.core.access.principal import Caller
from orgplane.core.people import invitations as invitation_service
from orgplane.core.people import service as people
from orgplane.core.people import users as user_service

UserId = Annotated[str, PathParameter(description="The user's id", max_length=64)]
Limit = Annotated[int, QueryParameter(ge=1, le=1000, description="Page size (1-1000)")]
Token = Annotated[str | None, QueryParameter(max_length=512, description="`next` of a page")]
Name = Annotated[str, Meta(max_length=128)]
RoleIds = Annotated[list[Annotated[str, Meta(min_length=1, max_length=64)]], Meta(max_length=20)]
SORTS = {"firstName": "first_name", "lastName": "last_name", "email": "email"}


class UserModel(Struct):
    id: str
    firstName: str
    lastName: str
    email: str
    roleIds: list[str]
    createdAt: datetime
    createdBy: str
    modifiedAt: datetime
    modifiedBy: str
    isActive: bool
    isLocked: bool
    isMfaEnabled: bool
    lastLoginTimestamp: datetime | None


class ListUserModelsResponse(Struct):
    data: list[UserModel]
    next: str | None


class CreateUserDefinition(Struct):
    firstName: Annotated[str, Meta(min_length=1, max_length=128)]
    lastName: Name
    email: Annotated[str, Meta(min_length=3, max_length=255)]
    roleIds: RoleIds


class UpdateUserDefinition(Struct):
    firstName: Annotated[str, Meta(min_length=1, max_length=128)]
    lastName: Name
    isActive: bool | UnsetType = UNSET
    roleIds: RoleIds | UnsetType = UNSET


class UpdateEmail(Struct):
    email: Annotated[str, Meta(min_length=3, max_length=255)]


class DisableMfa(Struct):
    email: Annotated[str, Meta(min_length=3, max_length=255)]
    password: Annotated[str, Meta(max_length=1024)]


def user_model(member: user_service.Member) -> UserModel:
    row = member.row
    return UserModel(
        id=row.public_id,
        firstName=row.first_name,
        lastName=row.last_name,
        email=row.email,
        roleIds=member.roles,
        createdAt=row.created_at,
        createdBy=row.created_by or "",
        modifiedAt=row.modified_at,
        modifiedBy=row.modified_by or "",
        isActive=row.status != "disabled",
        isLocked=row.locked_at is not None,
        isMfaEnabled=row.mfa_enabled,
        lastLoginTimestamp=row.last_login_at,
    )


def _own_org(actor: Caller) -> str:
    return actor.principal.org_public_id


@get("/v1/users", summary="List users", responses=ERRORS)
async def list_users(
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = 100,
    token: Token = None,
    sortBy: Annotated[
        Literal["firstName", "lastName", "email"], QueryParameter(description="Sort key")
    ] = "email",
    email: Annotated[
        str | None, QueryParameter(max_length=255, description="Users whose email starts so")
    ] = None,
    includeServiceAccounts: FromQuery[bool] = True,
) -> ListUserModelsResponse:
    async with services.db.read() as conn:
        page, next_token = await user_service.list_members(
            conn,
            principal,
            principal.org_public_id,
            limit=limit,
            cursor=token,
            sort=SORTS[sortBy],
            email=email,
        )
    return ListUserModelsResponse([user_model(m) for m in page], next_token)


@post("/v1/users", summary="Create a new user", status_code=200, responses=ERRORS)
async def create_user(
    data: JSONBody[CreateUserDefinition], services: ServicesDep, actor: ActorDep
) -> UserModel:
    # Sumo Logic mails a welcome link; orgplane issues the invitation (no mail is sent).
    invited = await services.db.transaction(
        people.invite_member,
        actor=actor,
        org_ref=_own_org(actor),
        email=data.email,
        profile={"first_name": data.firstName, "last_name": data.lastName},
        roles=data.roleIds,
    )
    return user_model(invited.member)


@get("/v1/users/{id:str}", summary="Get a user", responses=ERRORS)
async def get_user(id: UserId, services: ServicesDep, principal: PrincipalDep) -> UserModel:
    async with services.db.read() as conn:
        member = await user_service.get_member(conn, principal, principal.org_public_id, id)
    return user_model(member)


@put("/v1/users/{id:str}", summary="Update a user", responses=ERRORS)
async def update_user(
    id: UserId,
    data: JSONBody[UpdateUserDefinition],
    services: ServicesDep,
    actor: ActorDep,
) -> UserModel:
    fields: dict[str, Any] = {"first_name": data.firstName, "last_name": data.lastName}
    if not isinstance(data.roleIds, UnsetType):
        fields["roles"] = data.roleIds
    member = await services.db.transaction(
        people.change_member,
        actor=actor,
        org_ref=_own_org(actor),
        user_ref=id,
        fields=fields,
        active=None if isinstance(data.isActive, UnsetType) else data.isActive,
    )
    return user_model(member)


@delete("/v1/users/{id:str}", summary="Delete a user", status_code=204, responses=ERRORS)
async def delete_user(
    id: UserId,
    services: ServicesDep,
    actor: ActorDep,
    transferTo: Annotated[
        str | None, QueryParameter(max_length=64, description="The user who takes over")
    ] = None,
    deleteContent: FromQuery[bool] = False,
) -> None:
    await services.db.transaction(
        user_service.remove_member, actor, _own_org(actor), id, transfer_to=transferTo
    )


@post(
    "/v1/users/{id:str}/email/requestChange",
    summary="Change email address",
    status_code=204,
    responses=ERRORS,
    description="Issues orgplane's email-change token (confirmed at POST /auth/email/confirm); "
    "orgplane sends no mail.",
)
async def request_email_change(
    id: UserId,
    data: JSONBody[UpdateEmail],
    services: ServicesDep,
    actor: ActorDep,
) -> None:
    await services.db.transaction(
        user_service.start_email_change, actor, _own_org(actor), id, data.email
    )


@post(
    "/v1/users/{id:str}/password/reset",
    summary="Reset password",
    status_code=204,
    responses=ERRORS,
    description="Issues a password-reset token (audited); orgplane sends no mail.",
)
async def reset_password(id: UserId, services: ServicesDep, actor: ActorDep) -> None:
    await services.db.transaction(user_service.start_password_reset, actor, _own_org(actor), id)


@post("/v1/users/{id:str}/unlock", summary="Unlock a user", status_code=204, responses=ERRORS)
async def unlock_user(id: UserId, services: ServicesDep, actor: ActorDep) -> None:
    await services.db.transaction(user_service.unlock, actor, _own_org(actor), id)


@put(
    "/v1/users/{id:str}/mfa/disable",
    summary="Disable MFA for user",
    status_code=204,
    responses=ERRORS,
    description="An administrator's reset of the user's second factor (TOTP): its seed and "
    "recovery codes go, and `user.mfa_disabled` is recorded in the audit log; where an "
    "organization requires a second factor, the user enrols again at their next sign-in. "
    "`email` must be the user's; `password` is not checked.",
)
async def disable_mfa(
    id: UserId,
    data: JSONBody[DisableMfa],
    services: ServicesDep,
    actor: ActorDep,
) -> None:
    await services.db.transaction(user_service.disable_mfa, actor, _own_org(actor), id, data.email)


@post(
    "/v1/users/{id:str}/resendWelcomeEmail",
    summary="Resend verification email",
    status_code=204,
    responses=ERRORS,
    description="Renews the user's open invitation (new token, new 7 days); 409 when the user "
    "already signed up. orgplane sends no mail: the token is given out by the native API.",
)
async def resend_welcome_email(id: UserId, services: ServicesDep, actor: ActorDep) -> None:
    await services.db.transaction(invitation_service.resend_for_member, actor, _own_org(actor), id)


HANDLERS = [
    list_users,
    create_user,
    get_user,
    update_user,
    delete_user,
    request_email_change,
    reset_password,
    unlock_user,
    disable_mfa,
    resend_welcome_email,
]
