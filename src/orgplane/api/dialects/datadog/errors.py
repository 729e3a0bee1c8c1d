"""Datadog's error envelope ``{"errors": ["..."]}`` with the status orgplane decided.

Missing or bad keys are Datadog's ``403 {"errors": ["Forbidden"]}`` (orgplane's 401), and a
request over the rate limit is ``429 {"errors": ["Too many requests"]}`` with Datadog's
``X-RateLimit-*`` headers; everything else carries orgplane's message, naming the field at fault.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from msgspec import Struct

from orgplane.api.dialects.openapi import vendor_errors
from orgplane.core.errors import OrgplaneError


class DatadogError(Struct):
    """Datadog's ``APIErrorResponse``."""

    errors: list[str]


ERRORS = vendor_errors(
    DatadogError,
    {
        400: "Bad Request: the message names the field and the reason",
        401: "Not sent: Datadog answers missing or invalid keys with 403",
        403: 'Forbidden: missing or invalid keys (`{"errors": ["Forbidden"]}`) or a missing scope',
        404: "Not found: no such resource within the key's organization and its descendants",
        409: "Conflict with the current state (e.g. a role name already taken)",
        422: "The id in the URL and in the body do not match",
        429: 'Too many requests (`{"errors": ["Too many requests"]}`); see X-RateLimit-Reset',
    },
)


def datadog_error(
    status: int, messages: list[str], headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        msgspec.json.encode({"errors": messages}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _orgplane_error(_: Request[Any, Any, Any], exc: OrgplaneError) -> Response[Any]:
    if exc.status == 401:
        return datadog_error(403, ["Forbidden"])
    if exc.status == 429:
        # Datadog sends no Retry-After: the X-RateLimit-* headers (added to every response under
        # /datadog) say when to retry. With Retry-After, urllib3's default policy in the
        # client would sleep and retry even with the client's own retries off.
        return datadog_error(429, ["Too many requests"])
    messages = [f"{e.field}: {e.message}" for e in exc.errors] or [exc.detail]
    return datadog_error(exc.status, messages, exc.headers or None)


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    messages = [
        f"{item.get('key') or 'body'}: {item.get('message')}"
        for item in exc.extra or []
        if isinstance(item, dict)
    ]
    return datadog_error(400, messages or [str(exc.detail)])


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return datadog_error(exc.status_code, [str(exc.detail)], exc.headers)


EXCEPTION_HANDLERS: Any = {
    OrgplaneError: _orgplane_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
}
