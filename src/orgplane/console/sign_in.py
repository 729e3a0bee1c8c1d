"""Signing in and out of the console: the core's password sign-in (argon2id, lockout, the
per-address limit), a session cookie instead of a bearer token, and the same access-log entries
as the API's sign-in."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromQuery
from litestar.response import Redirect, Template
from msgspec import Struct

from orgplane.api.deps import ServicesDep, limit_sign_in, request_meta
from orgplane.api.sign_in import OrgRef, record_sign_in
from orgplane.console.render import page
from orgplane.console.session import PATH, ViewerDep, cleared_cookie, session_cookie
from orgplane.core.access.service import session_key_id
from orgplane.core.errors import RateLimited
from orgplane.core.people import auth


class SignInForm(Struct):
    email: str = ""
    password: str = ""
    code: str = ""
    next: str = ""


Form = Annotated[SignInForm, Body(media_type=RequestEncodingType.URL_ENCODED)]


def _next(target: str | None) -> str:
    """Where to go after signing in: a console page, never another site."""
    if target and target.startswith(f"{PATH}/") and not target.startswith("//"):
        return target
    return PATH


@get("/sign-in", name="console:sign-in")
async def sign_in_page(
    request: Request[Any, Any, Any], next: FromQuery[str | None] = None
) -> Template:
    return page(request, None, "sign_in.html", next=_next(next), email="", error=None)


@post("/sign-in", status_code=303)
async def sign_in(
    request: Request[Any, Any, Any], services: ServicesDep, data: Form
) -> Template | Redirect:
    refused = "The email or password is not right, or the account is locked."
    try:
        await limit_sign_in(request, services)
    except RateLimited as exc:
        return page(
            request, None, "sign_in.html", status_code=429, next=_next(data.next),
            email=data.email, error=str(exc),
        )  # fmt: skip
    meta = request_meta(request)
    if not data.email or not data.password:
        outcome = None
    else:
        outcome = await auth.login(
            services.db, meta, data.email, data.password, None,
            otp=data.code.strip() or None, secret_key=services.settings.secret_key,
        )  # fmt: skip
    if outcome is None or not outcome.ok:
        record_sign_in(
            services, request, meta, action="LOGIN", status="FAILURE",
            actor=f"user:{outcome.user_public_id}" if outcome and outcome.user_public_id
            else "anonymous",
            orgs=outcome.member_orgs if outcome else (),
            user_id=outcome.user_pk if outcome else None,
            detail=outcome.detail if outcome else "email or password missing",
        )  # fmt: skip
        services.metrics.auth_failures.labels("login refused").inc()
        if outcome is not None and outcome.second_factor_required:
            # Shown only after the right password, as the API's second_factor_required is.
            refused = (
                "Enter the current code from your authenticator app (or a recovery code) "
                "with your password."
                if not data.code
                else "That code is not right, or it was used already. Enter your password and "
                "the current code again."
            )
        return page(
            request, None, "sign_in.html", status_code=401, next=_next(data.next),
            email=data.email, error=refused,
            ask_code=outcome is not None and outcome.second_factor_required,
        )  # fmt: skip
    assert outcome.token is not None and outcome.session_pk is not None
    record_sign_in(
        services, request, meta, action="LOGIN", status="SUCCESS",
        actor=f"user:{outcome.user.public_id}", orgs=[outcome.org], user_id=outcome.user.id,
        key_id=session_key_id(outcome.session_pk),
    )  # fmt: skip
    response: Redirect = Redirect(_next(data.next), status_code=303)
    max_age = int(auth.SESSION_TTL.total_seconds())
    response.set_cookie(session_cookie(services.settings, outcome.token, max_age))
    return response


@post("/sign-out", status_code=303)
async def sign_out(
    request: Request[Any, Any, Any], services: ServicesDep, viewer: ViewerDep
) -> Redirect:
    await services.db.transaction(auth.logout, viewer.key_pk)
    record_sign_in(
        services, request, request_meta(request), action="LOGOUT", status="SUCCESS",
        actor=viewer.label, orgs=[OrgRef(viewer.org_id, viewer.root_id)],
        key_id=viewer.key_id, user_id=viewer.user_id,
    )  # fmt: skip
    response: Redirect = Redirect(f"{PATH}/sign-in", status_code=303)
    response.set_cookie(cleared_cookie(services.settings))
    return response
