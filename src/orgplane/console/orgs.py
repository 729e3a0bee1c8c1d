"""An org's pages: overview and editing, the tree, consumption and allocations.

Every read is a core query and every change one core command in one transaction, as on the
API; a refusal is shown on the page where the person acted.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template
from msgspec import Struct

from orgplane.api.deps import ServicesDep
from orgplane.console.charts import month_chart
from orgplane.console.render import page
from orgplane.console.session import PATH, CallerDep, OrgId, ViewerDep
from orgplane.core.access.service import reach
from orgplane.core.credits import allocation
from orgplane.core.credits.ledger import balances, credits_report
from orgplane.core.errors import InvalidInput, OrgplaneError, PreconditionFailed
from orgplane.core.orgs import queries
from orgplane.core.orgs import service as org_service
from orgplane.core.usage import consumption

CHILDREN_PAGE = 50


async def _children(
    services: ServicesDep,
    viewer: ViewerDep,
    org_id: str,
    name: str | None,
    cursor: str | None,
    *,
    deleted: bool = False,
) -> dict[str, Any]:
    """A page of the org's children (live, or deleted ones), each with its utilization."""
    async with services.db.read() as conn:
        children = await queries.list_children(
            conn, viewer, org_id, limit=CHILDREN_PAGE, cursor=cursor, name=name or None,
            status="deleted" if deleted else None,
        )  # fmt: skip
        bars = {} if deleted else await consumption.utilization(conn, viewer, org_id, children.rows)
    return {
        "children": children.rows,
        "next_cursor": children.next_cursor,
        "utilization": bars,
        "query": name or "",
        "deleted": deleted,
    }


async def _overview(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    org_id: OrgId,
    *,
    status_code: int = 200,
    **context: Any,
) -> Template:
    async with services.db.read() as conn:
        org = await reach(conn, viewer, org_id, scope="orgs:read")
        trail = await queries.lineage(conn, viewer, org)
    params = request.query_params
    listing = await _children(
        services, viewer, org_id, params.get("q"), params.get("cursor"),
        deleted=params.get("status") == "deleted",
    )  # fmt: skip
    return page(
        request, viewer, "org.html", status_code=status_code, org=org, trail=trail,
        etag=org_service.etag(org), tab="overview", **listing, **context,
    )  # fmt: skip


@get("/", name="console:home")
async def home(viewer: ViewerDep) -> Redirect:
    return Redirect(f"{PATH}/orgs/{viewer.org_public_id}")


@get("/orgs/{org_id:str}", name="console:org")
async def overview(
    request: Request[Any, Any, Any], services: ServicesDep, viewer: ViewerDep, org_id: OrgId
) -> Template:
    return await _overview(request, services, viewer, org_id)


class OrgEdit(Struct):
    name: str = ""
    description: str = ""
    tags: str = ""
    etag: str = ""


