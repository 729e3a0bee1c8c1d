"""Audit and access logs: filtered keyset pages, or the whole range as NDJSON or CSV."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Request, Router, get
from litestar.params import FromQuery, QueryParameter
from litestar.response import Stream

from orgplane.api.deps import PrincipalDep, Services, ServicesDep
from orgplane.api.native.exports import EXPORT_DOC, export_format, export_response
from orgplane.api.native.openapi import problems
from orgplane.api.native.orgs import Cursor, Limit, OrgId
from orgplane.api.native.schemas import (
    AccessLogEntry,
    AccessLogPage,
    AuditEntry,
    AuditPage,
)
from orgplane.core.access.principal import Principal
from orgplane.core.audit import queries
from orgplane.core.pagination import DEFAULT_LIMIT

Since = Annotated[
    datetime | None, QueryParameter(description="Only entries at or after (ISO 8601)")
]
Until = Annotated[datetime | None, QueryParameter(description="Only entries before (ISO 8601)")]
ActorFilter = Annotated[
    str | None, QueryParameter(name="actor", max_length=200, description="e.g. key:key_abc")
]
ActionFilter = Annotated[
    str | None, QueryParameter(max_length=64, description="Exact, or a prefix ending in *")
]


def audit_out(row: Any, org_public_id: str) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        seq=row.seq,
        timestamp=row.at,
        org_id=getattr(row, "org_public_id", None) or org_public_id,
        actor=row.actor,
        actor_key_id=row.actor_key_id,
        action=row.action,
        target_type=row.target_type,
        target_id=row.target_id,
        before=row.before,
        after=row.after,
        request_id=row.request_id,
        ip=row.ip,
        user_agent=row.user_agent,
        surface=row.surface,
        hash=row.hash,
    )


def access_out(row: Any) -> AccessLogEntry:
    return AccessLogEntry(
        id=row.id,
        timestamp=row.at,
        user=row.actor,
        key_id=row.key_id,
        action=row.action,
        status=row.status,
        method=row.method,
        path=row.path,
        ip=row.ip,
        user_agent=row.user_agent,
        detail=row.detail,
    )


async def _respond(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    principal: PrincipalDep,
    org_id: str,
    log: queries.Log,
    filters: queries.LogFilters,
    limit: int,
    cursor: str | None,
) -> Any:
    if log == "access":
        await services.access_log.flush()
    async with services.db.read() as conn:
        org = await queries.target(conn, principal, org_id, log)
        fmt = export_format(request)
        if fmt is None:
            rows, next_cursor = await queries.page(
                conn, principal, org, log, filters, limit=limit, cursor=cursor
            )
    if fmt is None:
        render = access_out if log == "access" else (lambda r: audit_out(r, org.public_id))
        data = [render(r) for r in rows]
        page_type = AccessLogPage if log == "access" else AuditPage
        return page_type(data, next_cursor)  # type: ignore[arg-type]
    return export_log(services, principal, org, log, filters, fmt)


def export_log(
    services: Services,
    principal: Principal,
    org: Any,
    log: queries.Log,
    filters: queries.LogFilters,
    fmt: str,
) -> Stream:
    """The whole filtered range of an org's log, streamed as NDJSON or CSV."""
    filters = filters.check()
    render = access_out if log == "access" else (lambda r: audit_out(r, org.public_id))
    entry_type = AccessLogEntry if log == "access" else AuditEntry
    return export_response(
        services.db,
        fmt,
        lambda conn: queries.stream(conn, principal, org, log, filters),
        render,
        entry_type,
        f"{org.public_id}-{log}",
    )


@get(
    "/{org_id:str}/audit",
    summary="The organization's own audit trail",
    responses=problems(),
    description="Changes made to this organization." + EXPORT_DOC,
)
async def get_audit(
    org_id: OrgId,
    request: Request[Any, Any, Any],
    services: ServicesDep,
    principal: PrincipalDep,
    since: Since = None,
    until: Until = None,
    actor_filter: ActorFilter = None,
    action: ActionFilter = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> AuditPage:
    filters = queries.LogFilters(since, until, actor_filter, action)
    result: AuditPage = await _respond(
        request, services, principal, org_id, "audit", filters, limit, cursor
    )
    return result


@get(
    "/{org_id:str}/children_audit",
    summary="Audit trail of all descendants",
    responses=problems(),
    description="Changes made to any organization below this one." + EXPORT_DOC,
)
async def get_children_audit(
    org_id: OrgId,
    request: Request[Any, Any, Any],
    services: ServicesDep,
    principal: PrincipalDep,
    since: Since = None,
    until: Until = None,
    actor_filter: ActorFilter = None,
    action: ActionFilter = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> AuditPage:
    filters = queries.LogFilters(since, until, actor_filter, action)
    result: AuditPage = await _respond(
        request, services, principal, org_id, "children_audit", filters, limit, cursor
    )
    return result


@get(
    "/{org_id:str}/access_log",
    summary="Authentication attempts with this org's keys",
    responses=problems(),
    description="Every sign-in and key use, success and failure." + EXPORT_DOC,
)
async def get_access_log(
    org_id: OrgId,
    request: Request[Any, Any, Any],
    services: ServicesDep,
    principal: PrincipalDep,
    since: Since = None,
    until: Until = None,
    actor_filter: ActorFilter = None,
    action: ActionFilter = None,
    status: FromQuery[Literal["SUCCESS", "FAILURE", "success", "failure"] | None] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> AccessLogPage:
    filters = queries.LogFilters(since, until, actor_filter, action, status)
    result: AccessLogPage = await _respond(
        request, services, principal, org_id, "access", filters, limit, cursor
    )
    return result


router = Router(
    path="/orgs", route_handlers=[get_audit, get_children_audit, get_access_log], tags=["logs"]
)
