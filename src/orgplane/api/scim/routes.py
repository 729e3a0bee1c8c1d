"""SCIM 2.0 endpoints: discovery, Users (members of the key's org) and Groups (its roles).

Models, filters and PATCH semantics come from ``scim2-models``; every change goes through the
core (``core.people``), which checks reach and scopes and audits in the same transaction.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from litestar import Request, Response, Router, delete, get, patch, post, put, route
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import PathParameter
from pydantic import ValidationError
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    Email,
    ETag,
    Filter,
    Group,
    GroupMember,
    GroupMembership,
    InvalidFilterException,
    InvalidValueException,
    Meta,
    MutabilityException,
    Name,
    NotFoundException,
    Patch,
    PatchOp,
    ResourceType,
    ResponseParameters,
    SCIMException,
    ScimFilter,
    ServiceProviderConfig,
    Sort,
    User,
)
from sqlalchemy.exc import IntegrityError

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.core.access.principal import Principal
from orgplane.core.access.service import reach
from orgplane.core.errors import Conflict, OrgplaneError
from orgplane.core.people import roles as role_service
from orgplane.core.people import service as people
from orgplane.core.people import users as user_service
from orgplane.db.engine import Reader, Tx

UserRef = Annotated[str, PathParameter(description="The user's id (usr_...)", max_length=64)]
GroupRef = Annotated[str, PathParameter(description="The role's id or system key", max_length=64)]
SchemaRef = Annotated[
    str, PathParameter(description="A schema URN or resource name", max_length=200)
]
MEDIA_TYPE = "application/scim+json"
BASE = "/scim/v2"
PAGE_MAX = 200
SCIM_TYPES = {409: "uniqueness"}
SORT_KEYS = {
    "username": lambda u: (u.user_name or "").lower(),
    "emails.value": lambda u: (u.user_name or "").lower(),
    "name.givenname": lambda u: ((u.name and u.name.given_name) or "").lower(),
    "name.familyname": lambda u: ((u.name and u.name.family_name) or "").lower(),
    "displayname": lambda g: (g.display_name or "").lower(),
}


def _respond(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response[bytes]:
    content = json.dumps(body).encode() if body is not None else b""
    return Response(content, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _dump(
    obj: Any, ctx: Context = Context.RESOURCE_QUERY_RESPONSE, params: Any = None
) -> dict[str, Any]:
    data: dict[str, Any] = obj.model_dump(scim_ctx=ctx, response_parameters=params)
    return data


def _params(model: Any, attributes: Any, excluded: Any) -> Any:
    def split(value: Any) -> list[str] | None:
        if not value:
            return None
        if isinstance(value, str):
            value = value.split(",")
        return [v.strip() for v in value if v.strip()]

    data = {"attributes": split(attributes), "excludedAttributes": split(excluded)}
    if not any(data.values()):
        return None
    try:
        return ResponseParameters[model].model_validate(data)
    except (ValidationError, SCIMException) as exc:
        raise InvalidValueException(detail=f"invalid attributes: {exc}") from None


def _error(status: int, detail: str, scim_type: str | None = None) -> Response[bytes]:
    body: dict[str, Any] = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": str(status),
        "detail": detail,
    }
    if scim_type:
        body["scimType"] = scim_type
    return _respond(body, status)


def handle_orgplane_error(_: Request[Any, Any, Any], exc: OrgplaneError) -> Response[bytes]:
    scim_type = SCIM_TYPES.get(exc.status)
    if exc.status == 400:
        scim_type = "invalidValue"
    response = _error(exc.status, exc.detail, scim_type)
    response.headers.update(exc.headers)
    return response


def handle_scim_error(_: Request[Any, Any, Any], exc: SCIMException) -> Response[bytes]:
    return _error(exc.status, exc.detail, exc.scim_type or None)


def handle_validation(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return _error(400, str(exc).splitlines()[0] if str(exc) else "invalid request", "invalidValue")


def handle_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    return _error(exc.status_code, str(exc.detail))


def handle_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return _error(500, "internal server error")


async def _body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = json.loads(raw or b"null")
    except ValueError:
        raise InvalidValueException(detail="the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidValueException(detail="the body must be a JSON object")
    return data


def _validate(model: Any, data: dict[str, Any], ctx: Context) -> Any:
    try:
        return model.model_validate(data, scim_ctx=ctx)
    except ValidationError as exc:
        errors = exc.errors()
        first: dict[str, Any] = dict(errors[0]) if errors else {}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidValueException(detail=f"{loc}: {first.get('msg', 'invalid')}") from None


# --- Users ------------------------------------------------------------------------------------


def _location(request: Request[Any, Any, Any], kind: str, ident: str) -> str:
    return f"{str(request.base_url).rstrip('/')}{BASE}/{kind}/{ident}"


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


def _page(
    resources: list[Any],
    start_index: int | None,
    count: int | None,
    sort_by: str | None,
    sort_order: str | None,
) -> tuple[list[Any], int, int]:
    if sort_by:
        key = SORT_KEYS.get(sort_by.lower())
        if key is None:
            raise InvalidValueException(detail=f"sortBy {sort_by!r} is not supported")
        resources = sorted(resources, key=key, reverse=(sort_order or "").lower() == "descending")
    start = max(1, start_index or 1)
    size = PAGE_MAX if count is None else max(0, min(count, PAGE_MAX))
    return resources[start - 1 : start - 1 + size], start, len(resources)


def _filtered(model: Any, resources: list[Any], text: str | None) -> list[Any]:
    if not text:
        return resources
    try:
        flt = ScimFilter[model](text)  # type: ignore[valid-type]
    except (InvalidFilterException, ValueError, SCIMException) as exc:
        raise InvalidFilterException(detail=f"invalid filter: {exc}") from None
    try:
        return [r for r in resources if flt.match(r)]
    except SCIMException as exc:
        raise InvalidFilterException(detail=f"invalid filter: {exc}") from None


def _listed(model: Any, resources: list[Any], q: Any, params: Any) -> Any:
    """A ListResponse of ``resources`` after the request's filter, sort and 1-based paging."""
    filtered = _filtered(model, resources, q.get("filter"))
    page, start, total = _page(
        filtered,
        _int(q.get("startIndex"), "startIndex"),
        _int(q.get("count"), "count"),
        q.get("sortBy"),
        q.get("sortOrder"),
    )
    return _respond(_list_response(page, total, start, params))


