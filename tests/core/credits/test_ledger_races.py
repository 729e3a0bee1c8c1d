"""Pairs of conflicting writes sent at the same moment, many times, on both databases.

Each round builds a small fresh corner of the tree, sends two requests that decide on the same
rows together, and checks afterwards that the ledger verifies (``verify``: conservation, the
replayed ledger, steps, and no quota stranded in a deleted or deactivated org), that a deleted or
deactivated org gave back its unused allocation, and that the outcome is one of those a serial
order of the two requests would give. SQLite serialises writers, so these pairs only ever raced
on PostgreSQL: an allocation that checked the child's parent and status before it locked the
tree committed against a child that a move, a delete or a deactivation had just changed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import sqlalchemy as sa

from orgplane.core.credits.ledger import verify
from orgplane.core.ids import sumo_org_id
from orgplane.core.usage.counters import consumed_this_period
from orgplane.models import org_limits, orgs
from orgplane.models.base import utcnow
from support.harness import Harness
from support.keys import dialect_key
from support.ledger_invariants import round_up
from support.make import org_key

ROUNDS = 15
STEP = 10_000  # the operations meter's step


async def _prepare(h: Harness) -> str:
    root = h.root.org_id
    response = await h.client.put(
        f"/orgs/{root}/limits/operations", json={"amount": 1_000_000_000}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    return root


async def _org(h: Harness, parent: str, name: str, operations: int = 0) -> str:
    fields: dict[str, Any] = {"allocations": {"operations": operations}} if operations else {}
    return str((await h.create_org(parent, name, **fields))["id"])


def _allocate(h: Harness, parent: str, child: str, amount: int) -> Any:
    return h.client.put(
        f"/orgs/{parent}/children/{child}/allocations/operations",
        json={"amount": amount},
        headers=h.auth(),
    )


async def _together(*requests: Any) -> list[Any]:
    responses = await asyncio.gather(*requests)
    for response in responses:
        assert response.status_code < 500, response.text
    return list(responses)


def _now() -> str:
    return utcnow().isoformat().replace("+00:00", "Z")


async def _check_ledger(h: Harness) -> None:
    async with h.services.db.read() as conn:
        problems = await verify(conn)
        assert not problems, [str(p) for p in problems]
        # The release rule, read straight from the rows: an org that is deleted or deactivated
        # keeps at most what it handed on plus what it consumed, in whole steps.
        rows = (
            await conn.execute(
                sa.select(orgs, org_limits.c.amount, org_limits.c.allocated)
                .join(org_limits, org_limits.c.org_id == orgs.c.id)
                .where(
                    org_limits.c.meter == "operations",
                    sa.or_(orgs.c.deleted_at.is_not(None), orgs.c.status == "deactivated"),
                )
            )
        ).all()
        consumed = await consumed_this_period(conn, rows, "operations")
        for row in rows:
            used = consumed.get((row.id, "operations"), 0)
            keep = min(int(row.amount), round_up(int(row.allocated) + used, STEP))
            assert int(row.amount) == keep, (row.public_id, row.status, row.amount, keep)


async def _amount(h: Harness, org: str) -> int:
    response = await h.client.get(f"/orgs/{org}/credits", headers=h.auth())
    assert response.status_code == 200, response.text
    (operations,) = [m for m in response.json()["meters"] if m["meter"] == "operations"]
    return int(operations["limit"] or 0)


async def test_allocation_against_a_move(h: Harness) -> None:
    root = await _prepare(h)
    for i in range(ROUNDS):
        hub = await _org(h, root, f"hub{i}", operations=1_000_000)
        x = await _org(h, root, f"x{i}", operations=STEP)
        moved, allocated = await _together(
            h.client.post(f"/orgs/{x}/move", json={"parent_id": hub}, headers=h.auth()),
            _allocate(h, root, x, 5 * STEP),
        )
        assert moved.status_code == 200, moved.text
        # Either the allocation came first (and the move took its 50,000 along) or the move did
        # (and X was no longer the root's child).
        assert allocated.status_code in (200, 404), allocated.text
        expected = 5 * STEP if allocated.status_code == 200 else STEP
        assert await _amount(h, x) == expected
        await _check_ledger(h)
        # X can still move back: its old parent's pool was not left short.
        back = await h.client.post(f"/orgs/{x}/move", json={"parent_id": root}, headers=h.auth())
        assert back.status_code == 200, back.text
    await _check_ledger(h)


async def test_allocation_against_a_delete(h: Harness) -> None:
    root = await _prepare(h)
    for i in range(ROUNDS):
        x = await _org(h, root, f"x{i}", operations=STEP)
        deleted, allocated = await _together(
            h.client.delete(f"/orgs/{x}", headers=h.auth()), _allocate(h, root, x, 5 * STEP)
        )
        assert deleted.status_code == 200, deleted.text
        assert allocated.status_code in (200, 404), allocated.text
        # Whatever the order, the deleted org holds nothing it did not use.
        assert await _amount(h, x) == 0
        await _check_ledger(h)


async def test_allocation_against_a_deactivation(h: Harness) -> None:
    root = await _prepare(h)
    for i in range(ROUNDS):
        x = await _org(h, root, f"x{i}", operations=STEP)
        deactivated, allocated = await _together(
            h.client.patch(f"/orgs/{x}", json={"status": "deactivated"}, headers=h.auth()),
            _allocate(h, root, x, 5 * STEP),
        )
        assert deactivated.status_code == 200, deactivated.text
        assert allocated.status_code in (200, 409), allocated.text
        assert await _amount(h, x) == 0
        await _check_ledger(h)


async def test_allocation_against_a_restore(h: Harness) -> None:
    root = await _prepare(h)
    for i in range(ROUNDS):
        x = await _org(h, root, f"x{i}", operations=STEP)
        response = await h.client.delete(f"/orgs/{x}", headers=h.auth())
        assert response.status_code == 200, response.text
        restored, allocated = await _together(
            h.client.post(f"/orgs/{x}/restore", headers=h.auth()),
            _allocate(h, root, x, 5 * STEP),
        )
        assert restored.status_code == 200, restored.text
        # Before the restore the org does not exist for an allocation; after it, it is live.
        assert allocated.status_code in (200, 404), allocated.text
        assert await _amount(h, x) == (5 * STEP if allocated.status_code == 200 else 0)
        await _check_ledger(h)


async def test_two_crossing_moves(h: Harness) -> None:
    root = await _prepare(h)
    for i in range(ROUNDS):
        a = await _org(h, root, f"a{i}", operations=10 * STEP)
        b = await _org(h, root, f"b{i}", operations=10 * STEP)
        first, second = await _together(
            h.client.post(f"/orgs/{a}/move", json={"parent_id": b}, headers=h.auth()),
            h.client.post(f"/orgs/{b}/move", json={"parent_id": a}, headers=h.auth()),
        )
        # Exactly one wins; the other would put an org under its own descendant.
        assert sorted([first.status_code, second.status_code]) == [200, 409], (
            first.text,
            second.text,
        )
        await _check_ledger(h)


async def test_hard_usage_against_a_shrinking_allocation(h: Harness) -> None:
    root = await _prepare(h)
    response = await h.client.patch(
        "/meters/transfer", json={"enforcement": "hard"}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    response = await h.client.put(
        f"/orgs/{root}/limits/transfer", json={"amount": 1_000_000}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    for i in range(ROUNDS):
        c = str((await h.create_org(root, f"c{i}", allocations={"transfer": 100}))["id"])
        used, shrunk = await _together(
            h.client.post(
                f"/orgs/{c}/usage",
                json={
                    "events": [
                        {
                            "meter": "transfer",
                            "quantity": 60,
                            "timestamp": _now(),
                            "idempotency_key": f"race-{i}",
                        }
                    ]
                },
                headers=h.auth(),
            ),
            h.client.put(
                f"/orgs/{root}/children/{c}/allocations/transfer",
                json={"amount": 50},
                headers=h.auth(),
            ),
        )
        # One order or the other: the usage then a refused cut, or the cut then refused usage.
        outcomes = (used.status_code, shrunk.status_code)
        assert outcomes in ((200, 409), (422, 200), (409, 200)), (used.text, shrunk.text)
        async with h.services.db.read() as conn:
            row = (await conn.execute(sa.select(orgs).where(orgs.c.public_id == c))).one()
            consumed = (await consumed_this_period(conn, [row], "transfer")).get(
                (row.id, "transfer"), 0
            )
            amount = (
                await conn.execute(
                    sa.select(org_limits.c.amount).where(
                        org_limits.c.org_id == row.id, org_limits.c.meter == "transfer"
                    )
                )
            ).scalar_one()
        assert consumed <= amount, (consumed, amount)
        assert (consumed, amount) in ((60, 100), (0, 50))
        await _check_ledger(h)


async def test_sumologic_subscription_update_against_a_move(h: Harness, relaxed: None) -> None:
    """Sumo Logic allocates from the child's own parent, whichever it is: read under the tree
    lock, a move committed meanwhile is seen (or waits), never the parent before it."""
    root = h.root.org_id
    response = await h.client.put(
        f"/orgs/{root}/limits/credits", json={"amount": 1_000_000_000}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    key = await dialect_key(h, root, "sumologic")
    auth = httpx.BasicAuth(key["access_id"], key["access_key"])
    for i in range(ROUNDS):
        hub = str((await h.create_org(root, f"hub{i}", allocations={"credits": 1_000_000}))["id"])
        x = str((await h.create_org(root, f"x{i}", allocations={"credits": 100}))["id"])
        moved, updated = await _together(
            h.client.post(f"/orgs/{x}/move", json={"parent_id": hub}, headers=h.auth()),
            h.client.put(
                f"/sumologic/api/v1/organizations/{sumo_org_id('us1', await org_key(h, x))}",
                json={"totalCreditsAllocated": 500},
                auth=auth,
                headers={"parentDeploymentId": "us1"},
            ),
        )
        assert moved.status_code == 200, moved.text
        assert updated.status_code == 200, updated.text
        await _check_ledger(h)
