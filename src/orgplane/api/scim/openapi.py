"""SCIM in the OpenAPI document: errors in SCIM's Error, request bodies in SCIM's media type and
in plain JSON, the headers a resource comes with.

A search's body is a typed ``data`` (``common.provide_search``), which Litestar describes. The
handlers of creates, replaces and patches read their bodies themselves, after the key is
checked, and parse them with ``scim2-models`` (attribute names are case-insensitive, which no
typed ``data`` could say); their operation classes declare those bodies instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from litestar.datastructures import ResponseHeader
from litestar.di import Provide
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)

from orgplane.api.dialects.openapi import vendor_errors
from orgplane.api.scim.common import MEDIA_TYPE, provide_search
from orgplane.api.scim.shapes import ScimError

MEDIA_TYPES = (MEDIA_TYPE, "application/json")
# The same API keys as the native API's, as a bearer token.
SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}]

_DESCRIPTIONS = {
    400: "Invalid input: `scimType` says what kind (`invalidFilter`, `invalidValue`, "
    "`invalidSyntax`, `mutability`, ...), `detail` names the field",
    401: "Missing or invalid API key",
    403: "The key lacks `users:read` (reads) or `users:write` (changes)",
    404: "No such user, group, resource type or schema in the key's organization",
    409: "Conflicts with the current state (`uniqueness`): the email address or the role name "
    "is taken, the role is still held or is a system role, or the user is the last owner or "
    "administrator",
    413: "Request body too large",
    429: "Rate limit exceeded; see Retry-After",
}


# Documented only (the handlers set them); the value gives the header's schema: a string.
ETAG = ResponseHeader(
    name="ETag", value='W/"1"', description="The user's version", documentation_only=True
)
LOCATION = ResponseHeader(
    name="Location", value="", description="The new resource's URL", documentation_only=True
)

PATCH_OP = Schema(
    title="ScimPatchOp",
    description="Changes to one resource (RFC 7644 §3.5.2), applied in order, all or none. "
    "Attribute names and `op` are case-insensitive.",
    type=OpenAPIType.OBJECT,
    required=["Operations"],
    properties={
        "schemas": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(type=OpenAPIType.STRING),
            contains=Schema(const="urn:ietf:params:scim:api:messages:2.0:PatchOp"),
        ),
        "Operations": Schema(
            type=OpenAPIType.ARRAY,
            min_items=1,
            items=Schema(
                type=OpenAPIType.OBJECT,
                required=["op"],
                properties={
                    "op": Schema(type=OpenAPIType.STRING, enum=["add", "remove", "replace"]),
                    "path": Schema(
                        type=OpenAPIType.STRING,
                        description='The target, e.g. `title` or `members[value eq "usr_..."]`; '
                        "required by remove",
                    ),
                    "value": Schema(
                        description="What to add or replace with: without a path, an object of "
                        "attributes"
                    ),
                },
            ),
        ),
    },
)


def _accepts(operation: Operation, schema: Schema | Reference | None) -> None:
    operation.request_body = RequestBody(
        required=True, content={m: OpenAPIMediaType(schema=schema) for m in MEDIA_TYPES}
    )


@dataclass
class SendsResource(Operation):
    """A create or a replace: the body is the resource the operation answers with (its
    read-only attributes are ignored)."""

    def __post_init__(self) -> None:
        answer = next(r for s, r in (self.responses or {}).items() if s.startswith("2"))
        assert isinstance(answer, OpenAPIResponse) and answer.content
        _accepts(self, answer.content[MEDIA_TYPE].schema)


@dataclass
class SendsPatchOp(Operation):
    """A patch: the body is a PatchOp."""

    def __post_init__(self) -> None:
        _accepts(self, PATCH_OP)


@dataclass
class SendsSearchRequest(Operation):
    """A search: Litestar describes the body from the ``data`` its list parameters are read
    from, in plain JSON only."""

    def __post_init__(self) -> None:
        assert self.request_body is not None and not isinstance(self.request_body, Reference)
        _accepts(self, self.request_body.content["application/json"].schema)


def scim(
    summary: str,
    *errors: int,
    body: type[Operation] = Operation,
    headers: Sequence[ResponseHeader] = (),
) -> dict[str, Any]:
    """A SCIM route handler's options for the document: its summary, SCIM's media type, its
    errors (400, 401, 403, 404, 429, these, and 413 with a body) as SCIM Errors, the headers it
    answers with, and the operation class that declares its body."""
    codes = {400, 401, 403, 404, 429, *errors} | ({413} if body is not Operation else set())
    return {
        "summary": summary,
        "media_type": MEDIA_TYPE,
        "responses": vendor_errors(
            ScimError, {c: _DESCRIPTIONS[c] for c in codes}, media_type=MEDIA_TYPE
        ),
        "response_headers": headers,
        "operation_class": body,
    }


def search(summary: str) -> dict[str, Any]:
    """A search's options: its list parameters come from its body (a 200, not a 201)."""
    return {
        **scim(summary, body=SendsSearchRequest),
        "status_code": 200,
        "dependencies": {"q": Provide(provide_search, sync_to_thread=False)},
    }
