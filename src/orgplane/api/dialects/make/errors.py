"""Make's error body ``{"detail", "message", "code"}`` with the status orgplane decided; 429 is
Make's plain-text message."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap
from msgspec import Struct

from orgplane.api.dialects.openapi import vendor_errors
from orgplane.core.errors import OrgplaneError

RATE_LIMIT_TEXT = "Requests limit for organization exceeded, please try again later."


class MakeError(Struct, omit_defaults=True):
    """Make's error body."""

    detail: str
    message: str
    code: str
    suberrors: list[dict[str, str]] | None = None


_DESCRIPTIONS = {
    400: "IM005: invalid input; `suberrors` names each bad field",
    401: "IM102: missing or invalid token",
    403: "SC403: the token lacks the scope",
    404: "SC404: no such organization or user within the token's reach",
    409: "SC409: the change conflicts with the current state (e.g. the pool is short)",
}
ERRORS = vendor_errors(MakeError, _DESCRIPTIONS) | vendor_errors(
    str, {429: RATE_LIMIT_TEXT}, media_type="text/plain"
)
DELETE_ERRORS = ERRORS | vendor_errors(
    MakeError, {406: "IM004: the organization is in use; repeat with `confirmed=true`"}
)

_CODES = {
    400: ("IM005", "Invalid input parameters"),
    401: ("IM102", "Invalid credentials"),
    403: ("SC403", "Permission denied"),
    404: ("SC404", "Not found"),
    406: ("IM004", "Confirmation required"),
    409: ("SC409", "Conflict"),
}


def make_error(
    status: int,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    suberrors: list[str] | None = None,
) -> Response[Any]:
    if status == 429:
        return Response(RATE_LIMIT_TEXT, status_code=429, media_type="text/plain", headers=headers)
    code, message = _CODES.get(status, (f"SC{status}", "Error"))
    body: dict[str, Any] = {"detail": detail, "message": message, "code": code}
    if suberrors:
        body["suberrors"] = [{"message": m} for m in suberrors]
    return Response(
        msgspec.json.encode(body),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _orgplane_error(_: Request[Any, Any, Any], exc: OrgplaneError) -> Response[Any]:
    suberrors = [f"{e.field}: {e.message}" for e in exc.errors]
    return make_error(exc.status, exc.detail, headers=exc.headers, suberrors=suberrors)


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    messages = [
        f"{item.get('key') or 'body'}: {item.get('message')}"
        for item in exc.extra or []
        if isinstance(item, dict)
    ]
    return make_error(400, "; ".join(messages) or str(exc.detail), suberrors=messages)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return make_error(exc.status_code, str(exc.detail), headers=exc.headers)


HANDLERS: ExceptionHandlersMap = {
    OrgplaneError: _orgplane_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
}
