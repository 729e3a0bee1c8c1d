"""Native API key endpoints: create (secret shown once), list, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Router, delete, get, post
from litestar.params import FromQuery, JSONBody, PathParameter
from msgspec import UNSET

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.native.openapi import problems
from orgplane.api.native.orgs import Cursor, Limit, OrgId
from orgplane.api.native.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPage, key_out
from orgplane.core.credentials import service as key_service
from orgplane.core.errors import InvalidInput
from orgplane.core.pagination import DEFAULT_LIMIT


@post(
    "/{org_id:str}/api_keys",
    summary="Create an API key",
    status_code=201,
    responses=problems(),
    description="The secret is in `api_key` of this response only (and, for a vendor kind, "
    "under the vendor's names: `token`; `api_key` + `application_key`; `access_id` + "
    "`access_key`); orgplane stores its hash. "
    "A key can only grant scopes its creator holds, and cannot outlive its creator; without "
    "`expires_at` it expires when its creator does.",
)
async def create_key(
    org_id: OrgId, data: JSONBody[ApiKeyCreate], services: ServicesDep, actor: ActorDep
) -> ApiKeyCreated:
    if isinstance(data.expires_at, datetime) and data.expires_at.tzinfo is None:
        raise InvalidInput.for_field("expires_at", "must include a time zone, e.g. 'Z'")
    created = await services.db.transaction(
        key_service.mint,
        actor=actor,
        org_ref=org_id,
        name=data.name,
        kind=data.kind,
        scopes=data.scopes,
        expires_at=key_service.FROM_CREATOR if data.expires_at is UNSET else data.expires_at,
        user_ref=data.user_id,
    )
    out = key_out(created.row, org_id)
    fields: dict[str, Any] = {f: getattr(out, f) for f in out.__struct_fields__}
    # Datadog's own api_key (its half of the pair) replaces the combined secret.
    fields["api_key"] = created.secret
    fields.update(created.vendor)
    return ApiKeyCreated(**fields)


@get("/{org_id:str}/api_keys", summary="List API keys", responses=problems())
async def list_keys(
    org_id: OrgId,
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    include_revoked: FromQuery[bool] = False,
) -> ApiKeyPage:
    async with services.db.read() as conn:
        rows, next_cursor = await key_service.list_keys(
            conn, principal, org_id, limit=limit, cursor=cursor, include_revoked=include_revoked
        )
    return ApiKeyPage([key_out(r, org_id) for r in rows], next_cursor)


@delete(
    "/{org_id:str}/api_keys/{key_id:str}",
    summary="Revoke an API key",
    status_code=204,
    responses=problems(409),
    description="A key may revoke itself, except the tenant root's last live key able to manage "
    "keys (`keys:write` or `*`): that answers 409, since only the operator's CLI could mint "
    "another. Create its replacement first.",
)
async def revoke_key(
    org_id: OrgId,
    key_id: Annotated[str, PathParameter(max_length=64)],
    services: ServicesDep,
    actor: ActorDep,
) -> None:
    await services.db.transaction(key_service.revoke, actor=actor, org_ref=org_id, key_ref=key_id)


router = Router(path="/orgs", route_handlers=[create_key, list_keys, revoke_key], tags=["api keys"])
