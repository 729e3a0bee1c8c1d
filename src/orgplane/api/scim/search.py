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
    ListingDep,
    _dump,
    _filtered,
    _list_response,
    _page,
    _params,
    _respond,
)
from orgplane.api.scim.groups import _group
from orgplane.api.scim.openapi import search
from orgplane.api.scim.shapes import ScimSearchResults
from orgplane.api.scim.users import _all_members, _role_names, user_out
from orgplane.core.people import roles as role_service


@post("/.search", **search("Search users and groups"))
async def search_all(
    request: Request[Any, Any, Any], services: ServicesDep, principal: PrincipalDep, q: ListingDep
) -> Response[ScimSearchResults]:
    """A search over every resource type (users, then groups)."""
    async with services.db.read() as conn:
        members = await _all_members(conn, principal)
        names = await _role_names(conn, principal)
        views = await role_service.list_roles(conn, principal, principal.org_public_id)
        groups = [await _group(request, conn, principal, v) for v in views]
    resources = _filtered(User, [user_out(request, m, names) for m in members], q.filter)
    resources += _filtered(Group, groups, q.filter)
    page, start, total = _page(resources, q)
    attributes, excluded = q.attributes, q.excludedAttributes
    body = _list_response(page, total, start)
    if attributes or excluded:
        body["Resources"] = [_dump(r, params=_params(type(r), attributes, excluded)) for r in page]
    return _respond(body)
