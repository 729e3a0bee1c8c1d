"""The signed-in person's own account: two-factor sign-in. Enrol an authenticator app (its QR
code drawn on the server), confirm it with a code (the recovery codes shown once), turn it off.
A session restricted to enrolling (the org requires a second factor) may use these pages, and
only these."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template
from msgspec import Struct

from orgplane.api.deps import ServicesDep
from orgplane.console.render import page
from orgplane.console.session import PATH, CallerDep, ViewerDep, provide_enrolling_viewer
from orgplane.core.errors import OrgplaneError
from orgplane.core.people import mfa

ENROLLING = {"viewer": Provide(provide_enrolling_viewer)}


async def _account(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    *,
    status_code: int = 200,
    **context: Any,
) -> Template:
    async with services.db.read() as conn:
        state = await mfa.status(conn, principal=viewer)
    return page(request, viewer, "account.html", status_code=status_code, state=state, **context)


@get("/account", name="console:account", dependencies=ENROLLING)
async def account(
    request: Request[Any, Any, Any], services: ServicesDep, viewer: ViewerDep
) -> Template:
    return await _account(request, services, viewer)


@post("/account/mfa/enrol", status_code=200, dependencies=ENROLLING)
async def enrol(
    request: Request[Any, Any, Any], services: ServicesDep, viewer: ViewerDep, caller: CallerDep
) -> Template:
    try:
        begun = await services.db.transaction(
            mfa.begin_enrolment, actor=caller, secret_key=services.settings.secret_key
        )
    except OrgplaneError as exc:
        return await _account(request, services, viewer, status_code=exc.status, error=str(exc))
    return await _account(request, services, viewer, enrolment=begun)


class CodeForm(Struct):
    code: str = ""


Code = Annotated[CodeForm, Body(media_type=RequestEncodingType.URL_ENCODED)]


@post("/account/mfa/confirm", status_code=200, dependencies=ENROLLING)
async def confirm(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    data: Code,
) -> Template:
    try:
        codes = await services.db.transaction(
            mfa.confirm_enrolment, actor=caller, code=data.code.strip(),
            secret_key=services.settings.secret_key,
        )  # fmt: skip
    except OrgplaneError as exc:
        return await _account(request, services, viewer, status_code=exc.status, error=str(exc))
    return await _account(request, services, viewer, recovery_codes=codes)


@post("/account/mfa/disable", status_code=303)
async def disable(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    data: Code,
) -> Template | Redirect:
    try:
        refused = await services.db.transaction(
            mfa.disable, actor=caller, code=data.code.strip(),
            secret_key=services.settings.secret_key,
        )  # fmt: skip
        mfa.settle(refused)
    except OrgplaneError as exc:
        return await _account(request, services, viewer, status_code=exc.status, error=str(exc))
    return Redirect(f"{PATH}/account?off=1", status_code=303)