def _list_response(
    resources: list[Any], total: int, start: int, params: Any = None
) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(resources),
        "Resources": [_dump(r, params=params) for r in resources],
    }


def _int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidValueException(detail=f"{name} must be an integer") from None


async def _search_users(
    request: Request[Any, Any, Any], services: ServicesDep, principal: Principal, q: Any
) -> Response[bytes]:
    params = _params(User, q.get("attributes"), q.get("excludedAttributes"))
    async with services.db.read() as conn:
        members = await _all_members(conn, principal)
        names = await _role_names(conn, principal)
    resources = [user_out(request, m, names) for m in members]
    return _listed(User, resources, q, params)


@get("/Users", include_in_schema=False)
async def list_users(
    request: Request[Any, Any, Any], services: ServicesDep, principal: PrincipalDep
) -> Response[bytes]:
    return await _search_users(request, services, principal, request.query_params)


async def _search_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    data = await _body(request)
    out: dict[str, Any] = {}
    for key in ("filter", "startIndex", "count", "sortBy", "sortOrder"):
        if data.get(key) is not None:
            out[key] = str(data[key])
    for key in ("attributes", "excludedAttributes"):
        if data.get(key):
            out[key] = list(data[key]) if isinstance(data[key], list) else str(data[key])
    return out


@post("/Users/.search", status_code=200, include_in_schema=False)
async def search_users(
    request: Request[Any, Any, Any], services: ServicesDep, principal: PrincipalDep
) -> Response[bytes]:
    return await _search_users(request, services, principal, await _search_body(request))


@post("/.search", status_code=200, include_in_schema=False)
async def search_all(
    request: Request[Any, Any, Any], services: ServicesDep, principal: PrincipalDep
) -> Response[bytes]:
    """A search over every resource type (users, then groups)."""
    q = await _search_body(request)
    async with services.db.read() as conn:
        members = await _all_members(conn, principal)
        names = await _role_names(conn, principal)
        views = await role_service.list_roles(conn, principal, principal.org_public_id)
        groups = [await _group(request, conn, principal, v) for v in views]
    resources = _filtered(User, [user_out(request, m, names) for m in members], q.get("filter"))
    resources += _filtered(Group, groups, q.get("filter"))
    page, start, total = _page(
        resources,
        _int(q.get("startIndex"), "startIndex"),
        _int(q.get("count"), "count"),
        q.get("sortBy"),
        q.get("sortOrder"),
    )
    attributes, excluded = q.get("attributes"), q.get("excludedAttributes")
    body = _list_response(page, total, start)
    if attributes or excluded:
        body["Resources"] = [_dump(r, params=_params(type(r), attributes, excluded)) for r in page]
    return _respond(body)


