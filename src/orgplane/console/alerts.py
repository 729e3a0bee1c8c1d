"""An org's usage alerts: per meter, the thresholds (percentages of the org's limit) and their
scope, each threshold's state, the meter's utilization this month, and forms to set and delete
them.

Every read is a core query and every change one core command (core/alerts/service.py, the same
the API calls); a refusal is shown on the meter's form, naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.params import PathParameter
from litestar.response import Redirect, Template

from orgplane.api.deps import ServicesDep
from orgplane.console.render import page, refusal
from orgplane.console.session import PATH, CallerDep, OrgId, ViewerDep
from orgplane.core.access.service import allows, reach
from orgplane.core.alerts import service as alerts
from orgplane.core.credits.meters import list_meters
from orgplane.core.errors import OrgplaneError
from orgplane.core.orgs import queries
from orgplane.core.usage import consumption

MeterRef = Annotated[str, PathParameter(description="A meter's name", max_length=64)]


def _thresholds(text: str) -> list[Any]:
    """Percentages typed separated by commas or spaces; what is not a whole number is passed
    on as typed, for the core to name."""
    values: list[Any] = []
    for token in text.replace(",", " ").split():
        try:
            values.append(int(token))
        except ValueError:
            values.append(token)
    return values


async def _alerts_page(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    org_id: OrgId,
    *,
    status_code: int = 200,
    **context: Any,
) -> Template:
    async with services.db.read() as conn:
        org = await reach(conn, viewer, org_id, scope="credits:read")
        trail = await queries.lineage(conn, viewer, org)
        meters = await list_meters(conn)
        found = {a.meter: a for a in await alerts.list_alerts(conn, viewer, org_id)}
        usage: dict[str, dict[str, Any]] = {}
        if allows(viewer, "usage:read"):
            # The consumption tab's numbers: the org's own, and with its descendants'.
            rollups: tuple[tuple[str, consumption.Rollup], ...] = (
                ("org", "self"),
                ("subtree", "subtree"),
            )
            for scope, rollup in rollups:
                report = await consumption.report(conn, viewer, org_id, rollup=rollup)
                usage[scope] = {m["meter"]: m for m in report["entries"][0]["meters"]}
                usage["period"] = report["period"]
    return page(
        request, viewer, "alerts.html", status_code=status_code, org=org, trail=trail,
        tab="alerts", meters=meters, alerts=found, usage=usage,
        defaults=", ".join(map(str, alerts.DEFAULT_THRESHOLDS)), **context,
    )  # fmt: skip


@get("/orgs/{org_id:str}/alerts", name="console:alerts")
async def alerts_page(
    request: Request[Any, Any, Any], services: ServicesDep, viewer: ViewerDep, org_id: OrgId
) -> Template:
    return await _alerts_page(request, services, viewer, org_id)


@post("/orgs/{org_id:str}/alerts/{meter:str}", status_code=303)
async def set_alert(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
    meter: MeterRef,
) -> Template | Redirect:
    form = await request.form()
    draft = {"thresholds": str(form.get("thresholds", "")), "scope": str(form.get("scope", ""))}
    try:
        await services.db.transaction(
            alerts.set_alert, actor=caller, org_ref=org_id, meter=meter,
            thresholds=_thresholds(draft["thresholds"]), scope=draft["scope"],
        )  # fmt: skip
    except OrgplaneError as exc:
        return await _alerts_page(
            request, services, viewer, org_id, status_code=exc.status, failed=meter,
            error=refusal(exc), draft=draft,
        )  # fmt: skip
    return Redirect(f"{PATH}/orgs/{org_id}/alerts?saved={meter}", status_code=303)


@post("/orgs/{org_id:str}/alerts/{meter:str}/delete", status_code=303)
async def delete_alert(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    viewer: ViewerDep,
    caller: CallerDep,
    org_id: OrgId,
    meter: MeterRef,
) -> Template | Redirect:
    try:
        await services.db.transaction(
            alerts.delete_alert, actor=caller, org_ref=org_id, meter=meter
        )
    except OrgplaneError as exc:
        return await _alerts_page(
            request, services, viewer, org_id, status_code=exc.status, failed=meter,
            error=refusal(exc),
        )  # fmt: skip
    return Redirect(f"{PATH}/orgs/{org_id}/alerts?deleted={meter}", status_code=303)
