"""Who is looking at a console page: the sign-in session in a cookie, resolved through the same
authentication, capabilities and rate limits as an API request.

The cookie holds the session token the core issued at sign-in (``ops_...``; the database keeps
only its hash). It is HttpOnly, SameSite=Lax, limited to ``/console``, and Secure when
``ORGPLANE_PUBLIC_URL`` is https. Every form also carries a CSRF token (Litestar's
double-submit middleware on the console's router).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import Cookie, ResponseHeader
from litestar.di import NamedDependency
from litestar.params import PathParameter
from litestar.response import Redirect

from orgplane.api import mounts
from orgplane.api.deps import ServicesDep, principal_of, request_meta
from orgplane.config import Settings
from orgplane.core.access.principal import Caller, Principal
from orgplane.core.errors import RateLimited
from orgplane.core.people import mfa

COOKIE = "orgplane_session"

ViewerDep = NamedDependency[Principal]
CallerDep = NamedDependency[Caller]
OrgId = Annotated[str, PathParameter(description="An org's public id", max_length=64)]
KeyRef = Annotated[str, PathParameter(description="An API key's id", max_length=64)]
LogKind = Annotated[str, PathParameter(description="audit or access-log", max_length=16)]
PATH = mounts.CONSOLE

# No inline script or style, nothing from elsewhere, never in a frame.
SECURITY_HEADERS = [
    ResponseHeader(
        name="Content-Security-Policy",
        value="default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    ),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ResponseHeader(name="Cache-Control", value="no-store"),
]


def secure(settings: Settings) -> bool:
    return (settings.public_url or "").startswith("https://")


def csrf_config(settings: Settings) -> CSRFConfig:
    return CSRFConfig(
        secret=settings.secret_key,
        cookie_name="orgplane_csrf",
        cookie_path=PATH,
        cookie_httponly=True,
        cookie_secure=secure(settings),
        cookie_samesite="lax",
        header_name="x-csrf-token",
    )


def session_cookie(settings: Settings, token: str, max_age: int) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=token,
        path=PATH,
        max_age=max_age,
        httponly=True,
        secure=secure(settings),
        samesite="lax",
    )


def cleared_cookie(settings: Settings) -> Cookie:
    return session_cookie(settings, "", 0)


class SignInRequired(Exception):
    """The page needs a signed-in person: the console answers with the sign-in page."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def to_sign_in(request: Request[Any, Any, Any], exc: SignInRequired) -> Response[Any]:
    response: Response[Any] = Redirect(f"{PATH}/sign-in?next={quote(exc.path, safe='/')}")
    if COOKIE in request.cookies:
        response.set_cookie(cleared_cookie(request.app.state.services.settings))
    return response


async def provide_viewer(request: Request[Any, Any, Any], services: ServicesDep) -> Principal:
    """The signed-in person's session principal; the sign-in page when there is none. A session
    that may only enrol a second factor gets the rule (its account page is the exception)."""
    principal = await provide_enrolling_viewer(request, services)
    if principal.enrolment_only:
        # The org requires a second factor this person has not set up: nothing else until then.
        raise mfa.enrolment_required(principal)
    return principal


async def provide_enrolling_viewer(
    request: Request[Any, Any, Any], services: ServicesDep
) -> Principal:
    """``provide_viewer`` that lets a session restricted to enrolling a second factor through
    (the account page, where it enrols)."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired(request.url.path)
    principal, _ = await principal_of(request, services, token)
    if principal is None or principal.kind != "session":
        raise SignInRequired(request.url.path)
    verdict = await services.limiter.check(principal.key_id, principal.org_id)
    if verdict is not None and not verdict.allowed:
        raise RateLimited(
            f"too many requests; retry in {max(1, verdict.reset_after)} s",
            headers=verdict.headers(),
        )
    return principal


def provide_caller(request: Request[Any, Any, Any], viewer: ViewerDep) -> Caller:
    return Caller(meta=request_meta(request), principal=viewer)