@get("/Users/{user_id:str}", include_in_schema=False)
async def get_user(
    request: Request[Any, Any, Any],
    user_id: UserRef,
    services: ServicesDep,
    principal: PrincipalDep,
) -> Response[bytes]:
    q = request.query_params
    params = _params(User, q.get("attributes"), q.get("excludedAttributes"))
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
) -> Response[bytes]:
    async with services.db.read() as conn:
        member = await user_service.get_member(conn, principal, principal.org_public_id, user_id)
        names = await _role_names(conn, principal)
    user = user_out(request, member, names)
    headers = {"ETag": user.meta.version or ""} if user.meta else {}
    if status == 201 and user.meta and user.meta.location:
        headers["Location"] = user.meta.location
    return _respond(_dump(user), status, headers)


@post("/Users", include_in_schema=False)
async def create_user(
    request: Request[Any, Any, Any], services: ServicesDep, actor: ActorDep
) -> Response[bytes]:
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
    tx: Tx, actor: ActorDep, user_id: UserRef, before: User[Any], after: User[Any]
) -> None:
    """Write what changed between two SCIM representations of a member."""
    org_ref = actor.principal.org_public_id
    new_email = after.user_name
    if new_email and new_email.lower() != (before.user_name or "").lower():
        raise MutabilityException(
            detail="userName (the email) cannot be changed through SCIM; "
            "use POST /orgs/{org_id}/users/{user_id}/email/request_change"
        )
    fields = {k: v for k, v in _profile(after).items() if _profile(before)[k] != v}
    if fields:
        await user_service.update_member(tx, actor, org_ref, user_id, fields)
    if after.active is not None and after.active != before.active:
        await user_service.set_status(tx, actor, org_ref, user_id, enable=after.active)


async def _current(
    request: Request[Any, Any, Any], services: ServicesDep, principal: Principal, user_id: str
) -> User[Any]:
    async with services.db.read() as conn:
        member = await user_service.get_member(conn, principal, principal.org_public_id, user_id)
        names = await _role_names(conn, principal)
    return user_out(request, member, names)


@put("/Users/{user_id:str}", include_in_schema=False)
async def replace_user(
    request: Request[Any, Any, Any], user_id: UserRef, services: ServicesDep, actor: ActorDep
) -> Response[bytes]:
    principal = actor.principal
    async with services.db.read() as conn:
        await reach(conn, principal, principal.org_public_id, scope="users:write")
    data = await _body(request)
    after = _validate(User, data, Context.RESOURCE_REPLACEMENT_REQUEST)
    before = await _current(request, services, principal, user_id)
    if after.active is None:
        after.active = True
    await services.db.transaction(_apply, actor, user_id, before, after)
    return await _reply_user(request, services, principal, user_id)


@patch("/Users/{user_id:str}", include_in_schema=False)
async def patch_user(
    request: Request[Any, Any, Any], user_id: UserRef, services: ServicesDep, actor: ActorDep
) -> Response[bytes]:
    principal = actor.principal
    async with services.db.read() as conn:
        await reach(conn, principal, principal.org_public_id, scope="users:write")
    data = await _body(request)
    before = await _current(request, services, principal, user_id)
    op = _validate(PatchOp[User], data, Context.RESOURCE_PATCH_REQUEST)  # type: ignore[misc]
    after = before.model_copy(deep=True)
    op.patch(after)
    await services.db.transaction(_apply, actor, user_id, before, after)
    return await _reply_user(request, services, principal, user_id)


@delete("/Users/{user_id:str}", status_code=204, include_in_schema=False)
async def delete_user(user_id: UserRef, services: ServicesDep, actor: ActorDep) -> None:
    await services.db.transaction(
        user_service.remove_member, actor, actor.principal.org_public_id, user_id
    )


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


@get("/Groups", include_in_schema=False)
async def list_groups(
    request: Request[Any, Any, Any], services: ServicesDep, principal: PrincipalDep
) -> Response[bytes]:
    q = request.query_params
    params = _params(Group, q.get("attributes"), q.get("excludedAttributes"))
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
) -> Response[bytes]:
    async with services.db.read() as conn:
        view = await role_service.get_role(conn, principal, principal.org_public_id, group_id)
        group = await _group(request, conn, principal, view)
    headers = {"Location": group.meta.location} if status == 201 and group.meta else None
    return _respond(_dump(group, params=params), status, headers)  # type: ignore[arg-type]


@get("/Groups/{group_id:str}", include_in_schema=False)
async def get_group(
    request: Request[Any, Any, Any],
    group_id: GroupRef,
    services: ServicesDep,
    principal: PrincipalDep,
) -> Response[bytes]:
    q = request.query_params
    params = _params(Group, q.get("attributes"), q.get("excludedAttributes"))
    return await _reply_group(request, services, principal, group_id, params=params)


