"""Usage alerts: thresholds of an org's limit of a meter, each firing once per period."""

from __future__ import annotations

from litestar import Router, delete, get, put
from litestar.params import JSONBody

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.native.credits import MeterName
from orgplane.api.native.openapi import problems
from orgplane.api.native.orgs import OrgId
from orgplane.api.native.schemas import UNSET, Alert, AlertList, AlertPut, AlertThreshold
from orgplane.core.alerts import service as alerts


def alert_out(alert: alerts.Alert) -> Alert:
    return Alert(
        org_id=alert.org.public_id,
        meter=alert.meter,
        scope=alert.scope,  # type: ignore[arg-type]
        thresholds=[
            AlertThreshold(t.percent, t.last_fired_period, t.armed) for t in alert.thresholds
        ],
        updated_at=alert.updated_at,
    )


@put(
    "/{org_id:str}/alerts/{meter:str}",
    summary="Set a usage alert",
    responses=problems(),
    description="Thresholds as percentages of the organization's limit of the meter (its "
    "allocation; a root's own limit), the `limit` and `utilization_pct` of its consumption "
    "report. Each fires one `usage.threshold_crossed` event per period when consumption "
    "(`scope=org`: the organization's own; `subtree`: with its descendants') reaches it: once "
    "however long usage stays there, again after a new allocation drops utilization below it, "
    "and anew each period. Replaces the alert's thresholds; those kept keep their state. "
    "Needs `credits:write`.",
)
async def set_alert(
    org_id: OrgId,
    meter: MeterName,
    data: JSONBody[AlertPut],
    services: ServicesDep,
    actor: ActorDep,
) -> Alert:
    alert = await services.db.transaction(
        alerts.set_alert,
        actor=actor,
        org_ref=org_id,
        meter=meter,
        thresholds=None if data.thresholds is UNSET else data.thresholds,
        scope=data.scope,
    )
    return alert_out(alert)


@get("/{org_id:str}/alerts/{meter:str}", summary="Get a usage alert", responses=problems())
async def get_alert(
    org_id: OrgId, meter: MeterName, services: ServicesDep, principal: PrincipalDep
) -> Alert:
    async with services.db.read() as conn:
        alert = await alerts.get_alert(conn, principal, org_id, meter)
    return alert_out(alert)


@get("/{org_id:str}/alerts", summary="The organization's usage alerts", responses=problems())
async def list_alerts(org_id: OrgId, services: ServicesDep, principal: PrincipalDep) -> AlertList:
    async with services.db.read() as conn:
        found = await alerts.list_alerts(conn, principal, org_id)
    return AlertList([alert_out(a) for a in found])


@delete(
    "/{org_id:str}/alerts/{meter:str}",
    summary="Delete a usage alert",
    status_code=204,
    responses=problems(),
)
async def delete_alert(
    org_id: OrgId, meter: MeterName, services: ServicesDep, actor: ActorDep
) -> None:
    await services.db.transaction(alerts.delete_alert, actor=actor, org_ref=org_id, meter=meter)


router = Router(
    path="/orgs",
    route_handlers=[set_alert, get_alert, list_alerts, delete_alert],
    tags=["alerts"],
)
