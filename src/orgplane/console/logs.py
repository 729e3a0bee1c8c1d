"""The audit trail and the access log of an org, with the API's filters, and their CSV exports
(the API's own streaming export, authorized by the session)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from litestar import Request, get
from litestar.response import Stream, Template

from orgplane.api.deps import ServicesDep
from orgplane.api.native.exports import CSV
from orgplane.api.native.logs import export_log
from orgplane.console.render import page
from orgplane.console.session import LogKind, OrgId, ViewerDep
from orgplane.core.audit import queries as log_queries
from orgplane.core.errors import InvalidInput
from orgplane.core.orgs import queries

LOG_PAGE = 50
LOGS = {"audit": "audit", "access-log": "access"}


def _time(request: Request[Any, Any, Any], name: str) -> datetime | None:
    value = request.query_params.get(name)
    if not value:
        return None
    try:
        # A browser's datetime-local field: minutes, no zone (read as UTC).
        return datetime.fromisoformat(value if value[-1:] in "Zz" or "+" in value[10:] else
                                      value + "+00:00")  # fmt: skip
    except ValueError:
        raise InvalidInput.for_field(f"query.{name}", "must be a date and time") from None


def _filters(request: Request[Any, Any, Any]) -> log_queries.LogFilters:
    params = request.query_params
    return log_queries.LogFilters(
        since=_time(request, "since"),
        until=_time(request, "until"),
        actor=params.get("actor") or None,
        action=params.get("action") or None,
        status=params.get("status") or None,
    )


def _log(kind: str) -> log_queries.Log:
    if kind not in LOGS:
        raise InvalidInput.for_field("path.log", f"must be one of {', '.join(LOGS)}")
    log: log_queries.Log = LOGS[kind]  # type: ignore[assignment]
    return log


@get("/orgs/{org_id:str}/{kind:str}", name="console:log")
async def log_page(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    org_id: OrgId,
    kind: LogKind,
) -> Template:
    log = _log(kind)
    filters = _filters(request)
    if log == "access":
        await services.access_log.flush()
    async with services.db.read() as conn:
        org = await log_queries.target(conn, viewer, org_id, log)
        trail = await queries.lineage(conn, viewer, org)
        rows, next_cursor = await log_queries.page(
            conn, viewer, org, log, filters, limit=LOG_PAGE,
            cursor=request.query_params.get("cursor"),
        )  # fmt: skip
    chosen = {k: v for k, v in request.query_params.items() if k != "cursor" and v}
    return page(
        request, viewer, "log.html", org=org, trail=trail, tab=kind, kind=kind, rows=rows,
        next_cursor=next_cursor, filters=request.query_params, chosen=urlencode(chosen),
    )  # fmt: skip


@get("/orgs/{org_id:str}/{kind:str}/export", name="console:log-csv")
async def log_csv(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    org_id: OrgId,
    kind: LogKind,
) -> Stream:
    log = _log(kind)
    async with services.db.read() as conn:
        org = await log_queries.target(conn, viewer, org_id, log)
    return export_log(services, viewer, org, log, _filters(request), CSV)
