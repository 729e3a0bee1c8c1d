"""Limits, allocations and their ledger, end to end through the ASGI app, on SQLite and PostgreSQL.

Covers the 401/403/404/valid matrix of the credit endpoints, each allocation rule and its error
(with nothing changed after a refusal), Make's arithmetic, initial allocations on create, the
deployment charge, what deleting, deactivating and moving an org does to the pools, the ledger
endpoint (filters, pages, exports, balances after each row), ``verify`` and the CLI, and the
audit entry every change writes. Consumption is given to an org by writing ``usage_daily`` rows.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shutil
import sys
from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from orgplane.core.audit import service as audit_service
from orgplane.core.bootstrap import create_root_with_admin_key
from orgplane.core.credits.ledger import Disagreement, verify
from orgplane.core.ids import new_native_key
from orgplane.core.usage.counters import local_today, period_start
from orgplane.models import audit_log, ledger, meters, org_limits, orgs, usage_daily
from orgplane.models.base import utcnow
from support.harness import Harness
from support.problems import problem

NONEXISTENT = "zzzzzzzzzzzz"
OPS = "operations"


# --- helpers -------------------------------------------------------------------------------


async def put_limit(
    h: Harness, org: str, meter: str, amount: Any, key: str | None = None
) -> httpx.Response:
    return await h.client.put(
        f"/orgs/{org}/limits/{meter}", json={"amount": amount}, headers=h.auth(key)
    )


async def set_limit(h: Harness, org: str, meter: str, amount: int) -> dict[str, Any]:
    response = await put_limit(h, org, meter, amount)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def put_alloc(
    h: Harness,
    parent: str,
    child: str,
    meter: str,
    amount: Any,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await h.client.put(
        f"/orgs/{parent}/children/{child}/allocations/{meter}",
        json={"amount": amount},
        headers={**h.auth(key), **(headers or {})},
    )


async def allocate(
    h: Harness, parent: str, child: str, meter: str, amount: int, key: str | None = None
) -> dict[str, Any]:
    response = await put_alloc(h, parent, child, meter, amount, key)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def credits(h: Harness, org: str, key: str | None = None) -> dict[str, dict[str, Any]]:
    response = await h.client.get(f"/orgs/{org}/credits", headers=h.auth(key))
    assert response.status_code == 200, response.text
    assert response.json()["org_id"] == org
    return {m["meter"]: m for m in response.json()["meters"]}


async def pool(h: Harness, org: str, meter: str = OPS) -> tuple[int | None, int, int | None]:
    """(limit, allocated, available) as the credits endpoint reports them."""
    row = (await credits(h, org))[meter]
    return row["limit"], row["allocated"], row["available"]


async def rows(h: Harness, statement: Any) -> list[Any]:
    async with h.services.db.read() as conn:
        return list((await conn.execute(statement)).all())


async def pk(h: Harness, public_id: str) -> Any:
    (row,) = await rows(h, sa.select(orgs).where(orgs.c.public_id == public_id))
    return row


async def consume(h: Harness, org: str, meter: str, quantity: int, day: date | None = None) -> None:
    """Usage of ``org`` on ``day`` (today in its time zone by default), added to the counters."""
    row = await pk(h, org)
    day = day or local_today(row.timezone)
    async with h.services.db.engine.begin() as conn:
        await conn.execute(
            sa.insert(usage_daily).values(
                org_id=row.id, root_id=row.root_id, meter=meter, day=day, quantity=quantity
            )
        )


async def state(h: Harness) -> tuple[list[tuple[Any, ...]], list[int], int, int]:
    """Balances, ledger row ids, audit and org counts: what a refused request leaves alone."""
    limits = await rows(h, sa.select(org_limits).order_by(org_limits.c.org_id, org_limits.c.meter))
    ledger_ids = await rows(h, sa.select(ledger.c.id).order_by(ledger.c.id))
    n_audit = await rows(h, sa.select(sa.func.count()).select_from(audit_log))
    n_orgs = await rows(h, sa.select(sa.func.count()).select_from(orgs))
    return (
        [
            (r.org_id, r.meter, int(r.amount), int(r.allocated), int(r.charge), r.updated_at)
            for r in limits
        ],
        [r.id for r in ledger_ids],
        int(n_audit[0][0]),
        int(n_orgs[0][0]),
    )


async def ledger_problems(h: Harness) -> list[Disagreement]:
    async with h.services.db.read() as conn:
        return await verify(conn)


async def assert_conserved(h: Harness) -> None:
    """``verify`` finds nothing, and read straight from ``org_limits``: every parent's limit is
    its available pool plus what its children hold (amount + charge), no pool is negative and
    every amount is a multiple of its meter's step."""
    assert await ledger_problems(h) == []
    found = await rows(
        h,
        sa.select(org_limits, orgs.c.parent_id).join(orgs, orgs.c.id == org_limits.c.org_id),
    )
    steps = {m.name: int(m.step) for m in await rows(h, sa.select(meters))}
    held: dict[tuple[int, str], int] = defaultdict(int)
    for r in found:
        assert int(r.amount) % steps[r.meter] == 0, r  # released and deleted orgs' included
        if r.parent_id is not None:
            held[(r.parent_id, r.meter)] += int(r.amount) + int(r.charge)
    for r in found:
        available = int(r.amount) - int(r.allocated)
        assert available >= 0, r
        assert int(r.amount) == available + held[(r.org_id, r.meter)], r
    # Replaying the ledger gives, row after row, the balances each row says it left behind.
    amount: dict[tuple[int, str], int] = defaultdict(int)
    allocated: dict[tuple[int, str], int] = defaultdict(int)
    for e in await rows(h, sa.select(ledger).order_by(ledger.c.id)):
        amount[(e.org_id, e.meter)] += e.delta
        if e.parent_id is not None:
            allocated[(e.parent_id, e.meter)] += e.delta + e.charge_delta
            assert (e.parent_amount, e.parent_allocated) == (
                amount[(e.parent_id, e.meter)],
                allocated[(e.parent_id, e.meter)],
            ), e
        else:
            assert e.parent_amount is None and e.parent_allocated is None
        assert (e.org_amount, e.org_allocated) == (
            amount[(e.org_id, e.meter)],
            allocated[(e.org_id, e.meter)],
        ), e


async def ledger_entries(
    h: Harness, org: str, key: str | None = None, **params: Any
) -> list[dict[str, Any]]:
    """Every entry of an org's ledger, page by page (newest first)."""
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await h.client.get(f"/orgs/{org}/ledger", params=query, headers=h.auth(key))
        assert response.status_code == 200, response.text
        page = response.json()["data"]
        # No entry twice, and every page moves on (a repeated row would loop forever).
        assert not {e["id"] for e in page} & {e["id"] for e in entries}, page
        entries += page
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return entries


