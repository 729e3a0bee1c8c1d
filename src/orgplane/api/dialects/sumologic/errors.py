"""Sumo Logic's error envelope: ``{"id": "XXXXX-XXXXX-XXXXX", "errors": [{code, message}]}``.

The status is the one orgplane decided; the code is Sumo's word for it (``unauthorized``,
``forbidden``, ``notfound``, ``rate.limit.exceeded``, ...). A 400 lists one error per bad field
with the field in ``meta.field``.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from msgspec import Struct

from orgplane.api.dialects.openapi import vendor_errors
from orgplane.core.errors import OrgplaneError

CODES = {
    400: "bad.request",
    401: "unauthorized",
    403: "forbidden",
    404: "notfound",
    405: "method.unsupported",
    409: "conflict",
    412: "precondition.failed",
    413: "payload.too.large",
    415: "contenttype.invalid",
    422: "unprocessable",
    429: "rate.limit.exceeded",
    500: "internal.error",
    501: "not_implemented_yet",
    503: "service.unavailable",
}
_ALPHABET = string.ascii_uppercase + string.digits


class ErrorDetail(Struct, omit_defaults=True):
    code: str
    message: str
    meta: dict[str, str] | None = None


class ErrorResponse(Struct):
    """Sumo Logic's ``ErrorResponse``."""

    id: str
    errors: list[ErrorDetail]


ERRORS = vendor_errors(
    ErrorResponse,
    {
        400: "bad.request: invalid input; each error names its field in `meta.field`",
        401: "unauthorized: missing or invalid access id and key",
        403: "forbidden: the access key lacks the scope (or the user the capability)",
        404: "notfound: no such resource within the access key's organization",
        409: "conflict: the change conflicts with the current state",
        429: "rate.limit.exceeded: 4 requests per second or 10 concurrent requests per access key",
    },
)


def error_id() -> str:
    """A random error id shaped like Sumo's: three groups of five, e.g. ``8UQOI-82VTR-YBQ8G``."""
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(5)) for _ in range(3))


def sumo_error(
    status: int,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    fields: list[tuple[str, str]] | None = None,
) -> Response[Any]:
    code = CODES.get(status, "internal.error" if status >= 500 else "bad.request")
    if fields:
        details = [
            ErrorDetail(code, f"{field}: {text}", {"field": field}) for field, text in fields
        ]
    else:
        details = [ErrorDetail(code, message)]
    return Response(
        msgspec.json.encode(ErrorResponse(error_id(), details)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _orgplane_error(_: Request[Any, Any, Any], exc: OrgplaneError) -> Response[Any]:
    headers = dict(exc.headers)
    if exc.status == 401:
        # Sumo Logic asks for HTTP Basic credentials (the access id and key).
        headers["WWW-Authenticate"] = 'Basic realm="orgplane"'
    fields = [(e.field, e.message) for e in exc.errors]
    return sumo_error(exc.status, exc.detail, headers=headers, fields=fields)


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    fields = [
        (str(item.get("key") or item.get("source") or "body"), str(item.get("message")))
        for item in exc.extra or []
        if isinstance(item, dict)
    ]
    return sumo_error(400, str(exc.detail), fields=fields)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return sumo_error(exc.status_code, str(exc.detail), headers=exc.headers)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    OrgplaneError: _orgplane_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
}


class NotSupported(OrgplaneError):
    """An operation of Sumo Logic's that orgplane cannot honestly perform."""

    status = 501
    code = "not_implemented_yet"
    title = "Not implemented"
