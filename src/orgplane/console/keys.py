"""An org's API keys: create one (its secret shown once, on the answer to the form), list,
revoke."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.response import Redirect, Template

from orgplane.api.deps import ServicesDep
from orgplane.console.render import page
from orgplane.console.session import PATH, CallerDep, KeyRef, OrgId, ViewerDep
from orgplane.core.access import scopes
from orgplane.core.access.service import reach
from orgplane.core.credentials import service as keys
from orgplane.core.errors import OrgplaneError
from orgplane.core.orgs import queries

KEYS_PAGE = 100


async def _keys_page(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    org_id: OrgId,
    *,
    status_code: int = 200,
    **context: Any,
) -> Template:
    async with services.db.read() as conn:
        org = await reach(conn, viewer, org_id, scope="keys:read")
        trail = await queries.lineage(conn, viewer, org)
        rows, more = await keys.list_keys(conn, viewer, org_id, limit=KEYS_PAGE, cursor=None)
    return page(
        request, viewer, "keys.html", status_code=status_code, org=org, trail=trail, tab="keys",
        keys=rows, more=more is not None, scopes=scopes.SCOPE_DESCRIPTIONS, **context,
    )  # fmt: skip


@get("/orgs/{org_id:str}/keys", name="console:keys")
async def keys_page(
    request: Request[Any, Any, Any], services: ServicesDep, viewer: ViewerDep, org_id: OrgId
) -> Template:
    return await _keys_page(request, services, viewer, org_id)


@post("/orgs/{org_id:str}/keys", status_code=200)
async def create_key(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
) -> Template:
    form = await request.form()
    name = str(form.get("name", ""))
    chosen = [str(s) for s in form.getall("scopes")] if "scopes" in form else []
    try:
        created = await services.db.transaction(
            keys.mint, actor=caller, org_ref=org_id, name=name, scopes=chosen or None
        )
    except OrgplaneError as exc:
        return await _keys_page(
            request, services, viewer, org_id, status_code=exc.status, error=str(exc),
            draft_name=name, draft_scopes=chosen,
        )  # fmt: skip
    return await _keys_page(
        request, services, viewer, org_id, status_code=201, created=created.row,
        secret=created.secret,
    )  # fmt: skip


@post("/orgs/{org_id:str}/keys/{key_id:str}/revoke", status_code=303)
async def revoke_key(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
    key_id: KeyRef,
) -> Template | Redirect:
    try:
        await services.db.transaction(keys.revoke, actor=caller, key_ref=key_id, org_ref=org_id)
    except OrgplaneError as exc:
        return await _keys_page(
            request, services, viewer, org_id, status_code=exc.status, error=str(exc)
        )
    return Redirect(f"{PATH}/orgs/{org_id}/keys?revoked={key_id}", status_code=303)