async def audits(h: Harness, action_prefix: str = "credits.") -> list[Any]:
    return await rows(
        h,
        sa.select(audit_log)
        .where(audit_log.c.action.like(f"{action_prefix}%"))
        .order_by(audit_log.c.id),
    )


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- who may call what ---------------------------------------------------------------------


async def test_credit_endpoints_answer_401_404_403_and_succeed(h: Harness) -> None:
    """Root → A → {B → G, C}; Root → S; another tenant. Keys of A with different scopes."""
    root = h.root.org_id
    await set_limit(h, root, OPS, 500_000)
    a = (await h.create_org(root, "A", allocations={OPS: 100_000}))["id"]
    b = (await h.create_org(a, "B", allocations={OPS: 20_000}))["id"]
    g = (await h.create_org(b, "G"))["id"]
    c = (await h.create_org(a, "C"))["id"]
    s = (await h.create_org(root, "S"))["id"]
    other = await h.services.db.transaction(create_root_with_admin_key, name="Other")
    writer = await h.create_key(a, ["credits:write"])
    reader = await h.create_key(a, ["credits:read"])
    orgs_only = await h.create_key(a, ["orgs:read", "orgs:write"])
    b_writer = await h.create_key(b, ["credits:write"])
    outside = {"ancestor": root, "sibling": s, "stranger": other.org_id, "nonexistent": NONEXISTENT}
    before = await state(h)

    async def limit_put(org: str, key: str | None) -> httpx.Response:
        return await put_limit(h, org, OPS, 600_000, key)

    async def alloc_put(child: str, key: str | None, parent: str = a) -> httpx.Response:
        return await put_alloc(h, parent, child, OPS, 30_000, key)

    async def get(org: str, what: str, key: str | None) -> httpx.Response:
        return await h.client.get(f"/orgs/{org}/{what}", headers=h.auth(key))

    # 401: no header, a malformed key, a well-formed key nobody issued.
    for headers in (
        {},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Bearer {new_native_key()}"},
    ):
        for response in (
            await h.client.put(f"/orgs/{root}/limits/{OPS}", json={"amount": 1}, headers=headers),
            await h.client.put(
                f"/orgs/{a}/children/{b}/allocations/{OPS}", json={"amount": 0}, headers=headers
            ),
            await h.client.get(f"/orgs/{a}/credits", headers=headers),
            await h.client.get(f"/orgs/{a}/ledger", headers=headers),
        ):
            problem(response, 401)

    # 404: outside the key's subtree, for the writer and for keys without the scope alike.
    for label, target in outside.items():
        for key in (writer, reader, orgs_only):
            for response in (
                await limit_put(target, key),
                await alloc_put(b, key, parent=target),
                await get(target, "credits", key),
                await get(target, "ledger", key),
            ):
                body = problem(response, 404)
                assert target in body["detail"], label
        # A child outside reach, named under a parent inside it.
        body = problem(await alloc_put(target, writer), 404)
        assert target in body["detail"], label
    # Another tenant's root key does not reach this tenant's root either.
    problem(await limit_put(root, other.api_key), 404)
    problem(await get(root, "credits", other.api_key), 404)
    # A grandchild is inside reach but not a child of A: no allocation from A to it.
    body = problem(await alloc_put(g, writer), 404)
    assert g in body["detail"] and "not a child" in body["detail"]
    # A child cannot raise its own allocation: its parent is outside its reach.
    problem(await put_alloc(h, a, b, OPS, 90_000, b_writer), 404)

    # 403: inside reach, without the scope.
    for target in (a, b):
        for key in (reader, orgs_only):
            assert "credits:write" in problem(await limit_put(target, key), 403)["detail"]
        assert "credits:write" in problem(await alloc_put(c, reader), 403)["detail"]
        assert "credits:write" in problem(await alloc_put(c, orgs_only), 403)["detail"]
        for what in ("credits", "ledger"):
            assert "credits:read" in problem(await get(target, what, orgs_only), 403)["detail"]
    # Limits belong to roots: a child's come from its parent.
    for target in (a, b):
        body = problem(await limit_put(target, writer), 409)
        assert "not a root" in body["detail"]

    # Nothing refused wrote anything.
    assert await state(h) == before

    # The valid calls.
    response = await limit_put(root, None)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "org_id": root,
        "meter": OPS,
        "limit": 600_000,
        "allocated": 100_000,
        "available": 500_000,
    }
    body = await allocate(h, a, c, OPS, 30_000, writer)
    assert (body["child"]["org_id"], body["child"]["limit"], body["parent"]["available"]) == (
        c,
        30_000,
        100_000 - 20_000 - 30_000,
    )
    assert (await credits(h, a, reader))[OPS]["available"] == 50_000
    assert (await credits(h, b, b_writer))[OPS]["limit"] == 20_000
    own = await ledger_entries(h, a, reader)
    assert [(e["kind"], e["org_id"]) for e in own] == [
        ("allocation", c),
        ("allocation", b),
        ("allocation", a),
    ]
    await assert_conserved(h)


async def test_credit_reads_work_on_a_deleted_org_in_reach(h: Harness) -> None:
    root = h.root.org_id
    await set_limit(h, root, OPS, 100_000)
    a = (await h.create_org(root, "A", allocations={OPS: 30_000}))["id"]
    await consume(h, a, OPS, 4_000)
    assert (await h.client.delete(f"/orgs/{a}", headers=h.auth())).status_code == 200
    row = (await credits(h, a))[OPS]
    assert (row["limit"], row["consumed"]) == (10_000, 4_000)  # on the step of 10,000
    assert [e["kind"] for e in await ledger_entries(h, a)] == ["release", "allocation"]
    # But it can no longer be given anything.
    problem(await put_alloc(h, root, a, OPS, 40_000), 404)


# --- the rules -----------------------------------------------------------------------------


