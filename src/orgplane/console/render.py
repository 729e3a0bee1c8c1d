"""Rendering console pages: the common context, refusals shown where the person acted, and the
error page."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import HTTPException
from litestar.response import Template
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from orgplane.console.session import SECURITY_HEADERS
from orgplane.core.access.principal import Principal
from orgplane.core.access.service import allows
from orgplane.core.errors import OrgplaneError


def page(
    request: Request[Any, Any, Any],
    viewer: Principal | None,
    name: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> Template:
    """The template ``name`` with what every page shows: who is signed in, and what they may do
    (a control that would be refused is not shown)."""
    return Template(
        template_name=name,
        context={
            "viewer": viewer,
            "can": (lambda scope, capability=None: allows(viewer, scope, capability))
            if viewer
            else (lambda *_: False),
            "path": request.url.path,
            **context,
        },
        status_code=status_code,
        headers={header.name: header.value for header in SECURITY_HEADERS if header.value},
    )


def refusal(exc: OrgplaneError) -> str:
    """A refusal as the form shows it: each bad field named with what is wrong with it."""
    if exc.errors:
        return "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
    return str(exc)


def http_error_page(request: Request[Any, Any, Any], exc: HTTPException) -> Template:
    """What the framework refuses before a console page runs: no such page, a method the page
    does not take, a form whose CSRF token is missing or wrong."""
    if exc.status_code == 403:
        message = (
            "This form was not sent from a page of this console, or the page is out of date. "
            "Go back, reload the page and try again."
        )
    elif exc.status_code == 404:
        message = "There is no such page in the console."
    else:
        message = str(exc.detail)
    response = page(
        request, None, "error.html", status_code=exc.status_code, status=exc.status_code,
        message=message,
    )  # fmt: skip
    if exc.headers and "allow" in exc.headers:
        response.headers["allow"] = exc.headers["allow"]
    return response


def error_page(request: Request[Any, Any, Any], exc: Exception) -> Template:
    """A refusal the person did not reach through a form (a missing org, a forbidden page)."""
    status = exc.status if isinstance(exc, OrgplaneError) else HTTP_500_INTERNAL_SERVER_ERROR
    message = str(exc) if isinstance(exc, OrgplaneError) else "Something went wrong on our side."
    return page(request, None, "error.html", status_code=status, status=status, message=message)
