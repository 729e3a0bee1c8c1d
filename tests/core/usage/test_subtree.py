"""Per-subtree day counters: kept equal to usage_daily summed over each subtree through ingestion
and moves, and the subtree and children consumption reports read them."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
import sqlalchemy as sa

from orgplane.models import orgs, usage_daily
from orgplane.models.base import utcnow
from support.tree_invariants import check_subtree_usage

_sent = iter(range(10**9))


async def _ingest(h: Any, events: list[tuple[dict[str, Any], str, int, datetime]]) -> None:
    body = {
        "events": [
            {
                "org_id": org["id"],
                "meter": meter,
                "quantity": quantity,
                "timestamp": when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "idempotency_key": f"k{next(_sent)}",
            }
            for org, meter, quantity, when in events
        ]
    }
    response = await h.client.post(
        f"/orgs/{h.root.org_id}/usage",
        content=msgspec.json.encode(body),
        headers={**h.auth(), "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


def _windows(today: date) -> dict[str, tuple[date, date]]:
    start = today.replace(day=1)
    end = start + timedelta(days=calendar.monthrange(today.year, today.month)[1])
    previous = (start - timedelta(days=1)).replace(day=1)
    return {
        "consumed": (start, end),
        "last_week": (today - timedelta(days=6), today + timedelta(days=1)),
        "previous_period": (previous, start),
    }


async def _brute_force(h: Any, org: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Sums of usage_daily over the org's whole subtree (deleted descendants included)."""
    async with h.services.db.read() as conn:
        path = (
            await conn.execute(sa.select(orgs.c.path).where(orgs.c.id == org["key"]))
        ).scalar_one()
        rows = (
            await conn.execute(
                sa.select(usage_daily.c.meter, usage_daily.c.day, usage_daily.c.quantity)
                .select_from(usage_daily.join(orgs, orgs.c.id == usage_daily.c.org_id))
                .where(orgs.c.path >= path, orgs.c.path < path + "~")
            )
        ).all()
    windows = _windows(utcnow().date())
    out: dict[str, dict[str, int]] = {}
    for meter in ("credits", "operations", "transfer"):
        out[meter] = {
            k: sum(int(r.quantity) for r in rows if r.meter == meter and lo <= r.day < hi)
            for k, (lo, hi) in windows.items()
        }
    return out


