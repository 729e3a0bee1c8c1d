"""SCIM plumbing shared by the resources: responses, errors, request bodies, and list
parameters (filter, sort, 1-based paging) from a GET's query or a search's body."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from litestar import Request, Response
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import JSONBody, KwargDefinition, PathParameter, QueryParameter
from msgspec import Struct
from pydantic import ValidationError
from scim2_models import (
    Context,
    InvalidFilterException,
    InvalidValueException,
    ResponseParameters,
    SCIMException,
    ScimFilter,
)

from orgplane.api import mounts
from orgplane.api.body import decode_body
from orgplane.api.deps import PrincipalDep
from orgplane.api.problems import invalid_fields
from orgplane.core.errors import InvalidInput, OrgplaneError

UserRef = Annotated[str, PathParameter(description="The user's id (usr_...)", max_length=64)]
GroupRef = Annotated[str, PathParameter(description="The role's id or system key", max_length=64)]
SchemaRef = Annotated[
    str, PathParameter(description="A schema URN or resource name", max_length=200)
]
MEDIA_TYPE = "application/scim+json"
BASE = mounts.SCIM
PAGE_MAX = 200
SCIM_TYPES = {409: "uniqueness"}
# What a list can be sorted by (SCIM's names are case-insensitive). A list may hold users and
# groups together: a resource without the attribute sorts as if it were empty.
SORT_KEYS: dict[str, Callable[[Any], str | None]] = {
    "username": lambda r: getattr(r, "user_name", None),
    "emails.value": lambda r: getattr(r, "user_name", None),
    "name.givenname": lambda r: getattr(getattr(r, "name", None), "given_name", None),
    "name.familyname": lambda r: getattr(getattr(r, "name", None), "family_name", None),
    "displayname": lambda r: getattr(r, "display_name", None),
}


def _respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[Any]:
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


def handle_invalid_model(_: Request[Any, Any, Any], exc: ValidationError) -> Response[bytes]:
    return _error(400, str(exc).splitlines()[0] if str(exc) else "invalid request", "invalidValue")


def handle_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    """A parameter or a search body of the wrong type: 400 naming each field."""
    fields = "; ".join(f"{e['field']}: {e['message']}" for e in invalid_fields(exc))
    return _error(400, fields or str(exc.detail), "invalidValue")


def handle_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own refusals: a body that is not JSON (400), no route (404, 405), too large."""
    response = _error(
        exc.status_code, str(exc.detail), "invalidSyntax" if exc.status_code == 400 else None
    )
    response.headers.update(exc.headers or {})
    return response


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


def _page(resources: list[Any], q: ScimSearchRequest) -> tuple[list[Any], int, int]:
    if q.sortBy:
        key = SORT_KEYS.get(q.sortBy.lower())
        if key is None:
            raise InvalidValueException(detail=f"sortBy {q.sortBy!r} is not supported")
        descending = (q.sortOrder or "").lower() == "descending"
        resources = sorted(resources, key=lambda r: (key(r) or "").lower(), reverse=descending)
    start = max(1, q.startIndex or 1)
    return resources[start - 1 : start - 1 + _page_size(q)], start, len(resources)


def _page_size(q: ScimSearchRequest) -> int:
    return PAGE_MAX if q.count is None else max(0, min(q.count, PAGE_MAX))


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


def _listed(model: Any, resources: list[Any], q: ScimSearchRequest, params: Any) -> Response[Any]:
    """A ListResponse of ``resources`` after the request's filter, sort and 1-based paging."""
    page, start, total = _page(_filtered(model, resources, q.filter), q)
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


# The parameters of a list (RFC 7644 §3.4.2): in a GET's query, or in a search's body.

_FILTER = 'A filter (RFC 7644 §3.4.2.2), e.g. `userName eq "ada@example.com"`'
_START_INDEX = "1-based index of the first result; below 1 counts as 1"
_COUNT = f"Results per page, at most {PAGE_MAX} (the default); a negative count is 0"
_SORT_BY = "`userName`, `emails.value`, `name.givenName`, `name.familyName` or `displayName`"
_SORT_ORDER = "`ascending` (the default) or `descending`"
_ATTRIBUTES = "The attributes to return (RFC 7644 §3.9), the default set otherwise"
_EXCLUDED = "Attributes to leave out of the default set"


class ScimSearchRequest(Struct, kw_only=True):
    """A search (RFC 7644 §3.4.3): the parameters of a list, in a body."""

    schemas: list[str] | None = None
    filter: Annotated[str | None, KwargDefinition(description=_FILTER)] = None
    startIndex: Annotated[int | None, KwargDefinition(description=_START_INDEX)] = None
    count: Annotated[int | None, KwargDefinition(description=_COUNT)] = None
    sortBy: Annotated[str | None, KwargDefinition(description=_SORT_BY)] = None
    sortOrder: Annotated[str | None, KwargDefinition(description=_SORT_ORDER)] = None
    attributes: Annotated[list[str] | None, KwargDefinition(description=_ATTRIBUTES)] = None
    excludedAttributes: Annotated[list[str] | None, KwargDefinition(description=_EXCLUDED)] = None


# Named as SCIM names them, so that an error names the parameter as the client sent it.
Attributes = Annotated[str | None, QueryParameter(description=_ATTRIBUTES + ", comma-separated")]
ExcludedAttributes = Annotated[str | None, QueryParameter(description=_EXCLUDED)]


def _split(names: str | None) -> list[str] | None:
    return names.split(",") if names else None


def provide_listing(
    principal: PrincipalDep,
    filter: Annotated[str | None, QueryParameter(description=_FILTER)] = None,
    startIndex: Annotated[int | None, QueryParameter(description=_START_INDEX)] = None,
    count: Annotated[int | None, QueryParameter(description=_COUNT)] = None,
    sortBy: Annotated[str | None, QueryParameter(description=_SORT_BY)] = None,
    sortOrder: Annotated[str | None, QueryParameter(description=_SORT_ORDER)] = None,
    attributes: Attributes = None,
    excludedAttributes: ExcludedAttributes = None,
) -> ScimSearchRequest:
    """A GET's list parameters as a search. It takes the principal so that a caller without
    credentials is answered 401 before its query is read."""
    return ScimSearchRequest(
        filter=filter,
        startIndex=startIndex,
        count=count,
        sortBy=sortBy,
        sortOrder=sortOrder,
        attributes=_split(attributes),
        excludedAttributes=_split(excludedAttributes),
    )


def provide_search(principal: PrincipalDep, data: JSONBody[ScimSearchRequest]) -> ScimSearchRequest:
    """A search's list parameters, from its body; like a GET's query, its members are checked
    once the key is."""
    return data


# A list's parameters, the dependency ``q``: a GET's query (``provide_listing``, the router's)
# or a search's body (``provide_search``, the searches').
ListingDep = NamedDependency[ScimSearchRequest]
