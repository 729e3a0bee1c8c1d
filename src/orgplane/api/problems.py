"""Every error the native surface returns is RFC 9457 problem+json; never a bare 500 page."""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException

from orgplane.api.native.schemas import Problem
from orgplane.core.errors import OrgplaneError

log = logging.getLogger("orgplane.errors")
PROBLEM_MEDIA_TYPE = "application/problem+json"
_TITLES = {
    400: "Invalid input",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    412: "Precondition failed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}
_AT = re.compile(r"\s*-\s*at\s*`\$(?P<path>[^`]*)`")
# msgspec names the member itself for unknown and missing fields.
_MEMBER = re.compile(r"(?:unknown|missing required) field `(?P<name>[^`]*)`")


def problem_response(
    request: Request[Any, Any, Any],
    status: int,
    detail: str,
    *,
    code: str | None = None,
    title: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    body = Problem(
        type=f"https://orgplane.dev/problems/{code or _slug(status)}",
        title=title or _TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        instance=request.url.path,
        request_id=request.scope.get("state", {}).get("request_id"),
        errors=errors or [],
    )
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _slug(status: int) -> str:
    return _TITLES.get(status, "error").lower().replace(" ", "_")


def handle_orgplane_error(request: Request[Any, Any, Any], exc: OrgplaneError) -> Response[Any]:
    return problem_response(
        request,
        exc.status,
        exc.detail,
        code=exc.code,
        title=exc.title,
        errors=[e.as_dict() for e in exc.errors],
        headers=exc.headers,
    )


def _field_from_message(message: str, source: Any, key: str | None) -> tuple[str, str]:
    """Name the bad field: body members as in the JSON (``tags[0]``), others as ``query.limit``.

    msgspec reports ``Expected `int`, got `str` - at `$.tags[0]```; the path becomes the name.
    """
    source = getattr(source, "value", source) or "body"
    match = _AT.search(message)
    reason = _AT.sub("", message).strip()
    path = match.group("path").lstrip(".") if match else ""
    if source == "body":
        # Litestar strips msgspec's "- at `$...`" and passes the member as ``key`` ("data" = root).
        member = path or (key if key and key != "data" else "")
        named = _MEMBER.search(reason)
        if named:
            member = f"{member}.{named.group('name')}" if member else named.group("name")
        return member or "body", reason
    if key:
        return f"{source}.{key}" + (f".{path}" if path else ""), reason
    return source, reason


def invalid_fields(exc: ValidationException) -> list[dict[str, str]]:
    """Each field Litestar found invalid, named as the client sent it, and why."""
    errors = []
    for item in exc.extra or []:
        if isinstance(item, dict):
            field, reason = _field_from_message(
                str(item.get("message", "")), item.get("source"), item.get("key")
            )
            errors.append({"field": field, "message": reason})
    return errors


def handle_validation_error(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[Any]:
    errors = invalid_fields(exc)
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or str(exc.detail)
    return problem_response(request, 400, detail, code="invalid_input", errors=errors)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    detail = str(exc.detail)
    if status == 400 and (
        isinstance(exc.__cause__, SerializationException) or "JSON" in detail.upper()
    ):
        # Litestar turns a body that does not decode into a bare ClientException.
        detail = f"the request body is not valid JSON: {detail}"
        return problem_response(
            request,
            status,
            detail,
            errors=[{"field": "body", "message": "not valid JSON"}],
            headers=exc.headers,
        )
    elif status == 404:
        detail = f"no route {request.method} {request.url.path}"
    elif status == 413:
        detail = "the request body is larger than this server accepts"
    return problem_response(request, status, detail, headers=exc.headers)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(request, 500, "an unexpected error occurred; it has been logged")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    OrgplaneError: handle_orgplane_error,
    ValidationException: handle_validation_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
