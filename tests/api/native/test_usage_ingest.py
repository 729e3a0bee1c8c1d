"""POST /orgs/{id}/usage: batches stored once, folded into the counters, hard limits enforced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
import sqlalchemy as sa

from orgplane.core.bootstrap import create_root_with_admin_key
from orgplane.core.usage.counters import consumed_this_period
from orgplane.models import (
    audit_log,
    ledger,
    meters,
    org_limits,
    orgs,
    usage_daily,
    usage_events,
)
from orgplane.models.base import utcnow
from support.tree_invariants import check_subtree_usage


def _ts(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _event(
    key: str,
    quantity: int = 1,
    meter: str = "operations",
    when: datetime | None = None,
    org: str | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "meter": meter,
        "quantity": quantity,
        "timestamp": _ts(when or utcnow()),
        "idempotency_key": key,
    }
    if org is not None:
        event["org_id"] = org
    return event


async def _post(
    h: Any, org_id: str, events: list[dict[str, Any]], key: str | None = None, **headers: str
) -> Any:
    # Compact JSON: a 10,000-event batch stays well under the body limit.
    return await h.client.post(
        f"/orgs/{org_id}/usage",
        content=msgspec.json.encode({"events": events}),
        headers={**h.auth(key), "Content-Type": "application/json", **headers},
    )


async def _ok(h: Any, org_id: str, events: list[dict[str, Any]], key: str | None = None) -> Any:
    response = await _post(h, org_id, events, key)
    assert response.status_code == 200, response.text
    return response.json()


async def _counters(h: Any, org: dict[str, Any]) -> dict[tuple[str, date], int]:
    async with h.services.db.read() as conn:
        rows = await conn.execute(
            sa.select(usage_daily.c.meter, usage_daily.c.day, usage_daily.c.quantity).where(
                usage_daily.c.org_id == org["key"]
            )
        )
        return {(r.meter, r.day): int(r.quantity) for r in rows}


async def _count(h: Any, table: sa.Table, *where: Any) -> int:
    async with h.services.db.read() as conn:
        statement = sa.select(sa.func.count()).select_from(table)
        if where:
            statement = statement.where(*where)
        return int((await conn.execute(statement)).scalar_one())


async def _ingest_audit(h: Any, org_id: str) -> list[dict[str, Any]]:
    response = await h.client.get(
        f"/orgs/{org_id}/audit", params={"action": "usage.ingested"}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["data"]
    return entries


async def _report(h: Any, org_id: str, **params: str) -> dict[str, dict[str, Any]]:
    response = await h.client.get(f"/orgs/{org_id}/consumption", params=params, headers=h.auth())
    assert response.status_code == 200, response.text
    return {m["meter"]: m for m in response.json()["entries"][0]["meters"]}


@pytest.fixture
async def seats(h: Any) -> AsyncIterator[str]:
    """A hard-enforced meter, removed afterwards: PostgreSQL keeps ``meters`` between tests."""
    name = "seats"
    async with h.services.db.engine.begin() as conn:
        await conn.execute(
            sa.insert(meters).values(
                name=name, unit="seats", step=1, enforcement="hard", created_at=utcnow()
            )
        )
    yield name
    async with h.services.db.engine.begin() as conn:
        for table in (usage_events, usage_daily, org_limits, ledger):
            await conn.execute(sa.delete(table).where(table.c.meter == name))
        await conn.execute(sa.delete(meters).where(meters.c.name == name))


async def _set_limit(h: Any, org: dict[str, Any], meter: str, amount: int, allocated: int) -> None:
    # A write transaction of the app's (BEGIN IMMEDIATE on SQLite): a transaction that reads
    # first and then writes cannot wait for the access log's flush and fails "locked".
    async def write(tx: Any) -> None:
        root_id = (
            await tx.execute(sa.select(orgs.c.root_id).where(orgs.c.id == org["key"]))
        ).scalar_one()
        await tx.execute(
            sa.insert(org_limits).values(
                org_id=org["key"],
                meter=meter,
                root_id=root_id,
                amount=amount,
                allocated=allocated,
                updated_at=utcnow(),
            )
        )

    await h.services.db.transaction(write)


# --- access ------------------------------------------------------------------------------------


async def test_ingest_access_matrix(h):
    a = await h.create_org(h.root.org_id, "A")
    a1 = await h.create_org(a["id"], "A1")
    b = await h.create_org(h.root.org_id, "B")
    gone = await h.create_org(a["id"], "Gone")
    assert (await h.client.delete(f"/orgs/{gone['id']}", headers=h.auth())).status_code == 200
    writer = await h.create_key(a["id"], ["usage:write"])
    reader = await h.create_key(a["id"], ["usage:read", "orgs:write"])
    batch = [_event("k1", 5)]

    # 401: no credentials or an unknown key.
    for headers in ({}, {"Authorization": "Bearer opk_not_a_real_key"}):
        response = await h.client.post(
            f"/orgs/{a['id']}/usage", json={"events": batch}, headers=headers
        )
        assert response.status_code == 401
    # 404: sibling, ancestor, deleted, nonexistent: the answer reach gives, before the body.
    for other in (b["id"], h.root.org_id, gone["id"], "org_doesnotexist"):
        response = await _post(h, other, batch, writer)
        assert response.status_code == 404, other
        assert response.json()["detail"] == f"organization {other!r} not found"
    response = await h.client.post(
        f"/orgs/{b['id']}/usage", json={"events": "not a list"}, headers=h.auth(writer)
    )
    assert response.status_code in (400, 404)
    # 403: inside the subtree without usage:write.
    for target in (a["id"], a1["id"]):
        response = await _post(h, target, batch, reader)
        assert response.status_code == 403
        assert "usage:write" in response.json()["detail"]
    assert await _count(h, usage_events) == 0

    # An event naming an org outside the caller's subtree: the same 404, naming the event.
    for other in (b["id"], h.root.org_id, gone["id"], "org_doesnotexist", "x" * 100, "a\x00b"):
        events = [_event("ok-1"), _event("bad-1", org=other), _event("ok-2", org=a1["id"])]
        response = await _post(h, a["id"], events, writer)
        assert response.status_code == 404, (other, response.text)
        problem = response.json()
        assert problem["detail"] == f"organization {other!r} not found"
        assert problem["errors"] == [
            {"field": "events[1].org_id", "message": f"organization {other!r} not found"}
        ]
    assert await _count(h, usage_events) == 0

    # Valid: the key's own org, and a descendant by path or by the event's org_id.
    assert await _ok(h, a["id"], batch, writer) == {"accepted": 1, "duplicates": 0}
    assert await _ok(h, a1["id"], [_event("k2", 7)], writer) == {"accepted": 1, "duplicates": 0}
    assert await _ok(h, a["id"], [_event("k3", 11, org=a1["id"])], writer) == {
        "accepted": 1,
        "duplicates": 0,
    }
    assert sum((await _counters(h, a)).values()) == 5
    assert sum((await _counters(h, a1)).values()) == 18


# --- counters and reports ----------------------------------------------------------------------


async def test_ingested_usage_shows_in_counters_and_reports_in_the_orgs_timezone(h):
    tz = "Pacific/Kiritimati"  # UTC+14: the local day is often not the UTC day
    zone = ZoneInfo(tz)
    org = await h.create_org(h.root.org_id, "Kiri", timezone=tz)
    now = utcnow()
    today = now.astimezone(zone).date()
    period = today.replace(day=1)
    previous = (period - timedelta(days=1)).replace(day=1)
    # Shortly after the last local midnight: still the previous day in UTC.
    early = min(now, datetime.combine(today, datetime.min.time(), zone) + timedelta(minutes=30))
    moments = [
        now - timedelta(minutes=1),
        now - timedelta(days=3),
        now - timedelta(days=9),  # outside the last week
        datetime.combine(previous + timedelta(days=1), datetime.min.time(), zone)
        + timedelta(hours=12),
        early,
    ]
    quantities = [700, 300, 200, 5000, 40]
    events = [
        _event(f"tz-{i}", q, when=w)
        for i, (q, w) in enumerate(zip(quantities, moments, strict=True))
    ]
    events.append(_event("tz-credits", 9, meter="credits", when=now))
    assert await _ok(h, org["id"], events) == {"accepted": 6, "duplicates": 0}

    expected: dict[tuple[str, date], int] = {}
    for q, w in zip(quantities, moments, strict=True):
        day = w.astimezone(zone).date()
        expected[("operations", day)] = expected.get(("operations", day), 0) + q
    expected[("credits", today)] = 9
    assert await _counters(h, org) == expected
    assert early.astimezone(UTC).date() != today == early.astimezone(zone).date()

    report = await _report(h, org["id"])
    if utcnow().astimezone(zone).date() != today:
        pytest.skip("the day turned during the test")

    def total(lo: date, hi: date) -> int:
        return sum(q for (m, d), q in expected.items() if m == "operations" and lo <= d <= hi)

    operations = report["operations"]
    assert operations["consumed"] == total(period, today)
    assert operations["last_week"] == total(today - timedelta(days=6), today)
    assert operations["previous_period"] == total(previous, period - timedelta(days=1)) >= 5000
    assert report["credits"]["consumed"] == 9
    assert report["transfer"]["consumed"] == 0

    async with h.services.db.read() as conn:
        row = (
            await conn.execute(sa.select(orgs.c.id, orgs.c.timezone).where(orgs.c.id == org["key"]))
        ).one()
        counted = await consumed_this_period(conn, [row])
    assert counted[(org["key"], "operations")] == total(period, today)
    assert counted[(org["key"], "credits")] == 9


async def test_each_batch_writes_one_audit_entry_per_org(h):
    parent = await h.create_org(h.root.org_id, "Parent")
    child = await h.create_org(parent["id"], "Child")
    events = [
        _event("p-1", 3),
        _event("p-2", 4, meter="credits"),
        _event("c-1", 10, org=child["id"]),
        _event("c-2", 20, org=child["id"]),
        _event("c-1", 99, org=child["id"]),  # a duplicate within the batch
    ]
    response = await _post(h, parent["id"], events, **{"X-Request-Id": "ingest-1"})
    assert response.json() == {"accepted": 4, "duplicates": 1}

    [entry] = await _ingest_audit(h, parent["id"])
    assert entry["target_id"] == parent["id"]
    assert entry["request_id"] == "ingest-1"
    assert entry["after"] == {
        "usage": {"credits": 4, "operations": 3},
        "accepted": 2,
        "duplicates": 0,
    }
    [entry] = await _ingest_audit(h, child["id"])
    assert entry["after"] == {"usage": {"operations": 30}, "accepted": 2, "duplicates": 1}
    # A batch of duplicates only changes nothing and audits nothing.
    assert await _ok(h, parent["id"], events) == {"accepted": 0, "duplicates": 5}
    assert len(await _ingest_audit(h, parent["id"])) == 1
    assert await _count(h, audit_log, audit_log.c.action == "usage.ingested") == 2

    subtree = await _report(h, parent["id"], rollup="subtree")
    assert subtree["operations"]["consumed"] == 33
    assert subtree["credits"]["consumed"] == 4


async def test_only_inserted_events_are_folded_into_day_and_subtree_counters(h):
    """Duplicates (in the batch, of an earlier batch, of a concurrent one) and zero quantities
    add nothing; each org's days and each ancestor's subtree days get exactly the rest."""
    parent = await h.create_org(h.root.org_id, "Fold parent")
    child = await h.create_org(parent["id"], "Fold child")
    grandchild = await h.create_org(child["id"], "Fold grandchild")
    now = utcnow() - timedelta(minutes=1)
    yesterday = now - timedelta(days=1)  # the previous period's last day is still counted
    first = [
        _event("f-1", 5, org=grandchild["id"], when=now),
        _event("f-2", 7, meter="credits", org=grandchild["id"], when=yesterday),
        _event("f-3", 0, org=child["id"], when=now),
        _event("f-4", 11, org=child["id"], when=yesterday),
    ]
    assert await _ok(h, parent["id"], first) == {"accepted": 4, "duplicates": 0}
    second = [
        _event("f-1", 500, org=grandchild["id"], when=now),  # stored by the first batch
        _event("f-5", 13, when=now),
        _event("f-6", 17, org=grandchild["id"], when=now),
        _event("f-5", 900, when=now),  # repeats f-5 in this batch
        _event("f-7", 0, meter="credits", org=grandchild["id"], when=now),
    ]
    replays = await asyncio.gather(*(_post(h, parent["id"], second) for _ in range(3)))
    assert sorted(r.json()["accepted"] for r in replays) == [0, 0, 3]

    zone = ZoneInfo(parent["timezone"])
    today, before = now.astimezone(zone).date(), yesterday.astimezone(zone).date()
    assert await _counters(h, grandchild) == {("operations", today): 22, ("credits", before): 7}
    assert await _counters(h, child) == {("operations", before): 11}
    assert await _counters(h, parent) == {("operations", today): 13}
    subtree = await check_subtree_usage(h.services.db)
    assert subtree[(child["key"], "operations", today)] == 22
    assert subtree[(child["key"], "operations", before)] == 11
    assert subtree[(parent["key"], "operations", today)] == 22 + 13
    assert subtree[(parent["key"], "credits", before)] == 7
    assert await _count(h, usage_events) == 7


# --- idempotency ----------------------------------------------------------------------------------


async def test_duplicates_within_and_across_batches_are_skipped_and_counted(h):
    org = await h.create_org(h.root.org_id, "Dupes")
    first = [_event("a", 1), _event("b", 2), _event("a", 100), _event("c", 4), _event("b", 8)]
    assert await _ok(h, org["id"], first) == {"accepted": 3, "duplicates": 2}
    second = [_event("c", 1000), _event("d", 16)]
    assert await _ok(h, org["id"], second) == {"accepted": 1, "duplicates": 1}
    assert sum((await _counters(h, org)).values()) == 1 + 2 + 4 + 16
    assert await _count(h, usage_events) == 4

    # Keys are unique per tenant tree: another tenant may use the same ones.
    other = await h.services.db.transaction(create_root_with_admin_key, name="Other tenant")
    response = await _post(h, other.org_id, first, other.api_key)
    assert response.json() == {"accepted": 3, "duplicates": 2}
    # And a key is the tree's, not the org's: another org in the same tree cannot reuse it.
    sibling = await h.create_org(h.root.org_id, "Sibling")
    assert await _ok(h, sibling["id"], [_event("d", 5)]) == {"accepted": 0, "duplicates": 1}


async def test_the_same_batch_posted_twice_and_concurrently_counts_once(h):
    org = await h.create_org(h.root.org_id, "Racy")
    once = [_event(f"once-{i}", i) for i in range(50)]
    assert await _ok(h, org["id"], once) == {"accepted": 50, "duplicates": 0}
    assert await _ok(h, org["id"], once) == {"accepted": 0, "duplicates": 50}

    # Overlapping batches in flight at once: every key is counted by exactly one of them.
    batch = [_event(f"race-{i}", 1 + i % 7) for i in range(200)]
    batches = [batch, *[batch[i::2] + batch[: 10 * i] for i in range(1, 8)]]
    responses = await asyncio.gather(*(_post(h, org["id"], b) for b in batches))
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    bodies = [r.json() for r in responses]
    assert sum(b["accepted"] for b in bodies) == 200
    assert all(
        b["accepted"] + b["duplicates"] == len(x) for b, x in zip(bodies, batches, strict=True)
    )
    expected = sum(range(50)) + sum(1 + i % 7 for i in range(200))
    assert sum((await _counters(h, org)).values()) == expected
    assert await _count(h, usage_events) == 250

    # Eight identical posts at once.
    same = [_event(f"same-{i}", 3) for i in range(100)]
    responses = await asyncio.gather(*(_post(h, org["id"], same) for _ in range(8)))
    assert sorted(r.json()["accepted"] for r in responses) == [0] * 7 + [100]
    assert sum((await _counters(h, org)).values()) == expected + 300


async def test_overlapping_batches_over_shared_counters_all_commit_and_count_once(h):
    """Concurrent batches that share keys and counter rows (orgs, meters, days, ancestors) wait
    for each other, none fails, and every key is folded exactly once."""
    parent = await h.create_org(h.root.org_id, "Shared parent")
    children = [await h.create_org(parent["id"], f"Shared {n}") for n in range(3)]
    orgs_ = [parent, *children]
    now = utcnow() - timedelta(minutes=1)
    pool = [
        _event(
            f"s-{i}",
            1 + i % 5,
            meter="credits" if i % 3 == 0 else "operations",
            when=now - timedelta(days=i % 2),
            org=orgs_[i % 4]["id"],
        )
        for i in range(240)
    ]
    batches = [pool[n * 20 : n * 20 + 120][:: 1 + n % 2] for n in range(7)] + [pool[::-1]]
    responses = await asyncio.gather(*(_post(h, parent["id"], b) for b in batches))
    assert [r.status_code for r in responses] == [200] * len(batches), [r.text for r in responses]
    assert sum(r.json()["accepted"] for r in responses) == len(pool)
    assert await _count(h, usage_events) == len(pool)
    total = sum(e["quantity"] for e in pool)
    assert sum([sum((await _counters(h, org)).values()) for org in orgs_]) == total
    subtree = await check_subtree_usage(h.services.db)
    assert sum(q for (org_id, _, _), q in subtree.items() if org_id == parent["key"]) == total


async def test_idempotency_key_header_replays_the_first_response(h):
    org = await h.create_org(h.root.org_id, "Retry")
    events = [_event("h-1", 5), _event("h-2", 6)]
    headers = {"Idempotency-Key": "usage-post-1"}
    first = await _post(h, org["id"], events, **headers)
    assert first.status_code == 200
    assert first.json() == {"accepted": 2, "duplicates": 0}
    again = await _post(h, org["id"], events, **headers)
    assert again.status_code == 200
    assert again.json() == first.json()  # the first response, not {"accepted": 0, ...}
    assert again.headers["idempotent-replayed"] == "true"
    reused = await _post(h, org["id"], [_event("h-3", 1)], **headers)
    assert reused.status_code == 422
    assert sum((await _counters(h, org)).values()) == 11


# --- validation ----------------------------------------------------------------------------------


async def test_one_bad_event_rejects_the_whole_batch_naming_it(h):
    org = await h.create_org(h.root.org_id, "Strict")
    now = utcnow()
    good = [_event(f"g-{i}", 10) for i in range(5)]

    def with_bad(**fields: Any) -> list[dict[str, Any]]:
        return [*good[:3], {**_event("bad"), **fields}, *good[3:]]

    long_ago = now.replace(day=1) - timedelta(days=40)
    cases = [
        (with_bad(quantity=-1), "events[3].quantity"),
        (with_bad(quantity=10**15), "events[3].quantity"),
        (with_bad(quantity=1.5), "events[3].quantity"),
        (with_bad(quantity=True), "events[3].quantity"),
        (with_bad(quantity=None), "events[3].quantity"),
        (with_bad(quantity="ten"), "events[3].quantity"),
        (with_bad(meter="nope"), "events[3].meter"),
        (with_bad(timestamp="yesterday"), "events[3].timestamp"),
        (with_bad(timestamp="2026-11-22T10:00:00"), "events[3].timestamp"),  # no zone
        (with_bad(timestamp=_ts(now + timedelta(minutes=6))), "events[3].timestamp"),
        (with_bad(timestamp=_ts(long_ago)), "events[3].timestamp"),
        (with_bad(timestamp="0001-01-01T00:00:00+14:00"), "events[3].timestamp"),
        (with_bad(idempotency_key=""), "events[3].idempotency_key"),
        (with_bad(idempotency_key="x" * 256), "events[3].idempotency_key"),
        (with_bad(idempotency_key="tab\there"), "events[3].idempotency_key"),
        (with_bad(idempotency_key="nul\x00"), "events[3].idempotency_key"),
        (with_bad(colour="red"), "events[3].colour"),
        ([_event(f"m-{i}") for i in range(3)] + [{"meter": "operations"}], None),
    ]
    for events, field in cases:
        response = await _post(h, org["id"], events)
        assert response.status_code == 400, (field, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        fields = [e["field"] for e in response.json()["errors"]]
        if field is None:
            assert fields and all(f.startswith("events[3].") for f in fields), fields
        else:
            assert fields == [field], (field, response.text)

    # Every bad field of the batch is named at once.
    events = [_event("x", -1), _event("y", meter="nope"), _event("", 1), _event("z", 1)]
    events[3]["timestamp"] = "later"
    response = await _post(h, org["id"], events)
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == [
        "events[0].quantity",
        "events[1].meter",
        "events[2].idempotency_key",
        "events[3].timestamp",
    ]
    # Empty and missing batches.
    for body in ({"events": []}, {}, {"events": None}):
        response = await h.client.post(f"/orgs/{org['id']}/usage", json=body, headers=h.auth())
        assert response.status_code == 400
        assert [e["field"] for e in response.json()["errors"]] == ["events"], body

    assert await _count(h, usage_events) == 0
    assert await _counters(h, org) == {}
    assert await _ingest_audit(h, org["id"]) == []

    # The edges are accepted: quantity 0, exactly 5 minutes ahead minus a little, the previous
    # period's first day, a 255-character key with spaces, an offset other than Z.
    zone = ZoneInfo(org["timezone"])
    previous = (now.astimezone(zone).date().replace(day=1) - timedelta(days=1)).replace(day=1)
    edges = [
        _event("zero", 0),
        _event("soon", 1, when=now + timedelta(minutes=4)),
        _event("oldest", 1, when=datetime.combine(previous, datetime.min.time(), zone)),
        _event("k " + "y" * 253, 1),
        {**_event("offset", 1), "timestamp": now.astimezone(ZoneInfo("Asia/Kolkata")).isoformat()},
    ]
    assert await _ok(h, org["id"], edges) == {"accepted": 5, "duplicates": 0}


async def test_batch_size_limits(h):
    org = await h.create_org(h.root.org_id, "Big")
    when = utcnow() - timedelta(seconds=1)
    # Long keys: the largest batch allowed is bigger than the default body limit (2 MB).
    too_many = [_event(f"{i:05d}-" + "k" * 240, 1, when=when) for i in range(10_001)]
    assert len(msgspec.json.encode({"events": too_many})) > 2_000_000
    response = await _post(h, org["id"], too_many)
    assert response.status_code in (400, 413), response.text
    assert [e["field"] for e in response.json()["errors"]] == ["events"]
    assert await _count(h, usage_events) == 0

    started = time.perf_counter()
    response = await _post(h, org["id"], too_many[:10_000])
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 10_000, "duplicates": 0}
    assert elapsed < 10, f"10,000 events took {elapsed:.1f} s"
    assert sum((await _counters(h, org)).values()) == 10_000
    assert await _count(h, usage_events) == 10_000
    assert len(await _ingest_audit(h, org["id"])) == 1


# --- hard enforcement ----------------------------------------------------------------------------


async def test_hard_limits_reject_the_whole_batch_naming_the_events(h, seats):
    parent = await h.create_org(h.root.org_id, "Parent")
    child = await h.create_org(parent["id"], "Child")
    unlimited = await h.create_org(parent["id"], "No limit row")
    # 100 given, 30 handed to children: 70 available to the parent itself.
    await _set_limit(h, parent, "seats", 100, 30)
    await _set_limit(h, child, "seats", 30, 0)
    await _set_limit(h, parent, "operations", 10, 0)

    assert await _ok(h, parent["id"], [_event("s-1", 60, "seats")]) == {
        "accepted": 1,
        "duplicates": 0,
    }
    over = [
        _event("s-2", 5, "seats"),  # 65
        _event("s-3", 6, "seats"),  # 71: over
        _event("s-4", 0, "seats"),  # nothing added: not named
        _event("s-5", 1, "seats"),  # 72: over
        _event("s-6", 500, "operations"),  # soft meter: never refused
        _event("s-7", 25, "seats", org=child["id"]),  # 25 of 30
        _event("s-8", 6, "seats", org=child["id"]),  # 31: over
        _event("s-9", 1, "seats", org=unlimited["id"]),  # no row: nothing available
    ]
    response = await _post(h, parent["id"], over)
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["type"].endswith("/limit_exceeded")
    assert [e["field"] for e in problem["errors"]] == [
        "events[1]",
        "events[3]",
        "events[6]",
        "events[7]",
    ]
    messages = {e["field"]: e["message"] for e in problem["errors"]}
    assert "71" in messages["events[1]"] and "70 available" in messages["events[1]"]
    assert "100 limit" in messages["events[1]"] and "30 allocated" in messages["events[1]"]
    assert child["id"] in messages["events[6]"] and "30 available" in messages["events[6]"]
    assert "no 'seats' limit" in messages["events[7]"]
    # Nothing written, soft events included.
    assert await _count(h, usage_events) == 1
    assert await _counters(h, child) == {}
    assert sum(q for (m, _), q in (await _counters(h, parent)).items() if m == "operations") == 0

    # Up to exactly the limit is accepted; a duplicate of a counted event is not counted again.
    exact = [
        _event("s-2", 5, "seats"),
        _event("s-3", 5, "seats"),
        _event("s-1", 60, "seats"),
        _event("s-6", 500, "operations"),
    ]
    assert await _ok(h, parent["id"], exact) == {"accepted": 3, "duplicates": 1}
    assert (await _ok(h, parent["id"], [_event("s-zero", 0, "seats")]))["accepted"] == 1
    response = await _post(h, parent["id"], [_event("s-one-more", 1, "seats")])
    assert response.status_code == 409
    assert response.json()["errors"][0]["field"] == "events[0]"

    # The previous period is not checked against this period's pool.
    zone = ZoneInfo(parent["timezone"])
    previous = (utcnow().astimezone(zone).date().replace(day=1) - timedelta(days=1)).replace(day=1)
    last_month = datetime.combine(previous, datetime.min.time(), zone) + timedelta(hours=1)
    old = await _ok(h, parent["id"], [_event("old", 1000, "seats", when=last_month)])
    assert old["accepted"] == 1

    report = await _report(h, parent["id"])
    assert report["seats"]["consumed"] == 70
    assert report["operations"]["consumed"] == 500
    assert report["operations"]["extra"] == 490  # soft: the overage is reported, not refused


async def test_hard_limit_holds_under_concurrent_batches(h, seats):
    org = await h.create_org(h.root.org_id, "Contended")
    await _set_limit(h, org, "seats", 50, 0)
    batches = [[_event(f"c-{i}-{j}", 2, "seats") for j in range(5)] for i in range(8)]
    responses = await asyncio.gather(*(_post(h, org["id"], b) for b in batches))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [409] * 3, [r.text for r in responses]
    assert sum((await _counters(h, org)).values()) == 50
    assert await _count(h, usage_events) == 25