def _figures(meters: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    return {
        m["meter"]: {k: m[k] for k in ("consumed", "last_week", "previous_period")} for m in meters
    }


async def _check_reports(
    h: Any, everyone: list[dict[str, Any]], live: list[dict[str, Any]]
) -> None:
    await check_subtree_usage(h.services.db)
    for org in live:
        response = await h.client.get(
            f"/orgs/{org['id']}/consumption", params={"rollup": "subtree"}, headers=h.auth()
        )
        assert response.status_code == 200, response.text
        assert _figures(response.json()["entries"][0]["meters"]) == await _brute_force(h, org)
        response = await h.client.get(
            f"/orgs/{org['id']}/consumption", params={"rollup": "children"}, headers=h.auth()
        )
        assert response.status_code == 200, response.text
        by_public = {o["id"]: o for o in everyone}
        for entry in response.json()["entries"]:
            child = by_public[entry["org_id"]]
            assert _figures(entry["meters"]) == await _brute_force(h, child), child["name"]


async def test_subtree_counters_follow_ingestion_and_moves(h: Any) -> None:
    async with h.services.db.read() as conn:
        root_key = (
            await conn.execute(sa.select(orgs.c.id).where(orgs.c.public_id == h.root.org_id))
        ).scalar_one()
    root = {"id": h.root.org_id, "key": root_key, "name": "Root"}
    a = await h.create_org(h.root.org_id, "A")
    a1 = await h.create_org(a["id"], "A1")
    a11 = await h.create_org(a1["id"], "A11")
    a12 = await h.create_org(a1["id"], "A12")
    b = await h.create_org(h.root.org_id, "B")
    b1 = await h.create_org(b["id"], "B1")
    everyone = [root, a, a1, a11, a12, b, b1]
    now = utcnow()
    earlier = [now, now - timedelta(days=1), now - timedelta(days=9), now - timedelta(days=25)]
    events = []
    for n, org in enumerate(everyone, start=1):
        for i, when in enumerate(earlier):
            events.append((org, "operations", n * 10 + i, when))
            events.append((org, "transfer", n + i, when))
    events.append((a11, "credits", 7, now))
    await _ingest(h, events)
    # A second batch on the same days adds to the rows the first one created.
    await _ingest(h, [(a11, "operations", 1000, now), (b1, "operations", 5, now)])

    async with h.services.db.read() as conn:
        total = (await conn.execute(sa.select(sa.func.sum(usage_daily.c.quantity)))).scalar_one()
    sums = await check_subtree_usage(h.services.db)
    assert sum(q for (o, _, _), q in sums.items() if o == root["key"]) == total
    await _check_reports(h, everyone, everyone)

    # A deleted org's usage keeps counting in its ancestors' subtrees.
    assert (await h.client.delete(f"/orgs/{a12['id']}", headers=h.auth())).status_code == 200
    live = [o for o in everyone if o is not a12]
    await _check_reports(h, everyone, live)

    # A subtree with usage (A1: A11 and the deleted A12) moves between branches and back; B1
    # moves below the moved org; usage arriving in between lands on the new ancestors.
    for org, parent in ((a1, b1), (b, a), (a1, root), (b1, a11)):
        response = await h.client.post(
            f"/orgs/{org['id']}/move", json={"parent_id": parent["id"]}, headers=h.auth()
        )
        assert response.status_code == 200, response.text
        await _check_reports(h, everyone, live)
        await _ingest(h, [(a11, "operations", 3, now), (org, "transfer", 2, now)])
        await _check_reports(h, everyone, live)


async def test_utilization_bars_agree_with_the_children_report(h: Any) -> None:
    """The bars a console list shows (``consumption.utilization``, two prepared statements per
    50 children) are the children report's numbers for each child's most used limited meter:
    60 children, so a list spans two slices of slots; some with no limit, one with a limit of
    0, one past its limit, one with two limited meters."""
    from orgplane.core.usage import consumption
    from support.mfa import caller

    for meter in ("operations", "credits"):
        response = await h.client.put(
            f"/orgs/{h.root.org_id}/limits/{meter}", json={"amount": 10_000_000},
            headers=h.auth(),
        )  # fmt: skip
        assert response.status_code == 200, response.text
    children = []
    for n in range(60):
        allocations = {"operations": 10_000 * (n % 4)} if n % 3 else {}
        if n == 7:
            allocations["credits"] = 50
        children.append(await h.create_org(h.root.org_id, f"C{n:02d}", allocations=allocations))
    now = utcnow()
    events = [(c, "operations", 1_000 * n + 1, now) for n, c in enumerate(children) if n % 2]
    events += [(children[7], "credits", 40, now), (children[5], "operations", 50_000, now)]
    await _ingest(h, events)

    principal = (await caller(h, h.root.api_key)).principal
    async with h.services.db.read() as conn:
        rows = (await conn.execute(sa.select(orgs).where(orgs.c.parent_id.isnot(None)))).all()
        report = await consumption.report(
            conn, principal, h.root.org_id, rollup="children", children=rows
        )
        bars = await consumption.utilization(conn, principal, h.root.org_id, rows)
    expected = {}
    for entry in report["entries"]:
        limited = [m for m in entry["meters"] if m["utilization_pct"] is not None]
        if limited:
            best = max(limited, key=lambda m: m["utilization_pct"])
            expected[entry["org"].id] = {k: best[k] for k in ("meter", "consumed", "limit",
                                                              "utilization_pct")}  # fmt: skip
    assert bars == expected
    by_name = {row.name: row.id for row in rows}
    assert bars[by_name["C05"]]["utilization_pct"] == 550.01  # 55,001 of 10,000
    assert bars[by_name["C07"]]["meter"] == "credits"  # 80% of credits beats 23% of operations
    assert by_name["C00"] not in bars and by_name["C03"] not in bars  # no limit / a limit of 0
    assert len(bars) == 30