async def _set_members(
    tx: Tx, actor: ActorDep, group_id: GroupRef, before: set[str], after: set[str]
) -> None:
    org_ref = actor.principal.org_public_id
    for user_id in sorted(after - before):
        await role_service.assign(tx, actor, org_ref, group_id, user_id, grant=True)
    for user_id in sorted(before - after):
        await role_service.assign(tx, actor, org_ref, group_id, user_id, grant=False)


def _member_ids(group: Group) -> set[str]:
    return {m.value for m in group.members or [] if m.value}


@post("/Groups", include_in_schema=False)
async def create_group(
    request: Request[Any, Any, Any], services: ServicesDep, actor: ActorDep
) -> Response[bytes]:
    group = _validate(Group, await _body(request), Context.RESOURCE_CREATION_REQUEST)

    async def work(tx: Tx) -> str:
        view = await role_service.create_role(
            tx,
            actor,
            actor.principal.org_public_id,
            name=group.display_name,
            description="",
            capabilities=[],
        )
        await _set_members(tx, actor, view.id, set(), _member_ids(group))
        return view.id

    try:
        group_id = await services.db.transaction(work)
    except IntegrityError:
        raise Conflict("a concurrent change created the same role; retry") from None
    return await _reply_group(request, services, actor.principal, group_id, 201)


async def _current_group(
    request: Request[Any, Any, Any], services: ServicesDep, principal: Principal, group_id: str
) -> Group:
    async with services.db.read() as conn:
        view = await role_service.get_role(conn, principal, principal.org_public_id, group_id)
        return await _group(request, conn, principal, view)


async def _apply_group(tx: Tx, actor: ActorDep, before: Group, after: Group) -> None:
    assert actor.principal is not None and before.id is not None
    if after.display_name and after.display_name != before.display_name:
        await role_service.update_role(
            tx, actor, actor.principal.org_public_id, before.id, {"name": after.display_name}
        )
    await _set_members(tx, actor, before.id, _member_ids(before), _member_ids(after))


@put("/Groups/{group_id:str}", include_in_schema=False)
async def replace_group(
    request: Request[Any, Any, Any], group_id: GroupRef, services: ServicesDep, actor: ActorDep
) -> Response[bytes]:
    async with services.db.read() as conn:
        await reach(conn, actor.principal, actor.principal.org_public_id, scope="users:write")
    after = _validate(Group, await _body(request), Context.RESOURCE_REPLACEMENT_REQUEST)
    before = await _current_group(request, services, actor.principal, group_id)
    await services.db.transaction(_apply_group, actor, before, after)
    return await _reply_group(request, services, actor.principal, group_id)


@patch("/Groups/{group_id:str}", include_in_schema=False)
async def patch_group(
    request: Request[Any, Any, Any], group_id: GroupRef, services: ServicesDep, actor: ActorDep
) -> Response[bytes]:
    async with services.db.read() as conn:
        await reach(conn, actor.principal, actor.principal.org_public_id, scope="users:write")
    data = await _body(request)
    before = await _current_group(request, services, actor.principal, group_id)
    op = _validate(PatchOp[Group], data, Context.RESOURCE_PATCH_REQUEST)  # type: ignore[misc]
    after = before.model_copy(deep=True)
    op.patch(after)
    await services.db.transaction(_apply_group, actor, before, after)
    return await _reply_group(request, services, actor.principal, group_id)


@delete("/Groups/{group_id:str}", status_code=204, include_in_schema=False)
async def delete_group(group_id: GroupRef, services: ServicesDep, actor: ActorDep) -> None:
    await services.db.transaction(
        role_service.delete_role, actor, actor.principal.org_public_id, group_id
    )


# --- Discovery --------------------------------------------------------------------------------

RESOURCES: dict[str, Any] = {"User": User, "Group": Group}


def _service_provider_config(request: Request[Any, Any, Any]) -> ServiceProviderConfig:
    return ServiceProviderConfig(
        documentation_uri=None,
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=PAGE_MAX),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=True),
        etag=ETag(supported=False),
        authentication_schemes=[
            AuthenticationScheme(
                type=AuthenticationScheme.Type.oauthbearertoken,
                name="API key",
                description="An orgplane API key (users:read / users:write) as a Bearer token",
                primary=True,
            )
        ],
        meta=Meta(
            resource_type="ServiceProviderConfig",
            location=f"{str(request.base_url).rstrip('/')}{BASE}/ServiceProviderConfig",
        ),
    )