async def test_each_rule_refuses_with_its_error_and_changes_nothing(h: Harness) -> None:
    root = h.root.org_id
    await set_limit(h, root, OPS, 100_000)
    await set_limit(h, root, "credits", 1_000)
    a = (await h.create_org(root, "A", allocations={OPS: 30_000, "credits": 500}))["id"]
    a1 = (await h.create_org(a, "A1", allocations={OPS: 10_000, "credits": 80}))["id"]
    b = (await h.create_org(root, "B", allocations={OPS: 20_000}))["id"]
    b1 = (await h.create_org(b, "B1", allocations={OPS: 20_000}))["id"]
    await consume(h, a, OPS, 15_000)
    await consume(h, a, "credits", 120)
    # Last period's usage does not count against this one.
    await consume(h, a, OPS, 60_000, period_start(local_today("UTC")) - timedelta(days=1))
    await consume(h, b, "credits", 999)  # another meter: no floor for operations
    before = await state(h)

    async def refused(
        response: httpx.Response, status: int, code: str, field: str | None = None
    ) -> dict[str, Any]:
        body = problem(response, status, field, code)
        assert await state(h) == before, body
        return body

    # Not a multiple of the step.
    for response in (
        await put_alloc(h, root, a, OPS, 15_000),
        await put_alloc(h, root, a, OPS, 1),
        await put_limit(h, root, OPS, 105_000),
    ):
        body = await refused(response, 400, "not_a_step_multiple", "amount")
        assert "10000" in body["detail"]
    # Not a whole number ≥ 0 at all.
    for bad in (-10_000, 1.5, "lots", None, True, [10_000]):
        await refused(await put_alloc(h, root, a, OPS, bad), 400, "invalid_input", "amount")
    response = await h.client.put(
        f"/orgs/{root}/children/{a}/allocations/{OPS}",
        json={"amount": 10_000, "extra": 1},
        headers=h.auth(),
    )
    await refused(response, 400, "invalid_input", "extra")

    # More than the parent's available pool (100,000 - 30,000 - 20,000 = 50,000 left).
    body = await refused(await put_alloc(h, root, a, OPS, 90_000), 409, "insufficient_pool")
    assert "50000" in body["detail"] and "60000" in body["detail"]
    await refused(await put_alloc(h, a, a1, OPS, 40_000), 409, "insufficient_pool")
    await refused(await put_alloc(h, root, a, "credits", 1_001), 409, "insufficient_pool")

    # Below what the child consumed this period plus what it handed on (10,000 + 15,000).
    body = await refused(await put_alloc(h, root, a, OPS, 20_000), 409, "below_consumption")
    assert "25000" in body["detail"]
    await refused(await put_alloc(h, root, a, OPS, 0), 409, "below_consumption")
    # Handed on only: B gave all of its 20,000 to B1.
    await refused(await put_alloc(h, root, b, OPS, 10_000), 409, "below_consumption")
    # With a step of 1 the floor is exact: 80 handed on + 120 consumed.
    await refused(await put_alloc(h, root, a, "credits", 199), 409, "below_consumption")
    # A root's limit cannot go below what it handed on (50,000).
    await refused(await put_limit(h, root, OPS, 40_000), 409, "below_consumption")

    # A meter the parent has no limit for.
    body = await refused(await put_alloc(h, root, a, "transfer", 1), 409, "no_limit_for_meter")
    assert "transfer" in body["detail"]
    await refused(await put_alloc(h, b, b1, "credits", 1), 409, "no_limit_for_meter")
    # A meter that does not exist.
    for response in (
        await put_alloc(h, root, a, "nosuchmeter", 10_000),
        await put_limit(h, root, "nosuchmeter", 10_000),
    ):
        body = await refused(response, 404, "not_found")
        assert "nosuchmeter" in body["detail"]

    # The boundaries themselves are allowed.
    assert (await allocate(h, root, a, "credits", 200))["new_child_limit"] == 200
    assert (await allocate(h, root, b, OPS, 20_000))["diff"] == 0
    body = await allocate(h, root, a, OPS, 80_000)  # exactly what is left: 50,000 more
    assert (body["new_parent_available"], body["diff"]) == (0, 50_000)
    problem(await put_alloc(h, root, b, OPS, 30_000), 409, code="insufficient_pool")
    body = await allocate(h, root, a, OPS, 30_000)  # the floor rounded up to a step
    assert body["new_parent_available"] == 50_000
    await set_limit(h, root, OPS, 50_000)  # exactly what it handed on
    assert await pool(h, root) == (50_000, 50_000, 0)
    await assert_conserved(h)


async def test_make_arithmetic_of_allocation_changes(h: Harness) -> None:
    root = h.root.org_id
    set_body = await set_limit(h, root, OPS, 500_000)
    assert (set_body["limit"], set_body["allocated"], set_body["available"]) == (
        500_000,
        0,
        500_000,
    )
    child = (await h.create_org(root, "Child"))["id"]
    n_ledger = len(await rows(h, sa.select(ledger.c.id)))

    first = await allocate(h, root, child, OPS, 10_000)
    assert first == {
        "meter": OPS,
        "parent": {"org_id": root, "limit": 500_000, "allocated": 10_000, "available": 490_000},
        "child": {"org_id": child, "limit": 10_000, "allocated": 0, "available": 10_000},
        "diff": 10_000,
        "limit_increased": True,
        "deployment_charge": 0,
        "new_parent_available": 490_000,
        "new_child_limit": 10_000,
    }
    raised = await allocate(h, root, child, OPS, 20_000)
    assert (
        raised["new_parent_available"],
        raised["new_child_limit"],
        raised["diff"],
        raised["limit_increased"],
    ) == (480_000, 20_000, 10_000, True)
    lowered = await allocate(h, root, child, OPS, 0)
    assert (
        lowered["new_parent_available"],
        lowered["new_child_limit"],
        lowered["diff"],
        lowered["limit_increased"],
    ) == (500_000, 0, -20_000, False)
    back = await allocate(h, root, child, OPS, 30_000)
    assert (back["new_parent_available"], back["diff"]) == (470_000, 30_000)
    assert len(await rows(h, sa.select(ledger.c.id))) == n_ledger + 4

    # The same amount again changes nothing and writes no ledger row.
    n_audit = len(await audits(h))
    same = await allocate(h, root, child, OPS, 30_000)
    assert (same["diff"], same["limit_increased"], same["new_child_limit"]) == (0, False, 30_000)
    assert same["new_parent_available"] == 470_000
    assert len(await rows(h, sa.select(ledger.c.id))) == n_ledger + 4
    assert len(await audits(h)) == n_audit
    # Setting a root limit to what it already is writes nothing either.
    await set_limit(h, root, OPS, 500_000)
    assert len(await rows(h, sa.select(ledger.c.id))) == n_ledger + 4

    deltas = [e["delta"] for e in await ledger_entries(h, child)]
    assert deltas == [30_000, -20_000, 10_000, 10_000]
    assert await pool(h, root) == (500_000, 30_000, 470_000)
    assert await pool(h, child) == (30_000, 0, 30_000)
    await assert_conserved(h)


# --- initial allocation on create ----------------------------------------------------------


