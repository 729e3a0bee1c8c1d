"""SCIM plumbing shared by the resources: responses, errors, request bodies, and list
parameters (filter, sort, 1-based paging)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.params import PathParameter
from pydantic import ValidationError
from scim2_models import (
    Context,
    InvalidFilterException,
    InvalidValueException,
    ResponseParameters,
    SCIMException,
    ScimFilter,
)

from orgplane.api.body import decode_body
from orgplane.core.errors import InvalidInput, OrgplaneError

UserRef = Annotated[str, PathParameter(description="The user's id (usr_...)", max_length=64)]
GroupRef = Annotated[str, PathParameter(description="The role's id or system key", max_length=64)]
SchemaRef = Annotated[
    str, PathParameter(description="A schema URN or resource name", max_length=200)
]
MEDIA_TYPE = "application/scim+json"
BASE = "/scim/v2"
PAGE_MAX = 200
SCIM_TYPES = {409: "uniqueness"}
SORT_KEYS = {
    "username": lambda u: (u.user_name or "").lower(),
    "emails.value": lambda u: (u.user_name or "").lower(),
    "name.givenname": lambda u: ((u.name and u.name.given_name) or "").lower(),
    "name.familyname": lambda u: ((u.name and u.name.family_name) or "").lower(),
    "displayname": lambda g: (g.display_name or "").lower(),
}


def _respond(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response[bytes]:
    content = json.dumps(body).encode() if body is not None else b""
    return Response(content, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _dump(
    obj: Any, ctx: Context = Context.RESOURCE_QUERY_RESPONSE, params: Any = None
) -> dict[str, Any]:
    data: dict[str, Any] = obj.model_dump(scim_ctx=ctx, response_parameters=params)
    return data


def _params(model: Any, attributes: Any, excluded: Any) -> Any:
    def split(value: Any) -> list[str] | None:
        if not value:
            return None
        if isinstance(value, str):
            value = value.split(",")
        return [v.strip() for v in value if v.strip()]

    data = {"attributes": split(attributes), "excludedAttributes": split(excluded)}
    if not any(data.values()):
        return None
    try:
        return ResponseParameters[model].model_validate(data)
    except (ValidationError, SCIMException) as exc:
        raise InvalidValueException(detail=f"invalid attributes: {exc}") from None


def _error(status: int, detail: str, scim_type: str | None = None) -> Response[bytes]:
    body: dict[str, Any] = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": str(status),
        "detail": detail,
    }
    if scim_type:
        body["scimType"] = scim_type
    return _respond(body, status)


def handle_orgplane_error(_: Request[Any, Any, Any], exc: OrgplaneError) -> Response[bytes]:
    scim_type = SCIM_TYPES.get(exc.status)
    if exc.status == 400:
        scim_type = "invalidValue"
    response = _error(exc.status, exc.detail, scim_type)
    response.headers.update(exc.headers)
    return response


def handle_scim_error(_: Request[Any, Any, Any], exc: SCIMException) -> Response[bytes]:
    return _error(exc.status, exc.detail, exc.scim_type or None)


def handle_validation(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return _error(400, str(exc).splitlines()[0] if str(exc) else "invalid request", "invalidValue")


def handle_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    return _error(exc.status_code, str(exc.detail))


def handle_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return _error(500, "internal server error")


async def _body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = decode_body(raw)
    except InvalidInput as exc:
        raise InvalidValueException(detail=f"the body is not valid JSON: {exc.detail}") from None
    if not isinstance(data, dict):
        raise InvalidValueException(detail="the body must be a JSON object")
    return data


def _validate(model: Any, data: dict[str, Any], ctx: Context) -> Any:
    try:
        return model.model_validate(data, scim_ctx=ctx)
    except ValidationError as exc:
        errors = exc.errors()
        first: dict[str, Any] = dict(errors[0]) if errors else {}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidValueException(detail=f"{loc}: {first.get('msg', 'invalid')}") from None


def _location(request: Request[Any, Any, Any], kind: str, ident: str) -> str:
    return f"{str(request.base_url).rstrip('/')}{BASE}/{kind}/{ident}"


def _page(
    resources: list[Any],
    start_index: int | None,
    count: int | None,
    sort_by: str | None,
    sort_order: str | None,
) -> tuple[list[Any], int, int]:
    if sort_by:
        key = SORT_KEYS.get(sort_by.lower())
        if key is None:
            raise InvalidValueException(detail=f"sortBy {sort_by!r} is not supported")
        resources = sorted(resources, key=key, reverse=(sort_order or "").lower() == "descending")
    start = max(1, start_index or 1)
    size = PAGE_MAX if count is None else max(0, min(count, PAGE_MAX))
    return resources[start - 1 : start - 1 + size], start, len(resources)


def _filtered(model: Any, resources: list[Any], text: str | None) -> list[Any]:
    if not text:
        return resources
    try:
        flt = ScimFilter[model](text)  # type: ignore[valid-type]
    except (InvalidFilterException, ValueError, SCIMException) as exc:
        raise InvalidFilterException(detail=f"invalid filter: {exc}") from None
    try:
        return [r for r in resources if flt.match(r)]
    except SCIMException as exc:
        raise InvalidFilterException(detail=f"invalid filter: {exc}") from None


def _listed(model: Any, resources: list[Any], q: Any, params: Any) -> Any:
    """A ListResponse of ``resources`` after the request's filter, sort and 1-based paging."""
    filtered = _filtered(model, resources, q.get("filter"))
    page, start, total = _page(
        filtered,
        _int(q.get("startIndex"), "startIndex"),
        _int(q.get("count"), "count"),
        q.get("sortBy"),
        q.get("sortOrder"),
    )
    return _respond(_list_response(page, total, start, params))


def _list_response(
    resources: list[Any], total: int, start: int, params: Any = None
) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(resources),
        "Resources": [_dump(r, params=params) for r in resources],
    }


def _int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidValueException(detail=f"{name} must be an integer") from None


async def _search_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    data = await _body(request)
    out: dict[str, Any] = {}
    for key in ("filter", "startIndex", "count", "sortBy", "sortOrder"):
        if data.get(key) is not None:
            out[key] = str(data[key])
    for key in ("attributes", "excludedAttributes"):
        if data.get(key):
            out[key] = list(data[key]) if isinstance(data[key], list) else str(data[key])
    return out