def _resource_type(request: Request[Any, Any, Any], name: str) -> ResourceType:
    rt = ResourceType.from_resource(RESOURCES[name])
    rt.meta = Meta(
        resource_type="ResourceType",
        location=f"{str(request.base_url).rstrip('/')}{BASE}/ResourceTypes/{name}",
    )
    return rt


# What orgplane stores: the schema published for each resource names these attributes only
# (and, for complex ones, these sub-attributes), with the mutability orgplane gives them.
SUPPORTED: dict[str, dict[str, Any]] = {
    "User": {
        "userName": ("immutable", None),  # the email; changed only through the native API
        "name": (None, {"givenName", "familyName"}),
        "title": (None, None),
        "active": ("required", None),  # always known: defaults to true on creation
        "emails": ("readOnly", None),  # mirrors userName
        "groups": ("readOnly", None),
    },
    "Group": {"displayName": (None, None), "members": ("members", {"value", "$ref", "type"})},
}


def _trimmed(model: Any, name: str) -> Any:
    schema = model.to_schema()
    kept = []
    for attr in schema.attributes or []:
        if attr.name not in SUPPORTED[name]:
            continue
        mutability, subs = SUPPORTED[name][attr.name]
        if mutability == "required":
            attr.required = True
        elif mutability == "members":  # only the member's id is written; the rest is derived
            for sub in attr.sub_attributes or []:
                if sub.name == "type":
                    sub.mutability = "readOnly"
        elif mutability:
            attr.mutability = mutability
            for sub in attr.sub_attributes or []:
                sub.mutability = mutability
        if subs is not None:
            attr.sub_attributes = [a for a in attr.sub_attributes or [] if a.name in subs]
        kept.append(attr)
    schema.attributes = kept
    return schema


def _schemas(request: Request[Any, Any, Any]) -> list[Any]:
    out = []
    for name, model in RESOURCES.items():
        schema = _trimmed(model, name)
        schema.meta = Meta(
            resource_type="Schema",
            location=f"{str(request.base_url).rstrip('/')}{BASE}/Schemas/{schema.id}",
        )
        out.append(schema)
    return out


@get("/ServiceProviderConfig", include_in_schema=False)
async def service_provider_config(
    request: Request[Any, Any, Any], principal: PrincipalDep
) -> Response[bytes]:
    return _respond(_dump(_service_provider_config(request)))


@get("/ResourceTypes", include_in_schema=False)
async def list_resource_types(
    request: Request[Any, Any, Any], principal: PrincipalDep
) -> Response[bytes]:
    items = [_resource_type(request, n) for n in RESOURCES]
    return _respond(_list_response(items, len(items), 1))


@get("/ResourceTypes/{name:str}", include_in_schema=False)
async def get_resource_type(
    request: Request[Any, Any, Any], name: SchemaRef, principal: PrincipalDep
) -> Response[bytes]:
    if name not in RESOURCES:
        raise NotFoundException(detail=f"resource type {name!r} not found")
    return _respond(_dump(_resource_type(request, name)))


@get("/Schemas", include_in_schema=False)
async def list_schemas(request: Request[Any, Any, Any], principal: PrincipalDep) -> Response[bytes]:
    items = _schemas(request)
    return _respond(_list_response(items, len(items), 1))


@get("/Schemas/{schema_id:str}", include_in_schema=False)
async def get_schema(
    request: Request[Any, Any, Any], schema_id: SchemaRef, principal: PrincipalDep
) -> Response[bytes]:
    for schema in _schemas(request):
        if schema.id == schema_id:
            return _respond(_dump(schema))
    raise NotFoundException(detail=f"schema {schema_id!r} not found")


@route(
    "/{rest:path}",
    http_method=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def unknown(rest: SchemaRef, principal: PrincipalDep) -> Response[bytes]:
    """Anything else under /scim/v2 is a SCIM 404 (for an authenticated caller)."""
    raise NotFoundException(detail=f"no SCIM endpoint at {BASE}{rest}")


router = Router(
    path=BASE,
    route_handlers=[
        unknown,
        service_provider_config,
        list_resource_types,
        get_resource_type,
        list_schemas,
        get_schema,
        list_users,
        search_users,
        search_all,
        get_user,
        create_user,
        replace_user,
        patch_user,
        delete_user,
        list_groups,
        get_group,
        create_group,
        replace_group,
        patch_group,
        delete_group,
    ],
    exception_handlers={
        OrgplaneError: handle_orgplane_error,
        SCIMException: handle_scim_error,
        ValidationException: handle_validation,
        ValidationError: handle_validation,
        HTTPException: handle_http,
        Exception: handle_unexpected,
    },
)
