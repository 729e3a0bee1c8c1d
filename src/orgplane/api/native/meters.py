"""Meters: the kinds of quota orgs are given and consume."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Router, get, patch, post
from litestar.params import JSONBody, PathParameter
from msgspec import UNSET, Meta, Struct, UnsetType

from orgplane.api.deps import ActorDep, PrincipalDep, ServicesDep
from orgplane.api.native.openapi import problems
from orgplane.api.native.schemas import set_fields
from orgplane.core.access.service import require_scope
from orgplane.core.credits import meters as meter_service

MeterName = Annotated[str, PathParameter(max_length=64)]
Percentage = Annotated[float, Meta(ge=0, le=100)]


class Meter(Struct):
    name: str
    unit: str
    step: int
    period: str
    enforcement: str
    deployment_charge_pct: float | None
    description: str


class MeterCreate(Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=64)]
    unit: Annotated[str, Meta(min_length=1, max_length=32)]
    step: Annotated[int, Meta(ge=1)] = 1
    period: Literal["month"] = "month"
    enforcement: Literal["soft", "hard"] = "soft"
    deployment_charge_pct: Percentage | None = None
    description: str = ""


class MeterUpdate(Struct, forbid_unknown_fields=True):
    unit: Annotated[str, Meta(min_length=1, max_length=32)] | UnsetType = UNSET
    step: Annotated[int, Meta(ge=1)] | UnsetType = UNSET
    enforcement: Literal["soft", "hard"] | UnsetType = UNSET
    deployment_charge_pct: Percentage | UnsetType | None = UNSET
    description: str | UnsetType = UNSET


def meter_out(row: Any) -> Meter:
    return Meter(**meter_service.describe(row))


@get("/", summary="List meters", responses=problems())
async def list_meters(services: ServicesDep, principal: PrincipalDep) -> list[Meter]:
    require_scope(principal, "meters:read")
    async with services.db.read() as conn:
        return [meter_out(r) for r in await meter_service.list_meters(conn)]


@get("/{name:str}", summary="Get a meter", responses=problems())
async def get_meter(name: MeterName, services: ServicesDep, principal: PrincipalDep) -> Meter:
    require_scope(principal, "meters:read")
    async with services.db.read() as conn:
        return meter_out(await meter_service.get(conn, name))


@post(
    "/",
    summary="Define a meter",
    status_code=201,
    responses=problems(409),
    description="Meters apply to every tenant of the installation: only keys of its first root "
    "organization (the one bootstrap creates) with meters:write may define or change them.",
)
async def create_meter(
    data: JSONBody[MeterCreate], services: ServicesDep, actor: ActorDep
) -> Meter:
    fields = {f: getattr(data, f) for f in data.__struct_fields__}
    return meter_out(await services.db.transaction(meter_service.create, actor, fields))


@patch("/{name:str}", summary="Change a meter", responses=problems(409))
async def update_meter(
    name: MeterName, data: JSONBody[MeterUpdate], services: ServicesDep, actor: ActorDep
) -> Meter:
    return meter_out(
        await services.db.transaction(meter_service.update, actor, name, set_fields(data))
    )


router = Router(
    path="/meters",
    route_handlers=[list_meters, get_meter, create_meter, update_meter],
    tags=["meters"],
)
