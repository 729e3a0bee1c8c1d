"""Make's enums and the translation of their ids to orgplane's values.

- regions (``regionId``): orgplane's deployments, numbered from 1 in the core's list order
  (which only grows at its end);
- zones: one per deployment (same id), each served by this installation (its host is the domain);
- countries (``countryId``): every ISO 3166-1 country of ``pycountry``, its id the ISO numeric
  code (Make's own ids: 4 Afghanistan, 250 France); the org stores the alpha-2 code;
- time zones (``timezoneId``): every IANA zone of ``zoneinfo``/``tzdata``, its id the CRC-32 of
  the zone's name (stable whatever zones a new tzdata adds); the org stores the name.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pycountry
from litestar import Request, get

from orgplane.api.deps import PrincipalDep
from orgplane.api.dialects.make.errors import ERRORS
from orgplane.core.errors import InvalidInput
from orgplane.core.orgs.validation import DEPLOYMENTS

REGIONS: dict[int, str] = {i + 1: name for i, name in enumerate(DEPLOYMENTS)}
_REGION_IDS = {name: i for i, name in REGIONS.items()}


@cache
def _countries() -> tuple[dict[str, Any], ...]:
    return tuple(
        {
            "id": int(c.numeric),
            "name": c.name,
            "code": c.alpha_3,
            "code2": c.alpha_2.lower(),
        }
        for c in sorted(pycountry.countries, key=lambda c: c.name)
    )


@cache
def _country_codes() -> dict[int, str]:
    return {c["id"]: c["code2"].upper() for c in _countries()}


@cache
def _country_ids() -> dict[str, int]:
    return {code: i for i, code in _country_codes().items()}


@cache
def _zone_ids() -> dict[str, int]:
    ids = {name: zlib.crc32(name.encode()) for name in available_timezones() | {"UTC"}}
    if len(set(ids.values())) != len(ids):
        raise RuntimeError("two time zones share an id")
    return ids


@cache
def _zone_names() -> dict[int, str]:
    return {i: name for name, i in _zone_ids().items()}


def region_id(deployment: str) -> int | None:
    return _REGION_IDS.get(deployment)


def country_id(code: str | None) -> int | None:
    return _country_ids().get(code) if code else None


def timezone_id(name: str) -> int | None:
    return _zone_ids().get(name)


def deployment_of(value: int, field: str = "regionId") -> str:
    if value not in REGIONS:
        raise InvalidInput.for_field(
            field, f"unknown region id {value}; see GET /enums/imt-regions"
        )
    return REGIONS[value]


def country_of(value: int, field: str = "countryId") -> str:
    code = _country_codes().get(value)
    if code is None:
        raise InvalidInput.for_field(field, f"unknown country id {value}; see GET /enums/countries")
    return code


def timezone_of(value: int, field: str = "timezoneId") -> str:
    name = _zone_names().get(value)
    if name is None:
        raise InvalidInput.for_field(
            field, f"unknown time zone id {value}; see GET /enums/timezones"
        )
    return name


def _minutes(delta: timedelta | None) -> int:
    return int((delta or timedelta()).total_seconds() // 60)


def _offset(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def timezones(now: datetime) -> list[dict[str, Any]]:
    """Every zone with its UTC offset at ``now``, ordered by offset then name."""
    rows = sorted(
        (_minutes(now.astimezone(ZoneInfo(name)).utcoffset()), name, ident)
        for name, ident in _zone_ids().items()
    )
    out = []
    for minutes, name, ident in rows:
        offset = _offset(minutes)
        label = f"(GMT{offset[:3]}:{offset[3:]}) {name}"
        out.append({"id": ident, "name": label, "code": name, "offset": offset})
    return out


def zone_domain(request: Request[Any, Any, Any]) -> str:
    """The domain a client reaches this installation at (every zone is served here)."""
    return request.headers.get("host") or request.url.netloc


def zone(deployment: str, request: Request[Any, Any, Any]) -> dict[str, Any]:
    return {"id": region_id(deployment), "domain": zone_domain(request), "name": deployment.upper()}


@get("/enums/imt-regions", summary="List regions", responses=ERRORS)
async def list_regions(principal: PrincipalDep) -> dict[str, Any]:
    return {"imtRegions": [{"id": i, "name": name} for i, name in REGIONS.items()]}


@get("/enums/imt-zones", summary="List zones", responses=ERRORS)
async def list_zones(request: Request[Any, Any, Any], principal: PrincipalDep) -> dict[str, Any]:
    return {"imtZones": [zone(name, request) for name in REGIONS.values()]}


@get("/enums/countries", summary="List countries", responses=ERRORS)
async def list_countries(principal: PrincipalDep) -> dict[str, Any]:
    return {"countries": list(_countries())}


@get("/enums/timezones", summary="List time zones", responses=ERRORS)
async def list_timezones(principal: PrincipalDep) -> dict[str, Any]:
    return {"timezones": timezones(datetime.now(UTC))}


HANDLERS = [list_regions, list_zones, list_countries, list_timezones]
