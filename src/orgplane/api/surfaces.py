"""Errors no route's handlers see (no route matched, a 405, a 500), in the format of the surface
the path belongs to: each vendor's own envelope, or SCIM's Error, under its prefix; the
console's HTML page under /console; problem+json elsewhere.

Litestar answers an unmatched path (404) or method (405), and an exception no layer names, with
the application's handlers; these pick the surface by the path's prefix.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException
from litestar.routes import HTTPRoute

from orgplane.api import problems
from orgplane.api.dialects.datadog.errors import EXCEPTION_HANDLERS as DATADOG
from orgplane.api.dialects.make.errors import HANDLERS as MAKE
from orgplane.api.dialects.sumologic.errors import EXCEPTION_HANDLERS as SUMOLOGIC
from orgplane.api.mounts import surface_of
from orgplane.api.scim.common import handle_http as scim_http_error
from orgplane.console.render import error_page, http_error_page

log = logging.getLogger("orgplane.errors")
_VENDORS: dict[str, Any] = {
    "datadog": DATADOG[HTTPException],
    "make": MAKE[HTTPException],
    "sumologic": SUMOLOGIC[HTTPException],
    "scim": scim_http_error,
}
UNEXPECTED = "an unexpected error occurred; it has been logged"


def _vendor(request: Request[Any, Any, Any]) -> Any:
    """The HTTP-error handler of the vendor or SCIM surface serving this path, or None
    (native)."""
    return _VENDORS.get(surface_of(request.scope["path"]))


def _console(request: Request[Any, Any, Any]) -> bool:
    return surface_of(request.scope["path"]) == "console"


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    allow = (exc.headers or {}).get("allow")
    if exc.status_code == 405 and allow:
        # The same list, in the same order, as OPTIONS on the path answers.
        exc.headers = {**(exc.headers or {}), "allow": ", ".join(sorted(allow.split(", ")))}
    if _console(request):
        return http_error_page(request, exc)
    handler = _vendor(request)
    if handler is None:
        return problems.handle_http_exception(request, exc)
    if exc.status_code == 404:
        exc = HTTPException(status_code=404, detail=f"no route {request.method} {request.url.path}")
    response: Response[Any] = handler(request, exc)
    return response


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if _console(request):
        log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return error_page(request, exc)
    handler = _vendor(request)
    if handler is None:
        return problems.handle_unexpected(request, exc)
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    response: Response[Any] = handler(request, HTTPException(status_code=500, detail=UNEXPECTED))
    return response


def agree_on_allow(app: Litestar) -> None:
    """Make ``OPTIONS`` list every method a path serves, as a 405 on it does.

    Litestar gives a path's first route its ``OPTIONS`` handler, which reads that route's
    methods when it answers; the handlers registered on the same path after it build new routes
    that keep the handler, so ``OPTIONS /orgs/{id}`` said ``GET, OPTIONS``. Point each such
    handler at the methods of the route that serves the path.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if handler.http_methods != {"OPTIONS"} or handler.fn.__name__ != "options_handler":
                continue
            for cell in getattr(handler.fn, "__closure__", None) or ():
                if isinstance(cell.cell_contents, HTTPRoute) and cell.cell_contents is not route:
                    cell.cell_contents.methods = route.methods


EXCEPTION_HANDLERS: dict[Any, Any] = {
    **problems.EXCEPTION_HANDLERS,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
