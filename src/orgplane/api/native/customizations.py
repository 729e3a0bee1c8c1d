"""Per-org customizations: read, replace (PUT), merge (PATCH, RFC 7396), and the JSON Schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request, Response, Router, get, patch, put
from litestar.openapi.spec import (
    ExternalDocumentation,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.native.openapi import PublicOperation, problems
from orgplane.api.native.orgs import IfMatch, OrgId
from orgplane.core.access.service import reach
from orgplane.core.customizations import service as customizations
from orgplane.core.errors import InvalidInput
from orgplane.core.orgs.service import etag

SCHEMA_PATH = "/schemas/customizations.json"
_SCHEMA_NOTE = f" The document must match the JSON Schema at `{SCHEMA_PATH}`."


def _with_body(*media_types: str) -> type[Operation]:
    """The operation class for a handler that reads its JSON body itself (after authenticating).

    Litestar documents a request body only for a ``data`` parameter, which it would decode before
    the credentials are checked; this declares the body in the OpenAPI document instead.
    """

    @dataclass
    class WithDocumentBody(Operation):
        def __post_init__(self) -> None:
            schema = Schema(
                type=OpenAPIType.OBJECT,
                description="A customizations document." + _SCHEMA_NOTE,
                external_docs=ExternalDocumentation(url=SCHEMA_PATH),
            )
            self.request_body = RequestBody(
                content={m: OpenAPIMediaType(schema=schema) for m in media_types}, required=True
            )

    return WithDocumentBody


def _document(row: Any) -> Response[dict[str, Any]]:
    return Response(row.customizations, headers={"ETag": etag(row)})


async def _json_body(request: Request[Any, Any, Any]) -> Any:
    try:
        return await request.json()
    except Exception:
        raise InvalidInput.for_field("body", "must be a JSON object") from None


@get("/{org_id:str}/customizations", summary="Get customizations", responses=problems())
async def get_customizations(
    org_id: OrgId, services: ServicesDep, principal: PrincipalDep
) -> Response[dict[str, Any]]:
    async with services.db.read() as conn:
        row = await reach(conn, principal, org_id, scope="orgs:read")
    return _document(row)


@put(
    "/{org_id:str}/customizations",
    summary="Replace customizations",
    responses=problems(412),
    description="Replaces the whole document." + _SCHEMA_NOTE,
    operation_class=_with_body("application/json"),
)
async def put_customizations(
    org_id: OrgId,
    request: Request[Any, Any, Any],
    services: ServicesDep,
    actor: ActorDep,
    if_match: IfMatch = None,
) -> Response[dict[str, Any]]:
    document = await _json_body(request)
    row = await services.db.transaction(
        customizations.replace, actor, org_id, document, if_match=if_match
    )
    return _document(row)


@patch(
    "/{org_id:str}/customizations",
    summary="Merge into customizations",
    responses=problems(412),
    description="JSON Merge Patch (RFC 7396): members set to null are removed, arrays and "
    "other values replace." + _SCHEMA_NOTE,
    operation_class=_with_body("application/merge-patch+json", "application/json"),
)
async def patch_customizations(
    org_id: OrgId,
    request: Request[Any, Any, Any],
    services: ServicesDep,
    actor: ActorDep,
    if_match: IfMatch = None,
) -> Response[dict[str, Any]]:
    changes = await _json_body(request)
    row = await services.db.transaction(
        customizations.patch, actor, org_id, changes, if_match=if_match
    )
    return _document(row)


@get(
    SCHEMA_PATH,
    summary="JSON Schema of customizations",
    tags=["schemas"],
    media_type="application/schema+json",
    operation_class=PublicOperation,
)
async def customizations_schema() -> dict[str, Any]:
    return customizations.schema()


router = Router(
    path="/orgs",
    route_handlers=[get_customizations, put_customizations, patch_customizations],
    tags=["customizations"],
)
