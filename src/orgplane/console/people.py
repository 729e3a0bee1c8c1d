"""An org's people: members and their roles; invite someone (the console shows the invitation
link once: orgplane sends no email), change roles, disable and enable; and the page where an
invited person sets a password."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, PathParameter
from litestar.response import Redirect, Template
from msgspec import Struct

from orgplane.api.deps import ServicesDep, limit_sign_in, request_meta
from orgplane.console.render import page
from orgplane.console.session import PATH, CallerDep, OrgId, ViewerDep
from orgplane.core.access.service import reach
from orgplane.core.errors import OrgplaneError
from orgplane.core.orgs import queries
from orgplane.core.people import auth
from orgplane.core.people import invitations as invitation_service
from orgplane.core.people import roles as role_service
from orgplane.core.people import service as people
from orgplane.core.people import users as user_service

MEMBERS_PAGE = 100
UserId = Annotated[str, PathParameter(description="A user's id", max_length=64)]
Token = Annotated[str, PathParameter(description="An invitation token", max_length=200)]


async def _people_page(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    org_id: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> Template:
    async with services.db.read() as conn:
        org = await reach(conn, viewer, org_id, scope="users:read")
        trail = await queries.lineage(conn, viewer, org)
        members, more = await user_service.list_members(
            conn, viewer, org_id, limit=MEMBERS_PAGE, cursor=request.query_params.get("cursor")
        )
        roles = await role_service.list_roles(conn, viewer, org_id)
    return page(
        request, viewer, "people.html", status_code=status_code, org=org, trail=trail,
        tab="people", members=members, next_cursor=more, roles=roles, **context,
    )  # fmt: skip


@get("/orgs/{org_id:str}/people", name="console:people")
async def people_page(
    request: Request[Any, Any, Any], services: ServicesDep, viewer: ViewerDep, org_id: OrgId
) -> Template:
    return await _people_page(request, services, viewer, org_id)


@post("/orgs/{org_id:str}/people", status_code=201)
async def invite(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
) -> Template:
    form = await request.form()
    email = str(form.get("email", "")).strip()
    roles = [str(r) for r in form.getall("roles")] if "roles" in form else []
    try:
        member, issued = await services.db.transaction(
            people.invite, actor=caller, org_ref=org_id, email=email, profile={}, roles=roles
        )
    except OrgplaneError as exc:
        return await _people_page(
            request, services, viewer, org_id, status_code=exc.status, error=str(exc),
            draft_email=email,
        )  # fmt: skip
    link = f"{request.base_url}".rstrip("/") + f"{PATH}/invitations/{issued.token}"
    return await _people_page(
        request, services, viewer, org_id, status_code=201, invited=member, link=link
    )


@post("/orgs/{org_id:str}/people/{user_id:str}", status_code=303)
async def change(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
    user_id: UserId,
) -> Template | Redirect:
    """Replace the member's roles, or disable or enable them (the button pressed says which)."""
    form = await request.form()
    action = str(form.get("action", "roles"))
    try:
        if action in ("disable", "enable"):
            await services.db.transaction(
                user_service.set_status, caller, org_id, user_id, enable=action == "enable"
            )
        else:
            roles = [str(r) for r in form.getall("roles")] if "roles" in form else []
            await services.db.transaction(
                user_service.update_member, caller, org_id, user_id, {"roles": roles}
            )
    except OrgplaneError as exc:
        return await _people_page(
            request, services, viewer, org_id, status_code=exc.status, error=str(exc),
            failed_user=user_id,
        )  # fmt: skip
    return Redirect(f"{PATH}/orgs/{org_id}/people?changed={user_id}", status_code=303)


class Acceptance(Struct):
    password: str = ""


@get("/invitations/{token:str}", name="console:invitation")
async def invitation_page(request: Request[Any, Any, Any], token: Token) -> Template:
    return page(request, None, "accept.html", token=token, error=None)


@post("/invitations/{token:str}", status_code=303)
async def accept(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    token: Token,
    data: Annotated[Acceptance, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Template | Redirect:
    try:
        await limit_sign_in(request, services)
        # argon2 is slow by design: hash off the event loop and before the transaction.
        password_hash = await asyncio.to_thread(auth.hash_password, data.password)
        accepted = await services.db.transaction(
            invitation_service.accept, request_meta(request), token, password_hash
        )
    except OrgplaneError as exc:
        return page(
            request, None, "accept.html", status_code=exc.status, token=token, error=str(exc)
        )
    return Redirect(f"{PATH}/sign-in?accepted={accepted.email}", status_code=303)