async def test_an_initial_allocation_is_taken_in_the_create_transaction(h: Harness) -> None:
    root = h.root.org_id
    await set_limit(h, root, OPS, 50_000)
    await set_limit(h, root, "credits", 100)
    response = await h.client.post(
        f"/orgs/{root}/children",
        json={"name": "New", "allocations": {OPS: 20_000, "credits": 40}},
        headers={**h.auth(), "X-Request-Id": "req-create-alloc"},
    )
    assert response.status_code == 201, response.text
    new = response.json()["id"]
    assert await pool(h, root) == (50_000, 20_000, 30_000)
    assert await pool(h, root, "credits") == (100, 40, 60)
    assert await pool(h, new) == (20_000, 0, 20_000)
    entries = await ledger_entries(h, new)
    assert sorted((e["meter"], e["kind"], e["delta"], e["parent_id"]) for e in entries) == [
        ("credits", "allocation", 40, root),
        (OPS, "allocation", 20_000, root),
    ]
    assert {e["request_id"] for e in entries} == {"req-create-alloc"}
    # One request, one transaction: the org and its allocations carry the same request id.
    created = await rows(
        h, sa.select(audit_log).where(audit_log.c.request_id == "req-create-alloc")
    )
    assert sorted(e.action for e in created) == [
        "credits.allocated",
        "credits.allocated",
        "org.created",
    ]
    await assert_conserved(h)

    async def refused_create(
        body: dict[str, Any],
        status: int,
        code: str,
        field: str | None = None,
        key: str | None = None,
    ) -> None:
        before = await state(h)
        children = await h.client.get(f"/orgs/{root}/children", headers=h.auth())
        response = await h.client.post(
            f"/orgs/{root}/children", json={"name": "Refused", **body}, headers=h.auth(key)
        )
        problem(response, status, field, code)
        assert await state(h) == before
        assert (await h.client.get(f"/orgs/{root}/children", headers=h.auth())).json() == (
            children.json()
        )

    # More than the pool: no org, no ledger row, no audit entry.
    await refused_create({"allocations": {OPS: 40_000}}, 409, "insufficient_pool")
    # The second meter fails after the first was taken: all of it is rolled back.
    await refused_create({"allocations": {OPS: 10_000, "credits": 61}}, 409, "insufficient_pool")
    await refused_create({"allocations": {"transfer": 1}}, 409, "no_limit_for_meter")
    await refused_create(
        {"allocations": {"nosuchmeter": 1}}, 400, "invalid_input", "allocations.nosuchmeter"
    )
    await refused_create(
        {"allocations": {OPS: 15_000}}, 400, "not_a_step_multiple", f"allocations.{OPS}"
    )
    await refused_create(
        {"allocations": {OPS: -10_000}}, 400, "invalid_input", f"allocations.{OPS}"
    )
    await refused_create({"allocations": {OPS: "many"}}, 400, "invalid_input")
    # Creating children is orgs:write; taking from the pool also needs credits:write.
    orgs_writer = await h.create_key(root, ["orgs:write"])
    await refused_create({"allocations": {OPS: 10_000}}, 403, "forbidden", key=orgs_writer)
    assert (await h.create_org(root, "Plain", key=orgs_writer))["name"] == "Plain"
    await assert_conserved(h)


# --- deployment charge ---------------------------------------------------------------------


