"""Make's organizations and enums (/make/api/v2), with requests shaped like Make's TypeScript
SDK's (``Token`` auth, ``pg[...]`` and ``cols[]`` queries); each effect is checked natively too."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pycountry

from orgplane.core.bootstrap import create_root_with_admin_key
from support.harness import Harness, start_harness, stop_harness
from support.make import BASE, make_error, make_key, org_key, token

PRAGUE = {"name": "Praha", "regionId": 5, "countryId": 203}


async def enum(h: Harness, secret: str, name: str) -> list[dict[str, Any]]:
    response = await h.client.get(f"{BASE}/enums/{name}", headers=token(secret))
    assert response.status_code == 200, response.text
    body: dict[str, list[dict[str, Any]]] = response.json()
    (values,) = body.values()
    return values


async def test_enums_come_from_the_installed_data(h: Harness) -> None:
    secret = await make_key(h, h.root.org_id, ["usage:read"])
    regions = await enum(h, secret, "imt-regions")
    assert regions[0] == {"id": 1, "name": "au"} and len({r["id"] for r in regions}) == len(regions)
    zones = await enum(h, secret, "imt-zones")
    assert [z["id"] for z in zones] == [r["id"] for r in regions]
    assert zones[0] == {"id": 1, "domain": "orgplane.test", "name": "AU"}

    countries = await enum(h, secret, "countries")
    assert len(countries) == len(pycountry.countries)
    by_id = {c["id"]: c for c in countries}
    assert by_id[250] == {"id": 250, "name": "France", "code": "FRA", "code2": "fr"}
    assert by_id[4]["name"] == "Afghanistan"

    zones_tz = await enum(h, secret, "timezones")
    codes = {z["code"]: z for z in zones_tz}
    assert len(codes) == len(zones_tz) == len({z["id"] for z in zones_tz})
    assert codes["UTC"]["offset"] == "+0000" and codes["UTC"]["name"] == "(GMT+00:00) UTC"
    assert codes["Asia/Kolkata"]["offset"] == "+0530"
    assert codes["Europe/Prague"]["offset"] in ("+0100", "+0200")
    # The same ids on every call.
    again = await enum(h, secret, "timezones")
    assert [z["id"] for z in again] == [z["id"] for z in zones_tz]

    make_error(await h.client.get(f"{BASE}/enums/countries"), 401, "IM102")


async def timezone_id(h: Harness, secret: str, code: str) -> int:
    zones = await enum(h, secret, "timezones")
    return next(int(z["id"]) for z in zones if z["code"] == code)


async def test_organizations_create_list_get_update(h: Harness) -> None:
    secret = await make_key(h, h.root.org_id, ["orgs:write"])
    prague = await timezone_id(h, secret, "Europe/Prague")
    created = await h.client.post(
        f"{BASE}/organizations", json={**PRAGUE, "timezoneId": prague}, headers=token(secret)
    )
    assert created.status_code == 200, created.text
    org = created.json()["organization"]
    assert (org["name"], org["countryId"], org["timezoneId"]) == ("Praha", 203, prague)
    assert org["license"] == {"operations": 0, "transfer": 0}
    assert org["operations"] == "0" and org["teams"] == []
    # A child of the token's org, with region, country and time zone stored.
    children = (await h.client.get(f"/orgs/{h.root.org_id}/children", headers=h.auth())).json()
    native = next(c for c in children["data"] if c["name"] == "Praha")
    assert await org_key(h, native["id"]) == org["id"]
    got = (await h.client.get(f"/orgs/{native['id']}", headers=h.auth())).json()
    assert (got["deployment"], got["country"], got["timezone"]) == ("eu", "CZ", "Europe/Prague")

    await h.client.post(
        f"{BASE}/organizations",
        json={**PRAGUE, "name": "Alpha", "timezoneId": prague},
        headers=token(secret),
    )
    listed = await h.client.get(f"{BASE}/organizations", headers=token(secret))
    assert listed.status_code == 200, listed.text
    assert [o["name"] for o in listed.json()["organizations"]] == ["Alpha", "Praha", "Root"]
    assert set(listed.json()["organizations"][0]) == {"id", "name", "timezoneId"}
    assert listed.json()["pg"] == {"sortBy": "name", "sortDir": "asc", "limit": 10000, "offset": 0}
    paged = await h.client.get(
        f"{BASE}/organizations",
        params={
            "pg[sortBy]": "name",
            "pg[sortDir]": "desc",
            "pg[offset]": 1,
            "pg[limit]": 1,
            "cols[]": ["id", "name", "countryId"],
        },
        headers=token(secret),
    )
    assert paged.json()["organizations"] == [{"id": org["id"], "name": "Praha", "countryId": 203}]
    bad_col = await h.client.get(
        f"{BASE}/organizations", params={"cols[]": "nope"}, headers=token(secret)
    )
    assert "cols[]" in make_error(bad_col, 400, "IM005")["detail"]

    one = await h.client.get(f"{BASE}/organizations/{org['id']}?wait=true", headers=token(secret))
    assert one.status_code == 200 and one.json()["organization"]["name"] == "Praha"

    changed = await h.client.patch(
        f"{BASE}/organizations/{org['id']}",
        json={"name": "Brno", "countryId": 276, "timezoneId": await timezone_id(h, secret, "UTC")},
        headers=token(secret),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["organization"]["countryId"] == 276
    got = (await h.client.get(f"/orgs/{native['id']}", headers=h.auth())).json()
    assert (got["name"], got["country"], got["timezone"]) == ("Brno", "DE", "UTC")

    for body, field in (
        ({"countryId": 1}, "countryId"),
        ({"timezoneId": 7}, "timezoneId"),
        ({"name": " "}, "name"),
    ):
        refused = await h.client.patch(
            f"{BASE}/organizations/{org['id']}", json=body, headers=token(secret)
        )
        assert field in make_error(refused, 400, "IM005")["detail"]
    missing = await h.client.post(
        f"{BASE}/organizations", json={"name": "X"}, headers=token(secret)
    )
    make_error(missing, 400, "IM005")


async def test_organization_delete_needs_confirmation_when_in_use(h: Harness) -> None:
    secret = await make_key(h, h.root.org_id, ["*"])
    idle = await h.create_org(h.root.org_id, "Idle")
    busy = await h.create_org(h.root.org_id, "Busy")
    await h.create_org(busy["id"], "Grandchild")
    idle_key, busy_key = await org_key(h, idle["id"]), await org_key(h, busy["id"])

    refused = await h.client.delete(f"{BASE}/organizations/{busy_key}", headers=token(secret))
    assert "child" in make_error(refused, 406, "IM004")["detail"]
    assert (await h.client.get(f"/orgs/{busy['id']}", headers=h.auth())).status_code == 200

    confirmed = await h.client.delete(
        f"{BASE}/organizations/{busy_key}", params={"confirmed": "true"}, headers=token(secret)
    )
    assert confirmed.status_code == 200 and confirmed.json() == {"organization": busy_key}
    assert (await h.client.get(f"/orgs/{busy['id']}", headers=h.auth())).status_code == 404

    # Members and usage count as "in use" too.
    await h.client.post(
        f"/orgs/{idle['id']}/users", json={"email": "someone@example.com"}, headers=h.auth()
    )
    refused = await h.client.delete(f"{BASE}/organizations/{idle_key}", headers=token(secret))
    assert "member" in make_error(refused, 406, "IM004")["detail"]
    spare = await h.create_org(h.root.org_id, "Spare")
    spare_key = await org_key(h, spare["id"])
    ok = await h.client.delete(f"{BASE}/organizations/{spare_key}", headers=token(secret))
    assert ok.status_code == 200, ok.text
    assert (await h.client.get(f"/orgs/{spare['id']}", headers=h.auth())).status_code == 404


async def test_organization_usage_has_30_daily_points(h: Harness) -> None:
    secret = await make_key(h, h.root.org_id, ["usage:read"])
    child = await h.create_org(h.root.org_id, "Used")
    events = [
        {
            "meter": meter,
            "quantity": quantity,
            "timestamp": datetime.now(UTC).isoformat(),
            "idempotency_key": f"k-{meter}",
        }
        for meter, quantity in (("operations", 40), ("transfer", 1024), ("credits", 2))
    ]
    ingested = await h.client.post(
        f"/orgs/{child['id']}/usage", json={"events": events}, headers=h.auth()
    )
    assert ingested.status_code == 200, ingested.text
    key = await org_key(h, child["id"])
    response = await h.client.get(
        f"{BASE}/organizations/{key}/usage?organizationTimezone=true", headers=token(secret)
    )
    assert response.status_code == 200, response.text
    points = response.json()["data"]
    assert len(points) == 30
    assert points[-1] == {
        "date": datetime.now(UTC).date().isoformat(),
        "operations": 40,
        "dataTransfer": 1024,
        "centicredits": 200,
    }
    assert all(p["operations"] == 0 for p in points[:-1])
    assert [p["date"] for p in points] == sorted(p["date"] for p in points)


async def test_organization_errors_scopes_and_reach(h: Harness) -> None:
    reader = await make_key(h, h.root.org_id, ["orgs:read"])
    child = await h.create_org(h.root.org_id, "Child")
    key = await org_key(h, child["id"])
    body = {**PRAGUE, "timezoneId": 0}
    make_error(
        await h.client.post(f"{BASE}/organizations", json=body, headers=token(reader)), 403, "SC403"
    )
    for method, url in (
        ("PATCH", f"{BASE}/organizations/{key}"),
        ("DELETE", f"{BASE}/organizations/{key}"),
        ("GET", f"{BASE}/organizations/{key}/usage"),
    ):
        response = await h.client.request(method, url, json={"name": "x"}, headers=token(reader))
        make_error(response, 403, "SC403")
    assert (await h.client.get(f"/orgs/{child['id']}", headers=h.auth())).json()["name"] == "Child"

    other = await h.services.db.transaction(create_root_with_admin_key, name="Other tenant")
    foreign = await org_key(h, other.org_id)
    for url in (f"{BASE}/organizations/{foreign}", f"{BASE}/organizations/999999999"):
        make_error(await h.client.get(url, headers=token(reader)), 404, "SC404")
    make_error(await h.client.get(f"{BASE}/organizations/{key}"), 401, "IM102")


async def test_rate_limit_is_makes_plain_text(db_url: str) -> None:
    harness = await start_harness(db_url, rate_limit_per_key="3/minute")
    try:
        secret = await make_key(harness, harness.root.org_id, ["orgs:read"])
        statuses = []
        for _ in range(4):
            response = await harness.client.get(f"{BASE}/organizations", headers=token(secret))
            statuses.append(response.status_code)
        assert statuses == [200, 200, 200, 429]
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == (
            "Requests limit for organization exceeded, please try again later."
        )
        assert 1 <= int(response.headers["retry-after"]) <= 60
    finally:
        await stop_harness(harness)
