"""SCIM Users: the members of the key's organization.

Filters and sorts run in SQL (``core.people.repository.user_filter_clause``) where they
translate, so a list reads one page; every change is one core command."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, patch, post, put
from scim2_models import (
    Context,
    Email,
    GroupMembership,
    InvalidFilterException,
    InvalidValueException,
    Meta,
    MutabilityException,
    Name,
    PatchOp,
    SCIMException,
    ScimFilter,
    User,
)

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.scim.common import (
    Attributes,
    ExcludedAttributes,
    ListingDep,
    UserRef,
    _body,
    _dump,
    _list_response,
    _listed,
    _location,
    _page_size,
    _params,
    _respond,
    _validate,
)
from orgplane.api.scim.openapi import ETAG, LOCATION, SendsPatchOp, SendsResource, scim, search
from orgplane.api.scim.shapes import ScimUser, ScimUserList
from orgplane.core.access.principal import Principal
from orgplane.core.access.service import reach
from orgplane.core.people import directory, repository
from orgplane.core.people import roles as role_service
from orgplane.core.people import service as people
from orgplane.core.people import users as user_service
from orgplane.db.engine import Reader


def user_out(
    request: Request[Any, Any, Any], member: user_service.Member, role_names: dict[str, str]
) -> User[Any]:
    row = member.row
    return User(
        id=row.public_id,
        user_name=row.email,
        name=Name(given_name=row.first_name or None, family_name=row.last_name or None),
        title=row.title or None,
        active=row.status != "disabled",
        emails=[Email(value=row.email, primary=True, type=Email.Type.work)],
        groups=[
            GroupMembership(
                value=r,
                display=role_names.get(r, r),
                type="direct",
                ref=_location(request, "Groups", r),  # type: ignore[arg-type]
            )
            for r in member.roles
        ]
        or None,
        meta=Meta(
            resource_type="User",
            created=row.created_at,
            last_modified=row.modified_at,
            location=_location(request, "Users", row.public_id),
            version=f'W/"{row.version}"',
        ),
    )


async def _role_names(conn: Reader, principal: Principal) -> dict[str, str]:
    views = await role_service.list_roles(conn, principal, principal.org_public_id)
    return {v.id: v.name for v in views}


async def _all_members(
    conn: Reader, principal: Principal, role: str | None = None
) -> list[user_service.Member]:
    out: list[user_service.Member] = []
    cursor = None
    while True:
        page, cursor = await user_service.list_members(
            conn, principal, principal.org_public_id, limit=500, cursor=cursor, role=role
        )
        out.extend(page)
        if cursor is None:
            return out


def _profile(user: User[Any]) -> dict[str, Any]:
    name = user.name or Name()
    return {
        "first_name": name.given_name or "",
        "last_name": name.family_name or "",
        "title": user.title or "",
    }


def _email_of(user: User[Any]) -> str:
    if user.user_name:
        return user.user_name
    for email in user.emails or []:
        if email.primary and email.value:
            return email.value
    raise InvalidValueException(detail="userName is required")


async def _list_users(
    request: Request[Any, Any, Any], services: ServicesDep, principal: PrincipalDep, q: ListingDep
) -> Response[ScimUserList]:
    """The members of the key's organization, filtered, sorted and paged as the list parameters
    of a GET's query or of a search's body say."""
    params = _params(User, q.attributes, q.excludedAttributes)
    where = _where(q.filter)
    sort_by = (q.sortBy or "").lower() or None
    if sort_by == "displayname":  # users have none: the order is the default one
        sort_by = None
    if where is None or (sort_by is not None and sort_by not in repository.MEMBER_SORTS):
        # A filter or sort the database cannot run: every member, filtered here.
        async with services.db.read() as conn:
            members = await _all_members(conn, principal)
            names = await _role_names(conn, principal)
        resources = [user_out(request, m, names) for m in members]
        return _listed(User, resources, q, params)
    start = max(1, q.startIndex or 1)
    async with services.db.read() as conn:
        page, total = await directory.search(
            conn,
            principal,
            principal.org_public_id,
            where=None if where is True else where,
            sort=sort_by,
            descending=(q.sortOrder or "").lower() == "descending",
            offset=start - 1,
            limit=_page_size(q),
        )
        names = await _role_names(conn, principal)
    resources = [user_out(request, m, names) for m in page]
    return _respond(_list_response(resources, total, start, params))


list_users = get("/Users", **scim("List users"))(_list_users)
search_users = post("/Users/.search", **search("Search users"))(_list_users)


def _where(text: str | None) -> Any:
    """The filter as SQL (True: no filter), or None when it does not translate."""
    if not text:
        return True
    try:
        flt = ScimFilter[User](text)  # type: ignore[valid-type]
    except (InvalidFilterException, ValueError, SCIMException) as exc:
        raise InvalidFilterException(detail=f"invalid filter: {exc}") from None
    return repository.user_filter_clause(flt.ast)


@get("/Users/{user_id:str}", **scim("Get a user", headers=[ETAG]))
async def get_user(
    request: Request[Any, Any, Any],
    user_id: UserRef,
    services: ServicesDep,
    principal: PrincipalDep,
    attributes: Attributes = None,
    excludedAttributes: ExcludedAttributes = None,
) -> Response[ScimUser]:
    params = _params(User, attributes, excludedAttributes)
    async with services.db.read() as conn:
        member = await user_service.get_member(conn, principal, principal.org_public_id, user_id)
        names = await _role_names(conn, principal)
    user = user_out(request, member, names)
    headers = {"ETag": user.meta.version or ""} if user.meta else None
    return _respond(_dump(user, params=params), headers=headers)


async def _reply_user(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    principal: Principal,
    user_id: UserRef,
    status: int = 200,
) -> Response[ScimUser]:
    async with services.db.read() as conn:
        member = await user_service.get_member(conn, principal, principal.org_public_id, user_id)
        names = await _role_names(conn, principal)
    user = user_out(request, member, names)
    headers = {"ETag": user.meta.version or ""} if user.meta else {}
    if status == 201 and user.meta and user.meta.location:
        headers["Location"] = user.meta.location
    return _respond(_dump(user), status, headers)


@post("/Users", **scim("Create (invite) a user", 409, body=SendsResource, headers=[ETAG, LOCATION]))
async def create_user(
    request: Request[Any, Any, Any], services: ServicesDep, actor: ActorDep
) -> Response[ScimUser]:
    user = _validate(User, await _body(request), Context.RESOURCE_CREATION_REQUEST)
    invited = await services.db.transaction(
        people.invite_member,
        actor=actor,
        org_ref=actor.principal.org_public_id,
        email=_email_of(user),
        profile=_profile(user),
        roles=[],
        active=user.active is not False,
    )
    user_id = invited.member.row.public_id
    return await _reply_user(request, services, actor.principal, user_id, 201)


async def _apply(
    services: ServicesDep, actor: ActorDep, user_id: UserRef, before: User[Any], after: User[Any]
) -> None:
    """Write what changed between two SCIM representations of a member: one core call."""
    new_email = after.user_name
    if new_email and new_email.lower() != (before.user_name or "").lower():
        raise MutabilityException(
            detail="userName (the email) cannot be changed through SCIM; "
            "use POST /orgs/{org_id}/users/{user_id}/email/request_change"
        )
    await services.db.transaction(
        people.change_member,
        actor=actor,
        org_ref=actor.principal.org_public_id,
        user_ref=user_id,
        fields={k: v for k, v in _profile(after).items() if _profile(before)[k] != v},
        active=after.active,
    )


async def _current(
    request: Request[Any, Any, Any], services: ServicesDep, principal: Principal, user_id: str
) -> User[Any]:
    async with services.db.read() as conn:
        member = await user_service.get_member(conn, principal, principal.org_public_id, user_id)
        names = await _role_names(conn, principal)
    return user_out(request, member, names)


@put("/Users/{user_id:str}", **scim("Replace a user", 409, body=SendsResource, headers=[ETAG]))
async def replace_user(
    request: Request[Any, Any, Any], user_id: UserRef, services: ServicesDep, actor: ActorDep
) -> Response[ScimUser]:
    principal = actor.principal
    async with services.db.read() as conn:
        await reach(conn, principal, principal.org_public_id, scope="users:write")
    data = await _body(request)
    after = _validate(User, data, Context.RESOURCE_REPLACEMENT_REQUEST)
    before = await _current(request, services, principal, user_id)
    if after.active is None:
        after.active = True
    await _apply(services, actor, user_id, before, after)
    return await _reply_user(request, services, principal, user_id)


@patch("/Users/{user_id:str}", **scim("Change a user", 409, body=SendsPatchOp, headers=[ETAG]))
async def patch_user(
    request: Request[Any, Any, Any], user_id: UserRef, services: ServicesDep, actor: ActorDep
) -> Response[ScimUser]:
    principal = actor.principal
    async with services.db.read() as conn:
        await reach(conn, principal, principal.org_public_id, scope="users:write")
    data = await _body(request)
    before = await _current(request, services, principal, user_id)
    op = _validate(PatchOp[User], data, Context.RESOURCE_PATCH_REQUEST)  # type: ignore[misc]
    after = before.model_copy(deep=True)
    op.patch(after)
    await _apply(services, actor, user_id, before, after)
    return await _reply_user(request, services, principal, user_id)


@delete("/Users/{user_id:str}", status_code=204, **scim("Remove a user", 409))
async def delete_user(user_id: UserRef, services: ServicesDep, actor: ActorDep) -> None:
    await services.db.transaction(
        user_service.remove_member, actor, actor.principal.org_public_id, user_id
    )