async def test_a_child_in_another_deployment_costs_its_parent_a_charge(h: Harness) -> None:
    root = h.root.org_id
    response = await h.client.patch(
        "/meters/credits", json={"deployment_charge_pct": 10}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    assert response.json()["deployment_charge_pct"] == 10
    await set_limit(h, root, "credits", 10_000)
    assert (await h.client.get(f"/orgs/{root}", headers=h.auth())).json()["deployment"] == "us1"
    eu = (await h.create_org(root, "EU", deployment="eu"))["id"]
    us = (await h.create_org(root, "US"))["id"]

    body = await allocate(h, root, eu, "credits", 1_000)
    assert (body["deployment_charge"], body["diff"], body["new_child_limit"]) == (100, 1_000, 1_000)
    assert body["parent"] == {
        "org_id": root,
        "limit": 10_000,
        "allocated": 1_100,
        "available": 8_900,
    }
    (entry,) = await ledger_entries(h, eu)
    assert (entry["delta"], entry["deployment_charge_delta"]) == (1_000, 100)
    assert (await credits(h, eu))["credits"]["deployment_charge"] == 100
    assert (await credits(h, eu))["credits"]["limit"] == 1_000

    # Same deployment: no charge.
    body = await allocate(h, root, us, "credits", 1_000)
    assert (body["deployment_charge"], body["new_parent_available"]) == (0, 7_900)
    (entry,) = await ledger_entries(h, us)
    assert entry["deployment_charge_delta"] == 0

    # Lowering gives back the charge in proportion, rounded up: ceil(333 * 10%) = 34.
    body = await allocate(h, root, eu, "credits", 333)
    assert (body["deployment_charge"], body["diff"], body["new_parent_available"]) == (
        34,
        -667,
        7_900 + 667 + 66,
    )
    last = (await ledger_entries(h, eu))[0]
    assert (last["delta"], last["deployment_charge_delta"]) == (-667, -66)
    # The charge counts against the pool: 8,633 left buys 7,848 (+785 charge), not 7,849.
    available = body["new_parent_available"]
    assert available == 8_633
    problem(await put_alloc(h, root, eu, "credits", 333 + 7_849), 409, code="insufficient_pool")
    body = await allocate(h, root, eu, "credits", 333 + 7_848)
    assert (body["deployment_charge"], body["new_parent_available"]) == (819, 0)
    await assert_conserved(h)

    # Deleting the child returns its amount and its charge.
    assert (await h.client.delete(f"/orgs/{eu}", headers=h.auth())).status_code == 200
    assert await pool(h, root, "credits") == (10_000, 1_000, 9_000)
    await assert_conserved(h)


# --- returns on delete and deactivate ------------------------------------------------------


async def test_deleting_a_leaf_returns_what_it_did_not_use(h: Harness) -> None:
    root = h.root.org_id
    await set_limit(h, root, OPS, 200_000)
    await set_limit(h, root, "credits", 1_000)
    p = (await h.create_org(root, "P", allocations={OPS: 100_000, "credits": 500}))["id"]
    c = (await h.create_org(p, "C", allocations={OPS: 40_000, "credits": 300}))["id"]
    idle = (await h.create_org(p, "Idle", allocations={OPS: 20_000}))["id"]
    await consume(h, c, OPS, 15_000)
    await consume(h, c, "credits", 123)
    assert await pool(h, p) == (100_000, 60_000, 40_000)

    response = await h.client.delete(
        f"/orgs/{c}", headers={**h.auth(), "X-Request-Id": "req-delete-leaf"}
    )
    assert response.status_code == 200, response.text
    # Credits (step 1): exactly limit - consumed comes back. Operations stay on their step of
    # 10,000: C keeps its 15,000 consumed rounded up to 20,000, the other 20,000 come back.
    assert await pool(h, p, "credits") == (500, 123, 377)
    assert await pool(h, p) == (100_000, 40_000, 60_000)
    released = await ledger_entries(h, c, kind="release")
    assert [(e["meter"], e["delta"], e["org_limit"], e["parent_id"]) for e in released] == [
        (OPS, -20_000, 20_000, p),
        ("credits", -177, 123, p),
    ]
    assert {e["request_id"] for e in released} == {"req-delete-leaf"}
    # Nothing consumed, everything back.
    assert (await h.client.delete(f"/orgs/{idle}", headers=h.auth())).status_code == 200
    assert await pool(h, p) == (100_000, 20_000, 80_000)
    assert await pool(h, root) == (200_000, 100_000, 100_000)
    await assert_conserved(h)


async def test_a_deactivated_child_takes_no_allocation_until_reactivated(h: Harness) -> None:
    root = h.root.org_id
    await set_limit(h, root, OPS, 100_000)
    child = (await h.create_org(root, "Sleeper", allocations={OPS: 30_000}))["id"]
    response = await h.client.patch(
        f"/orgs/{child}", json={"status": "deactivated"}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    assert await pool(h, root) == (100_000, 0, 100_000)
    url = f"/orgs/{root}/children/{child}/allocations/{OPS}"
    refused = await h.client.put(url, json={"amount": 10_000}, headers=h.auth())
    assert refused.status_code == 409
    assert "deactivated" in refused.json()["detail"]
    assert await pool(h, root) == (100_000, 0, 100_000)
    response = await h.client.patch(f"/orgs/{child}", json={"status": "active"}, headers=h.auth())
    assert response.status_code == 200, response.text
    accepted = await h.client.put(url, json={"amount": 10_000}, headers=h.auth())
    assert accepted.status_code == 200, accepted.text
    assert await pool(h, root) == (100_000, 10_000, 90_000)
    await assert_conserved(h)


@pytest.mark.parametrize("how", ["delete", "deactivate"])
async def test_removing_a_subtree_returns_everything_unused_deepest_first(
    h: Harness, how: str
) -> None:
    root = h.root.org_id
    await set_limit(h, root, OPS, 500_000)
    await set_limit(h, root, "credits", 1_000)
    p = (await h.create_org(root, "P", allocations={OPS: 200_000, "credits": 500}))["id"]
    a = (await h.create_org(p, "A", allocations={OPS: 50_000, "credits": 300}))["id"]
    b = (await h.create_org(a, "B", allocations={OPS: 30_000, "credits": 100}))["id"]
    c = (await h.create_org(b, "C", allocations={OPS: 20_000}))["id"]
    sibling = (await h.create_org(p, "Sibling", allocations={OPS: 10_000}))["id"]
    await consume(h, c, OPS, 2_000)
    await consume(h, b, OPS, 1_000)
    await consume(h, a, OPS, 3_000)
    await consume(h, b, "credits", 7)
    n_ledger = len(await rows(h, sa.select(ledger.c.id)))

    if how == "delete":
        response = await h.client.delete(f"/orgs/{a}", params={"cascade": "true"}, headers=h.auth())
    else:
        response = await h.client.patch(
            f"/orgs/{a}", json={"status": "deactivated"}, headers=h.auth()
        )
    assert response.status_code == 200, response.text

    # Each keeps what it handed on plus what it consumed, on the meter's step: C its 2,000
    # consumed as 10,000; B 10,000 held by C + 1,000 as 20,000; A 20,000 + 3,000 as 30,000.
    # P gets back 50,000 - 30,000 operations and 300 - 7 credits (step 1: exact).
    assert await pool(h, p) == (200_000, 30_000 + 10_000, 160_000)
    assert await pool(h, p, "credits") == (500, 7, 493)
    released = await rows(h, sa.select(ledger).where(ledger.c.id > n_ledger).order_by(ledger.c.id))
    assert {r.kind for r in released} == {"release"}
    ids = {(await pk(h, x)).id: x for x in (p, a, b, c)}
    assert [
        (ids[r.org_id], r.meter, r.delta, r.org_amount, ids[r.parent_id]) for r in released
    ] == [
        (c, OPS, -10_000, 10_000, b),
        (b, "credits", -93, 7, a),
        (b, OPS, -10_000, 20_000, a),
        (a, "credits", -293, 7, p),
        (a, OPS, -20_000, 30_000, p),
    ]
    # The sibling's allocation is untouched.
    assert await pool(h, sibling) == (10_000, 0, 10_000)
    await assert_conserved(h)
    audit_targets = [e.target_id for e in await audits(h, "credits.released")]
    assert audit_targets == [
        f"{c}/{OPS}",
        f"{b}/credits",
        f"{b}/{OPS}",
        f"{a}/credits",
        f"{a}/{OPS}",
    ]
    # Doing it again returns nothing more.
    if how == "deactivate":
        response = await h.client.patch(
            f"/orgs/{a}", json={"status": "deactivated"}, headers=h.auth()
        )
        assert response.status_code == 200, response.text
        assert len(await rows(h, sa.select(ledger.c.id))) == n_ledger + 5


# --- moves ---------------------------------------------------------------------------------


async def test_a_moved_org_takes_its_allocation_to_its_new_parent(h: Harness) -> None:
    root = h.root.org_id
    await set_limit(h, root, OPS, 500_000)
    p1 = (await h.create_org(root, "P1", allocations={OPS: 50_000}))["id"]
    p2 = (await h.create_org(root, "P2", allocations={OPS: 30_000}))["id"]
    poor = (await h.create_org(root, "Poor", allocations={OPS: 10_000}))["id"]
    bare = (await h.create_org(root, "Bare"))["id"]
    c = (await h.create_org(p1, "C", allocations={OPS: 20_000}))["id"]
    d = (await h.create_org(c, "D", allocations={OPS: 10_000}))["id"]

    async def move(target: str) -> httpx.Response:
        return await h.client.post(f"/orgs/{c}/move", json={"parent_id": target}, headers=h.auth())

    response = await move(p2)
    assert response.status_code == 200, response.text
    assert response.json()["parent_id"] == p2
    assert await pool(h, p1) == (50_000, 0, 50_000)
    assert await pool(h, p2) == (30_000, 20_000, 10_000)
    assert await pool(h, c) == (20_000, 10_000, 10_000)
    assert await pool(h, d) == (10_000, 0, 10_000)
    entries = await ledger_entries(h, c, kind="move.in") + await ledger_entries(
        h, c, kind="move.out"
    )
    assert [(e["kind"], e["delta"], e["parent_id"]) for e in entries] == [
        ("move.in", 20_000, p2),
        ("move.out", -20_000, p1),
    ]
    await assert_conserved(h)

    before = await state(h)
    problem(await move(poor), 409, code="insufficient_pool")
    problem(await move(bare), 409, code="no_limit_for_meter")
    assert await state(h) == before
    got = (await h.client.get(f"/orgs/{c}", headers=h.auth())).json()
    assert (got["parent_id"], got["depth"]) == (p2, 2)

    # Back where it came from.
    assert (await move(p1)).status_code == 200
    assert await pool(h, p1) == (50_000, 20_000, 30_000)
    assert await pool(h, p2) == (30_000, 0, 30_000)
    await assert_conserved(h)


# --- the ledger endpoint -------------------------------------------------------------------


async def test_ledger_shows_each_orgs_rows_with_filters(h: Harness) -> None:
    root = h.root.org_id
    await set_limit(h, root, OPS, 500_000)
    await set_limit(h, root, "credits", 1_000)
    p1 = (await h.create_org(root, "P1", allocations={OPS: 100_000}))["id"]
    p2 = (await h.create_org(root, "P2", allocations={OPS: 100_000, "credits": 50}))["id"]
    c = (await h.create_org(p1, "C"))["id"]
    gone = (await h.create_org(p1, "Gone"))["id"]
    for amount in (10_000, 30_000, 20_000):
        await allocate(h, p1, c, OPS, amount)
    await allocate(h, p1, gone, OPS, 40_000)
    await allocate(h, root, p1, "credits", 100)
    await allocate(h, p1, c, "credits", 25)
    assert (await h.client.delete(f"/orgs/{gone}", headers=h.auth())).status_code == 200
    response = await h.client.post(f"/orgs/{c}/move", json={"parent_id": p2}, headers=h.auth())
    assert response.status_code == 200, response.text
    await assert_conserved(h)

    # The root's ledger: its own limits and what it gave its children.
    root_entries = await ledger_entries(h, root)
    assert [(e["kind"], e["meter"], e["org_id"], e["delta"]) for e in root_entries] == [
        ("allocation", "credits", p1, 100),
        ("allocation", OPS, p2, 100_000),
        ("allocation", "credits", p2, 50),
        ("allocation", OPS, p1, 100_000),
        ("limit.set", "credits", root, 1_000),
        ("limit.set", OPS, root, 500_000),
    ]
    # P1's: what it got, what it gave, what came back, and the move out of its pool.
    p1_entries = await ledger_entries(h, p1)
    assert [(e["kind"], e["meter"], e["org_id"], e["delta"]) for e in p1_entries] == [
        ("move.out", OPS, c, -20_000),
        ("move.out", "credits", c, -25),
        ("release", OPS, gone, -40_000),
        ("allocation", "credits", c, 25),
        ("allocation", "credits", p1, 100),
        ("allocation", OPS, gone, 40_000),
        ("allocation", OPS, c, -10_000),
        ("allocation", OPS, c, 20_000),
        ("allocation", OPS, c, 10_000),
        ("allocation", OPS, p1, 100_000),
    ]
    # C's: only its own rows, with both parents named.
    c_entries = await ledger_entries(h, c)
    assert [(e["kind"], e["meter"], e["parent_id"], e["org_limit"]) for e in c_entries] == [
        ("move.in", OPS, p2, 20_000),
        ("move.out", OPS, p1, 0),
        ("move.in", "credits", p2, 25),
        ("move.out", "credits", p1, 0),
        ("allocation", "credits", p1, 25),
        ("allocation", OPS, p1, 20_000),
        ("allocation", OPS, p1, 30_000),
        ("allocation", OPS, p1, 10_000),
    ]
    assert {e["org_id"] for e in c_entries} == {c}
    key_id = h.root.key_id
    for e in root_entries + p1_entries + c_entries:
        assert e["actor"] == f"key:{key_id}" and e["actor_key_id"] == key_id
        assert e["request_id"]
        assert e["idempotency_key"] is None
    # P2's ledger shows C's arrival; the parent's balances after each row are P2's.
    p2_move_in = [e for e in await ledger_entries(h, p2) if e["kind"] == "move.in"]
    assert [(e["meter"], e["parent_limit"], e["parent_allocated"]) for e in p2_move_in] == [
        (OPS, 100_000, 20_000),
        ("credits", 50, 25),
    ]

    # Filters: meter, kind, and both together.
    by_meter = await ledger_entries(h, p1, meter="credits")
    assert [e["id"] for e in by_meter] == [e["id"] for e in p1_entries if e["meter"] == "credits"]
    for kind in ("limit.set", "allocation", "release", "move.out", "move.in"):
        got = await ledger_entries(h, p1, kind=kind)
        assert [e["id"] for e in got] == [e["id"] for e in p1_entries if e["kind"] == kind]
    assert [e["delta"] for e in await ledger_entries(h, p1, kind="allocation", meter=OPS)] == [
        40_000,
        -10_000,
        20_000,
        10_000,
        100_000,
    ]
    assert await ledger_entries(h, p1, meter="transfer") == []
    # since is inclusive, until exclusive.
    oldest_first = list(reversed(p1_entries))
    since, until = ts(oldest_first[3]["timestamp"]), ts(oldest_first[7]["timestamp"])
    window = await ledger_entries(h, p1, since=since.isoformat(), until=until.isoformat())
    assert [e["id"] for e in window] == [
        e["id"] for e in p1_entries if since <= ts(e["timestamp"]) < until
    ]
    assert len(window) >= 4
    assert await ledger_entries(h, p1, since=(until + timedelta(days=1)).isoformat()) == []

    # Bad filters name the parameter.
    for params, field in (
        ({"kind": "refund"}, "query.kind"),
        ({"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}, "query.since"),
        ({"since": "yesterday"}, "query.since"),
        ({"limit": 0}, "query.limit"),
    ):
        response = await h.client.get(f"/orgs/{p1}/ledger", params=params, headers=h.auth())
        problem(response, 400, field)


async def test_ledger_pages_and_exports_every_row_once(h: Harness) -> None:
    root = h.root.org_id
    await set_limit(h, root, "credits", 100_000)
    child = (await h.create_org(root, "Child"))["id"]
    for amount in range(1, 24):
        await allocate(h, root, child, "credits", amount * 7)
    whole = (
        await h.client.get(f"/orgs/{root}/ledger", params={"limit": 500}, headers=h.auth())
    ).json()
    assert whole["next_cursor"] is None
    assert len(whole["data"]) == 24
    ids = [e["id"] for e in whole["data"]]
    assert ids == sorted(ids, reverse=True)

    for size in (1, 5, 24, 25):
        paged = await ledger_entries(h, root, limit=size)
        assert paged == whole["data"], size
    response = await h.client.get(f"/orgs/{root}/ledger", params={"limit": 24}, headers=h.auth())
    assert response.json()["next_cursor"] is None
    response = await h.client.get(
        f"/orgs/{root}/ledger", params={"cursor": "not a cursor"}, headers=h.auth()
    )
    problem(response, 400)

    response = await h.client.get(
        f"/orgs/{root}/ledger", headers={**h.auth(), "Accept": "application/x-ndjson"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.headers["content-disposition"].endswith(f'"{root}-ledger.ndjson"')
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines == whole["data"]

    response = await h.client.get(
        f"/orgs/{root}/ledger",
        params={"kind": "allocation"},
        headers={**h.auth(), "Accept": "text/csv"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert len(table) == 23
    assert list(table[0]) == list(whole["data"][0])
    for row, entry in zip(table, whole["data"][:23], strict=True):
        assert int(row["id"]) == entry["id"]
        assert (row["kind"], row["org_id"], row["parent_id"]) == ("allocation", child, root)
        assert int(row["delta"]) == entry["delta"]
        assert int(row["parent_allocated"]) == entry["parent_allocated"]
    await assert_conserved(h)


async def test_an_allocation_replayed_with_its_idempotency_key_is_applied_once(
    h: Harness,
) -> None:
    root = h.root.org_id
    await set_limit(h, root, OPS, 100_000)
    child = (await h.create_org(root, "Child"))["id"]
    headers = {"Idempotency-Key": "alloc-0001"}
    first = await put_alloc(h, root, child, OPS, 30_000, headers=headers)
    assert first.status_code == 200, first.text
    n_ledger = len(await rows(h, sa.select(ledger.c.id)))
    n_audit = len(await audits(h))

    replay = await put_alloc(h, root, child, OPS, 30_000, headers=headers)
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()
    # Even after the allocation changed, the key answers what it did the first time.
    await allocate(h, root, child, OPS, 50_000)
    again = await put_alloc(h, root, child, OPS, 30_000, headers=headers)
    assert again.json() == first.json()
    assert len(await rows(h, sa.select(ledger.c.id))) == n_ledger + 1
    assert len(await audits(h)) == n_audit + 1
    assert await pool(h, child) == (50_000, 0, 50_000)
    # Another body under the same key is refused, and changes nothing.
    problem(await put_alloc(h, root, child, OPS, 40_000, headers=headers), 422)
    assert await pool(h, child) == (50_000, 0, 50_000)

    (keyed,) = [e for e in await ledger_entries(h, child) if e["idempotency_key"]]
    assert (keyed["idempotency_key"], keyed["delta"]) == ("alloc-0001", 30_000)
    # A refused allocation under a key stores nothing: the key can be used once it fits.
    refused_key = {"Idempotency-Key": "alloc-0002"}
    problem(await put_alloc(h, root, child, OPS, 200_000, headers=refused_key), 409)
    body = await put_alloc(h, root, child, OPS, 60_000, headers=refused_key)
    assert body.status_code == 200 and body.json()["diff"] == 10_000
    await assert_conserved(h)


# --- verify and the CLI --------------------------------------------------------------------


async def _cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run ``orgplane`` in a subprocess, away from any ORGPLANE_ variable of ours."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORGPLANE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orgplane.cli",
        *args,
        cwd=cwd,
        env=clean,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert "Traceback" not in err.decode(), err.decode()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _exec(h: Harness, statement: Any) -> None:
    async with h.services.db.engine.begin() as conn:
        await conn.execute(statement)


async def test_verify_finds_tampering_and_the_cli_exits_1(h: Harness, db_url: str) -> None:
    root = h.root.org_id
    await set_limit(h, root, OPS, 100_000)
    a = (await h.create_org(root, "A", allocations={OPS: 30_000}))["id"]
    b = (await h.create_org(a, "B", allocations={OPS: 10_000}))["id"]
    await assert_conserved(h)
    code, out, _ = await _cli("ledger", "verify", "--database-url", db_url)
    assert (code, out.strip()) == (0, "ledger verified: every balance agrees with the ledger")

    a_row, b_row = await pk(h, a), await pk(h, b)
    # B's amount raised behind the ledger's back: B disagrees with its ledger, and A's
    # allocated no longer matches what its children hold.
    await _exec(
        h,
        sa.update(org_limits)
        .where(org_limits.c.org_id == b_row.id, org_limits.c.meter == OPS)
        .values(amount=20_000),
    )
    found = {(p.org_id, p.meter, p.field, p.stored, p.expected) for p in await ledger_problems(h)}
    assert found == {
        (b_row.id, OPS, "amount", 20_000, 10_000),
        (a_row.id, OPS, "allocated (sum over children)", 10_000, 20_000),
    }
    code, out, _ = await _cli("ledger", "verify", "--database-url", db_url)
    assert code == 1
    assert f"org {b_row.id} meter {OPS}: amount is 20000, expected 10000" in out.splitlines()
    await _exec(
        h,
        sa.update(org_limits)
        .where(org_limits.c.org_id == b_row.id, org_limits.c.meter == OPS)
        .values(amount=10_000),
    )
    assert await ledger_problems(h) == []

    # A ledger row gone: the balances it explains no longer add up.
    (a_alloc,) = await rows(
        h, sa.select(ledger).where(ledger.c.org_id == a_row.id, ledger.c.kind == "allocation")
    )
    await _exec(h, sa.delete(ledger).where(ledger.c.id == a_alloc.id))
    gaps = {(p.org_id, p.field, p.stored, p.expected) for p in await ledger_problems(h)}
    assert gaps == {
        (a_row.id, "amount", 30_000, 0),
        ((await pk(h, root)).id, "allocated", 30_000, 0),
    }


async def test_cli_sets_a_roots_limit_and_refuses_a_child(h: Harness, db_url: str) -> None:
    root = h.root.org_id
    child = (await h.create_org(root, "Child"))["id"]
    code, out, _ = await _cli("limits", "set", root, OPS, "300000", "--database-url", db_url)
    assert code == 0
    assert out.strip() == f"{root} {OPS}: limit 300000, allocated 0, available 300000"
    assert await pool(h, root) == (300_000, 0, 300_000)
    (entry,) = await ledger_entries(h, root)
    assert (entry["kind"], entry["actor"], entry["delta"]) == ("limit.set", "cli", 300_000)
    (audit,) = await audits(h, "credits.limit_set")
    assert (audit.actor, audit.after) == ("cli", {"limit": 300_000})

    before = await state(h)
    refusals = (
        ((child, OPS, "10000"), 1, "not a root"),
        ((NONEXISTENT, OPS, "10000"), 1, "not found"),
        ((root, OPS, "15000"), 1, "not a multiple"),
    )
    results = await asyncio.gather(
        *(_cli("limits", "set", *args, "--database-url", db_url) for args, _, _ in refusals)
    )
    for (args, status, message), (code, out, err) in zip(refusals, results, strict=True):
        assert code == status, (args, out, err)
        assert message in err.lower(), err
        if status == 1:
            assert err.startswith("error: "), err
    assert await state(h) == before
    await assert_conserved(h)


async def test_cli_limits_on_a_fresh_sqlite_install(tmp_path: Path, sqlite_template: Path) -> None:
    # A copy of the session's migrated database: what ``orgplane migrate`` leaves behind.
    shutil.copyfile(sqlite_template, tmp_path / "cli.db")
    db = ("--database-url", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    code, out, _ = await _cli("bootstrap", "--json", *db, cwd=tmp_path)
    assert code == 0
    root = json.loads(out)["org_id"]
    code, out, _ = await _cli("limits", "set", root, "credits", "1234", *db, cwd=tmp_path)
    assert (code, out.strip()) == (0, f"{root} credits: limit 1234, allocated 0, available 1234")


# --- audit ---------------------------------------------------------------------------------


async def test_every_change_writes_its_audit_entry_with_the_request_id(h: Harness) -> None:
    root = h.root.org_id
    root_pk = (await pk(h, root)).id

    def rid(value: str) -> dict[str, str]:
        return {**h.auth(), "X-Request-Id": value}

    response = await h.client.put(
        f"/orgs/{root}/limits/{OPS}", json={"amount": 100_000}, headers=rid("req-limit")
    )
    assert response.status_code == 200
    child = (await h.create_org(root, "Child"))["id"]
    child_pk = (await pk(h, child)).id
    await put_alloc(h, root, child, OPS, 30_000, headers={"X-Request-Id": "req-alloc"})
    await put_alloc(h, root, child, OPS, 20_000, headers={"X-Request-Id": "req-lower"})
    await consume(h, child, OPS, 2_500)
    response = await h.client.delete(f"/orgs/{child}", headers=rid("req-delete"))
    assert response.status_code == 200

    entries = await audits(h)
    assert [
        (e.action, e.org_id, e.target_type, e.target_id, e.before, e.after, e.request_id)
        for e in entries
    ] == [
        (
            "credits.limit_set",
            root_pk,
            "limit",
            f"{root}/{OPS}",
            {"limit": 0},
            {"limit": 100_000},
            "req-limit",
        ),
        (
            "credits.allocated",
            child_pk,
            "allocation",
            f"{child}/{OPS}",
            {"limit": 0, "charge": 0},
            {"limit": 30_000, "charge": 0, "parent": root},
            "req-alloc",
        ),
        (
            "credits.allocated",
            child_pk,
            "allocation",
            f"{child}/{OPS}",
            {"limit": 30_000, "charge": 0},
            {"limit": 20_000, "charge": 0, "parent": root},
            "req-lower",
        ),
        (
            "credits.released",
            child_pk,
            "allocation",
            f"{child}/{OPS}",
            {"limit": 20_000},
            {"limit": 10_000, "returned_to": root},
            "req-delete",
        ),
    ]
    assert {e.actor for e in entries} == {f"key:{h.root.key_id}"}
    # Each ledger row has an audit entry of the same request.
    ledger_requests = [r.request_id for r in await rows(h, sa.select(ledger).order_by(ledger.c.id))]
    assert ledger_requests == [e.request_id for e in entries]
    # And they are links of the tenant's hash chain like every other entry.
    async with h.services.db.read() as conn:
        assert await audit_service.verify(conn) == []


async def test_verify_finds_quota_stranded_in_a_deleted_or_deactivated_org(h: Harness) -> None:
    """What a racing allocation left before the tree lock came first: an org deleted or
    deactivated while it still holds more than it handed on plus what it consumed. The ledger
    and the pools agree with each other, so only the release rule shows it."""
    root = h.root.org_id
    await set_limit(h, root, OPS, 1_000_000)
    gone = (await h.create_org(root, "Gone", allocations={OPS: 30_000}))["id"]
    idle = (await h.create_org(root, "Idle", allocations={OPS: 30_000}))["id"]
    used = (await h.create_org(root, "Used", allocations={OPS: 30_000}))["id"]
    response = await h.client.post(
        f"/orgs/{used}/usage",
        json={
            "events": [
                {
                    "meter": OPS,
                    "quantity": 12_000,
                    "timestamp": utcnow().isoformat(),
                    "idempotency_key": "u1",
                }
            ]
        },
        headers=h.auth(),
    )
    assert response.status_code == 200, response.text
    response = await h.client.delete(f"/orgs/{gone}", headers=h.auth())
    assert response.status_code == 200, response.text
    for org in (idle, used):
        response = await h.client.patch(
            f"/orgs/{org}", json={"status": "deactivated"}, headers=h.auth()
        )
        assert response.status_code == 200, response.text
    # Released as the rule says: nothing kept by the idle ones, 20,000 (12,000 rounded up) by
    # the one that consumed.
    assert await ledger_problems(h) == []
    root_row = await pk(h, root)
    for org, amount in ((gone, 50_000), (idle, 40_000), (used, 40_000)):
        row = await pk(h, org)
        (balance,) = await rows(
            h,
            sa.select(org_limits).where(org_limits.c.org_id == row.id, org_limits.c.meter == OPS),
        )
        delta = amount - int(balance.amount)
        # An allocation after the release, written consistently in the ledger and both pools.
        (root_pool,) = await rows(
            h,
            sa.select(org_limits).where(
                org_limits.c.org_id == root_row.id, org_limits.c.meter == OPS
            ),
        )
        await _exec(
            h,
            sa.update(org_limits)
            .where(org_limits.c.org_id == row.id, org_limits.c.meter == OPS)
            .values(amount=amount),
        )
        await _exec(
            h,
            sa.update(org_limits)
            .where(org_limits.c.org_id == root_row.id, org_limits.c.meter == OPS)
            .values(allocated=int(root_pool.allocated) + delta),
        )
        await _exec(
            h,
            sa.insert(ledger).values(
                root_id=root_row.id,
                at=utcnow(),
                meter=OPS,
                kind="allocation",
                org_id=row.id,
                parent_id=root_row.id,
                delta=delta,
                charge_delta=0,
                org_amount=amount,
                org_allocated=0,
                parent_amount=int(root_pool.amount),
                parent_allocated=int(root_pool.allocated) + delta,
                actor="test",
            ),
        )
    found = {(p.org_id, p.field, p.stored, p.expected) for p in await ledger_problems(h)}
    assert found == {
        ((await pk(h, gone)).id, "amount held while deleted", 50_000, 0),
        ((await pk(h, idle)).id, "amount held while deactivated", 40_000, 0),
        ((await pk(h, used)).id, "amount held while deactivated", 40_000, 20_000),
    }


async def test_verify_checks_each_rows_balances_and_the_step(h: Harness) -> None:
    root = h.root.org_id
    await set_limit(h, root, OPS, 100_000)
    child = (await h.create_org(root, "Child", allocations={OPS: 30_000}))["id"]
    child_row = await pk(h, child)
    (row,) = await rows(h, sa.select(ledger).where(ledger.c.org_id == child_row.id))
    # A row whose balances-after are not the running sums, though the totals still agree.
    await _exec(h, sa.update(ledger).where(ledger.c.id == row.id).values(org_amount=31_000))
    found = {(p.org_id, p.field, p.stored, p.expected) for p in await ledger_problems(h)}
    assert found == {(child_row.id, f"ledger row {row.id}: org amount", 31_000, 30_000)}
    await _exec(h, sa.update(ledger).where(ledger.c.id == row.id).values(org_amount=30_000))
    # An amount off the meter's step (10,000), written consistently everywhere else.
    root_row = await pk(h, root)
    for table, column, org_id, value in (
        (org_limits, org_limits.c.amount, child_row.id, 30_005),
        (org_limits, org_limits.c.allocated, root_row.id, 30_005),
    ):
        await _exec(
            h,
            sa.update(table)
            .where(table.c.org_id == org_id, table.c.meter == OPS)
            .values({column.name: value}),
        )
    await _exec(
        h,
        sa.update(ledger)
        .where(ledger.c.id == row.id)
        .values(delta=30_005, org_amount=30_005, parent_allocated=30_005),
    )
    found = {(p.org_id, p.field, p.stored, p.expected) for p in await ledger_problems(h)}
    assert found == {(child_row.id, "amount (step multiple)", 30_005, 30_000)}