@post("/orgs/{org_id:str}", status_code=200)
async def edit(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
    data: Annotated[OrgEdit, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Template | Redirect:
    tags = [t.strip() for t in data.tags.replace("\n", ",").split(",") if t.strip()]
    changes = {"name": data.name, "description": data.description, "tags": tags}
    try:
        await services.db.transaction(
            org_service.update, actor=caller, org_ref=org_id, changes=changes,
            if_match=data.etag or None,
        )  # fmt: skip
    except PreconditionFailed:
        return await _overview(
            request, services, viewer, org_id, status_code=409,
            edit_error="Someone changed this organization while you were editing it. The page "
            "now shows their version: apply your change to it again.",
        )  # fmt: skip
    except OrgplaneError as exc:
        return await _overview(
            request, services, viewer, org_id, status_code=exc.status,
            edit_error=str(exc), draft=data,
        )  # fmt: skip
    return Redirect(f"{PATH}/orgs/{org_id}?saved=1", status_code=303)


@get("/orgs/{org_id:str}/children", name="console:children")
async def children_fragment(
    request: Request[Any, Any, Any], services: ServicesDep, viewer: ViewerDep, org_id: OrgId
) -> Template:
    """A level of the tree, loaded when it is opened."""
    listing = await _children(services, viewer, org_id, None, request.query_params.get("cursor"))
    return page(request, viewer, "tree_level.html", org_id=org_id, **listing)


@get("/tree", name="console:tree")
async def tree(
    request: Request[Any, Any, Any], services: ServicesDep, viewer: ViewerDep
) -> Template:
    async with services.db.read() as conn:
        top = await reach(conn, viewer, viewer.org_public_id, scope="orgs:read")
    listing = await _children(services, viewer, top.public_id, None, None)
    return page(request, viewer, "tree.html", top=top, org_id=top.public_id, **listing)


SORTS = {
    "name": lambda row: row["org"].name.lower(),
    "utilization": lambda row: -(row["utilization"] or 0),
    "burn": lambda row: -row["burn"],
}


@get("/orgs/{org_id:str}/consumption", name="console:consumption")
async def consumption_page(
    request: Request[Any, Any, Any], services: ServicesDep, viewer: ViewerDep, org_id: OrgId
) -> Template:
    period = request.query_params.get("period") or None
    sort = request.query_params.get("sort", "utilization")
    if sort not in SORTS:
        raise InvalidInput.for_field("query.sort", f"must be one of {', '.join(SORTS)}")
    async with services.db.read() as conn:
        org = await reach(conn, viewer, org_id, scope="usage:read")
        trail = await queries.lineage(conn, viewer, org)
        month = await consumption.daily(conn, viewer, org_id, period=period)
        subtree = await consumption.report(conn, viewer, org_id, period=period, rollup="subtree")
        by_child = await consumption.report(conn, viewer, org_id, period=period, rollup="children")
    charts = [
        {**m, "chart": month_chart(month["days"], m["daily"], m["limit"], month["today"])}
        for m in month["meters"]
        if any(m["daily"]) or m["limit"] is not None
    ]
    elapsed = max(1, by_child["days_elapsed"])
    rows = []
    for entry in by_child["entries"]:
        for m in entry["meters"]:
            if m["consumed"] or m["limit"] is not None:
                rows.append(
                    {"org": entry["org"], "meter": m["meter"], "consumed": m["consumed"],
                     "limit": m["limit"], "utilization": m["utilization_pct"],
                     "forecast": m["forecast"], "burn": m["consumed"] / elapsed}
                )  # fmt: skip
    rows.sort(key=SORTS[sort])
    return page(
        request, viewer, "consumption.html", org=org, trail=trail, tab="consumption",
        charts=charts, subtree=subtree, rows=rows, sort=sort, period=month["period"],
    )  # fmt: skip


async def _allocations(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    org_id: OrgId,
    *,
    status_code: int = 200,
    **context: Any,
) -> Template:
    async with services.db.read() as conn:
        org, pools = await credits_report(conn, viewer, org_id)
        trail = await queries.lineage(conn, viewer, org)
        children = await queries.list_children(conn, viewer, org_id, limit=200)
        ids = [c.id for c in children.rows]
        held = {p["meter"]: await balances(conn, ids, p["meter"]) for p in pools}
    return page(
        request, viewer, "allocations.html", status_code=status_code, org=org, trail=trail,
        tab="allocations", pools=[p for p in pools if p["limit"] is not None],
        children=children.rows, more=children.next_cursor is not None, held=held, **context,
    )  # fmt: skip


@get("/orgs/{org_id:str}/allocations", name="console:allocations")
async def allocations_page(
    request: Request[Any, Any, Any], services: ServicesDep, viewer: ViewerDep, org_id: OrgId
) -> Template:
    return await _allocations(request, services, viewer, org_id)


class AllocationForm(Struct):
    child: str = ""
    meter: str = ""
    amount: str = ""


@post("/orgs/{org_id:str}/allocations", status_code=200)
async def allocate(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
    data: Annotated[AllocationForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Template | Redirect:
    try:
        amount = int(data.amount.replace(",", "").replace("_", "").strip())
    except ValueError:
        return await _allocations(
            request, services, viewer, org_id, status_code=400, failed=data,
            error="amount: must be a whole number",
        )  # fmt: skip
    try:
        await services.db.transaction(
            allocation.allocate, actor=caller, parent_ref=org_id, child_ref=data.child,
            meter=data.meter, amount=amount,
        )  # fmt: skip
    except OrgplaneError as exc:
        return await _allocations(
            request, services, viewer, org_id, status_code=exc.status, failed=data,
            error=str(exc),
        )  # fmt: skip
    return Redirect(
        f"{PATH}/orgs/{org_id}/allocations?changed={data.child}.{data.meter}", status_code=303
    )


class MoveForm(Struct):
    parent: str = ""


@post("/orgs/{org_id:str}/move", status_code=303)
async def move(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
    data: Annotated[MoveForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Template | Redirect:
    try:
        await services.db.transaction(
            org_service.move, actor=caller, org_ref=org_id, new_parent_ref=data.parent.strip(),
            max_depth=services.settings.max_tree_depth,
        )  # fmt: skip
    except OrgplaneError as exc:
        return await _overview(
            request, services, viewer, org_id, status_code=exc.status, move_error=str(exc),
            move_draft=data.parent,
        )  # fmt: skip
    return Redirect(f"{PATH}/orgs/{org_id}?moved=1", status_code=303)


async def _delete_page(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    org_id: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> Template:
    async with services.db.read() as conn:
        org = await reach(conn, viewer, org_id, scope="orgs:write")
        trail = await queries.lineage(conn, viewer, org)
        reasons = await org_service.in_use(conn, org)
        below = await queries.list_descendants(conn, viewer, org_id, limit=50)
    return page(
        request, viewer, "delete.html", status_code=status_code, org=org, trail=trail,
        tab="overview", reasons=reasons, descendants=below.rows,
        more=below.next_cursor is not None, window=services.settings.restore_window_days,
        **context,
    )  # fmt: skip


@get("/orgs/{org_id:str}/delete", name="console:delete")
async def delete_page(
    request: Request[Any, Any, Any], services: ServicesDep, viewer: ViewerDep, org_id: OrgId
) -> Template:
    """What deleting the org takes with it, spelled out before it happens."""
    return await _delete_page(request, services, viewer, org_id)


@post("/orgs/{org_id:str}/delete", status_code=303)
async def delete(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
) -> Template | Redirect:
    async with services.db.read() as conn:
        org = await reach(conn, viewer, org_id, scope="orgs:read")
    try:
        await services.db.transaction(
            org_service.delete, actor=caller, org_ref=org_id, cascade=True
        )
    except OrgplaneError as exc:
        return await _delete_page(
            request, services, viewer, org_id, status_code=exc.status, error=str(exc)
        )
    return Redirect(
        f"{PATH}/orgs/{org.parent_public_id}?status=deleted&deleted={org_id}", status_code=303
    )


@post("/orgs/{org_id:str}/restore", status_code=303)
async def restore(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
) -> Template | Redirect:
    """Restore a deleted org (from its parent's list of deleted children)."""
    await services.db.transaction(
        org_service.restore, actor=caller, org_ref=org_id,
        window_days=services.settings.restore_window_days,
    )  # fmt: skip
    return Redirect(f"{PATH}/orgs/{org_id}?restored=1", status_code=303)
