"""SCIM's search over every resource type (``POST /.search``): users, then groups."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post
from scim2_models import (
    Group,
    User,
)

from orgplane.api.deps import PrincipalDep, ServicesDep
from orgplane.api.scim.common import (
    _dump,
    _filtered,
    _int,
    _list_response,
    _page,
    _params,
    _respond,
    _search_body,
)
from orgplane.api.scim.groups import _group
from orgplane.api.scim.users import _all_members, _role_names, user_out
from orgplane.core.people import roles as role_service


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
