"""Usage alerts: PUT/GET/DELETE /orgs/{id}/alerts/{meter}, and usage.threshold_crossed fired once
per threshold and period, re-armed by a new allocation, never twice under concurrent ingests."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from orgplane.models.base import utcnow
from support.harness import Harness
from support.problems import problem

_keys = itertools.count()
CROSSED = "usage.threshold_crossed"


def _ts(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def _ingest(
    h: Harness, org: str, quantity: int, when: datetime | None = None, on: str | None = None
) -> None:
    event = {
        "meter": "credits",
        "quantity": quantity,
        "timestamp": _ts(when or utcnow()),
        "idempotency_key": f"k{next(_keys)}",
    }
    if on is not None:
        event["org_id"] = on
    response = await h.client.post(
        f"/orgs/{org}/usage",
        content=msgspec.json.encode({"events": [event]}),
        headers={**h.auth(), "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


async def _allocate(h: Harness, child: str, amount: int) -> None:
    response = await h.client.put(
        f"/orgs/{h.root.org_id}/children/{child}/allocations/credits",
        json={"amount": amount},
        headers=h.auth(),
    )
    assert response.status_code == 200, response.text


async def _setup(h: Harness, allocation: int = 100) -> dict[str, Any]:
    """A root with 10,000 credits and a child with ``allocation`` of them."""
    response = await h.client.put(
        f"/orgs/{h.root.org_id}/limits/credits", json={"amount": 10_000}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    child = await h.create_org(h.root.org_id, "Child")
    await _allocate(h, child["id"], allocation)
    return child


async def _put(h: Harness, org: str, body: dict[str, Any], key: str | None = None) -> Any:
    return await h.client.put(f"/orgs/{org}/alerts/credits", json=body, headers=h.auth(key))


async def _crossed(h: Harness, org: str | None = None) -> list[dict[str, Any]]:
    """The usage.threshold_crossed events of the tenant (of one org), oldest first."""
    response = await h.client.get(
        f"/orgs/{h.root.org_id}/events", params={"type": CROSSED, "limit": 1000}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    return [
        e["data"]["after"] | {"org_id": e["data"]["org_id"], "actor": e["data"]["actor"]}
        for e in response.json()["data"]
        if org is None or e["data"]["org_id"] == org
    ]


async def test_each_threshold_fires_once_however_long_usage_hovers(h: Harness) -> None:
    child = await _setup(h)
    response = await _put(h, child["id"], {})
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "org"
    assert [t["threshold"] for t in response.json()["thresholds"]] == [50, 80, 100]

    fired: list[list[int]] = []
    for quantity in (40, 9, 1, 5, 24, 1, 10, 10, 1, 50):
        await _ingest(h, child["id"], quantity)
        fired.append([e["threshold"] for e in await _crossed(h)])
    # Consumed: 40, 49, 50, 55, 79, 80, 90, 100, 101, 151.
    assert (
        fired == [[], [], [50], [50], [50], [50, 80], [50, 80], [50, 80, 100]] + [[50, 80, 100]] * 2
    )
    events = await _crossed(h)
    period = utcnow().strftime("%Y-%m")
    assert events == [
        {"meter": "credits", "scope": "org", "threshold": t, "consumed": c, "limit": 100,
         "utilization_pct": float(c), "period": period, "org_id": child["id"], "actor": "system"}
        for t, c in ((50, 50), (80, 80), (100, 100))
    ]  # fmt: skip
    # The same figures as the consumption report's.
    report = await h.client.get(f"/orgs/{child['id']}/consumption", headers=h.auth())
    (credits,) = [m for m in report.json()["entries"][0]["meters"] if m["meter"] == "credits"]
    assert (credits["consumed"], credits["limit"]) == (151, 100)
    state = (await h.client.get(f"/orgs/{child['id']}/alerts/credits", headers=h.auth())).json()
    assert state["thresholds"] == [
        {"threshold": t, "last_fired_period": period, "armed": False} for t in (50, 80, 100)
    ]


async def test_a_new_allocation_rearms_what_usage_is_now_below(h: Harness) -> None:
    child = await _setup(h)
    await _put(h, child["id"], {"thresholds": [50, 80]})
    await _ingest(h, child["id"], 85)
    assert [e["threshold"] for e in await _crossed(h)] == [50, 80]
    # 85 of 200: below 50% again; both re-armed. Crossing 50% again fires it again.
    await _allocate(h, child["id"], 200)
    state = (await h.client.get(f"/orgs/{child['id']}/alerts/credits", headers=h.auth())).json()
    assert [t["armed"] for t in state["thresholds"]] == [True, True]
    await _ingest(h, child["id"], 14)
    assert [e["threshold"] for e in await _crossed(h)] == [50, 80]
    await _ingest(h, child["id"], 1)
    assert [e["threshold"] for e in await _crossed(h)] == [50, 80, 50]
    await _ingest(h, child["id"], 40)
    assert [e["threshold"] for e in await _crossed(h)] == [50, 80, 50]
    # Cut back to 150 (140 used: 93%): the re-armed 80% fires at once, 50% has fired already.
    await _allocate(h, child["id"], 150)
    events = await _crossed(h)
    assert [(e["threshold"], e["consumed"], e["limit"]) for e in events[3:]] == [(80, 140, 150)]


async def test_thresholds_fire_anew_in_each_period(h: Harness) -> None:
    child = await _setup(h)
    await _put(h, child["id"], {"thresholds": [50]})
    now = utcnow()
    last_month = now.replace(day=1, hour=12, minute=0) - timedelta(days=1)
    await _ingest(h, child["id"], 60, when=last_month)
    await _ingest(h, child["id"], 10, when=last_month)
    assert [(e["threshold"], e["period"]) for e in await _crossed(h)] == [
        (50, last_month.strftime("%Y-%m"))
    ]
    # This month counts from zero: 49 does not reach it, 50 does, once.
    await _ingest(h, child["id"], 49)
    await _ingest(h, child["id"], 1)
    await _ingest(h, child["id"], 30)
    # Late usage of last month does not fire last month's threshold again.
    await _ingest(h, child["id"], 5, when=last_month)
    assert [(e["threshold"], e["period"], e["consumed"]) for e in await _crossed(h)] == [
        (50, last_month.strftime("%Y-%m"), 60),
        (50, now.strftime("%Y-%m"), 50),
    ]


async def test_a_subtree_alert_fires_on_its_descendants_usage(h: Harness) -> None:
    child = await _setup(h, allocation=1000)
    grandchild = await h.create_org(child["id"], "Grandchild")
    response = await _put(h, child["id"], {"thresholds": [10, 20], "scope": "subtree"})
    assert response.json()["scope"] == "subtree"
    # An org-scope alert of the root counts only the root's own usage: this fires nothing.
    root = h.root.org_id
    response = await h.client.put(
        f"/orgs/{root}/alerts/credits", json={"thresholds": [1]}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    await _ingest(h, grandchild["id"], 60)
    await _ingest(h, root, 50, on=child["id"])
    assert [(e["org_id"], e["threshold"], e["scope"]) for e in await _crossed(h)] == [
        (child["id"], 10, "subtree")
    ]
    await _ingest(h, root, 100, on=root)  # 1% of the root's 10,000: its own alert fires
    await _ingest(h, grandchild["id"], 100)
    assert [(e["org_id"], e["threshold"], e["consumed"]) for e in await _crossed(h)] == [
        (child["id"], 10, 110),
        (root, 1, 100),
        (child["id"], 20, 210),
    ]
    # A change of scope starts every threshold afresh.
    response = await _put(h, child["id"], {"thresholds": [10, 20], "scope": "org"})
    assert [t["last_fired_period"] for t in response.json()["thresholds"]] == [None, None]
    assert response.json()["scope"] == "org"


async def test_concurrent_ingests_fire_each_threshold_once(h: Harness) -> None:
    child = await _setup(h, allocation=200)
    await _put(h, child["id"], {})
    start = utcnow().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    today = utcnow()
    # Forty batches of 5 at once, on different days where the month allows (separate counter
    # rows: nothing but the alert's own lock orders them).
    days = max(1, (today - start).days + 1)

    async def one(i: int) -> None:
        await _ingest(h, child["id"], 5, when=min(today, start + timedelta(days=i % days, hours=1)))

    await asyncio.gather(*(one(i) for i in range(40)))
    events = await _crossed(h)
    assert sorted(e["threshold"] for e in events) == [50, 80, 100]
    for event in events:
        assert event["consumed"] >= event["threshold"] * 2
    report = await h.client.get(f"/orgs/{child['id']}/consumption", headers=h.auth())
    (credits,) = [m for m in report.json()["entries"][0]["meters"] if m["meter"] == "credits"]
    assert credits["consumed"] == 200


async def test_an_alert_is_set_read_listed_and_deleted_with_audit_entries(h: Harness) -> None:
    child = await _setup(h)
    url = f"/orgs/{child['id']}/alerts/credits"
    problem(await h.client.get(url, headers=h.auth()), 404)
    response = await _put(h, child["id"], {"thresholds": [90, 10]})
    assert response.status_code == 200, response.text
    assert [t["threshold"] for t in response.json()["thresholds"]] == [10, 90]
    again = await _put(h, child["id"], {"thresholds": [10, 90]})
    assert again.status_code == 200
    listed = (await h.client.get(f"/orgs/{child['id']}/alerts", headers=h.auth())).json()
    assert [(a["meter"], a["org_id"]) for a in listed["data"]] == [("credits", child["id"])]
    assert (await h.client.get(url, headers=h.auth())).json() == listed["data"][0]
    response = await h.client.delete(url, headers=h.auth())
    assert response.status_code == 204, response.text
    problem(await h.client.get(url, headers=h.auth()), 404)
    problem(await h.client.delete(url, headers=h.auth()), 404)
    assert (await h.client.get(f"/orgs/{child['id']}/alerts", headers=h.auth())).json() == {
        "data": []
    }
    response = await h.client.get(
        f"/orgs/{child['id']}/events", params={"type": "alert.*"}, headers=h.auth()
    )
    entries = [
        (e["type"], e["data"]["before"], e["data"]["after"]) for e in response.json()["data"]
    ]
    assert entries == [
        ("alert.updated", None, {"scope": "org", "thresholds": [10, 90]}),
        ("alert.deleted", {"scope": "org", "thresholds": [10, 90]}, None),
    ]  # the repeated PUT changed nothing and wrote nothing


async def test_who_may_set_and_read_alerts(h: Harness) -> None:
    child = await _setup(h)
    reader = await h.create_key(child["id"], ["credits:read"])
    writer = await h.create_key(child["id"], ["credits:write"])
    problem(await _put(h, child["id"], {}, key=reader), 403)
    assert (await _put(h, child["id"], {}, key=writer)).status_code == 200
    url = f"/orgs/{child['id']}/alerts/credits"
    assert (await h.client.get(url, headers=h.auth(reader))).status_code == 200
    problem(await h.client.delete(url, headers=h.auth(reader)), 403)
    # The parent is out of the child's keys' reach: 404, as a missing org.
    for org in (h.root.org_id, "org_nothinghere000"):
        response = await _put(h, org, {}, key=writer)
        problem(response, 404)
        assert response.json()["detail"] == f"organization {org!r} not found"
    problem(await h.client.put(url, json={}), 401)


async def test_bad_input_is_400_naming_the_field(h: Harness) -> None:
    child = await _setup(h)
    written = await h.written()
    cases = [
        ({"thresholds": [0]}, "thresholds[0]"),
        ({"thresholds": [50, 1001]}, "thresholds[1]"),
        ({"thresholds": [50, 80, 50]}, "thresholds[2]"),
        ({"thresholds": ["fifty"]}, "thresholds[0]"),
        ({"thresholds": [50.5]}, "thresholds[0]"),
        ({"thresholds": [True]}, "thresholds[0]"),
        ({"thresholds": []}, "thresholds"),
        ({"thresholds": list(range(1, 12))}, "thresholds"),
        ({"thresholds": 50}, "thresholds"),
        ({"scope": "everything"}, "scope"),
        ({"thresholds": [50], "colour": "red"}, "colour"),
    ]
    for body, field in cases:
        problem(await _put(h, child["id"], body), 400, field)
    response = await h.client.put(
        f"/orgs/{child['id']}/alerts/no_such_meter", json={}, headers=h.auth()
    )
    problem(response, 404)
    assert "meter" in response.json()["detail"]
    assert await h.written() == written
