"""Rendering console pages: the common context, refusals shown where the person acted, and the
error page."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import PermissionDeniedException
from litestar.response import Template
from litestar.status_codes import HTTP_403_FORBIDDEN, HTTP_500_INTERNAL_SERVER_ERROR

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
    )


def error_page(request: Request[Any, Any, Any], exc: Exception) -> Template:
    """A refusal the person did not reach through a form (a missing org, a forbidden page)."""
    status = exc.status if isinstance(exc, OrgplaneError) else HTTP_500_INTERNAL_SERVER_ERROR
    message = str(exc) if isinstance(exc, OrgplaneError) else "Something went wrong on our side."
    return page(request, None, "error.html", status_code=status, status=status, message=message)


def refused_form(request: Request[Any, Any, Any], exc: PermissionDeniedException) -> Template:
    """A form the CSRF middleware refused (its token missing or not this browser's): a console
    page for the person, not the API's problem+json."""
    message = (
        "This form was not sent from a page of this console, or the page is out of date. "
        "Go back, reload the page and try again."
    )
    return page(request, None, "error.html", status_code=HTTP_403_FORBIDDEN,
                status=HTTP_403_FORBIDDEN, message=message)  # fmt: skip
