"""64 concurrent allocators and consumers on one parent and its children, on both databases.

One parent P (under the root) and twelve children, four of them in another deployment (the
``credits`` meter charges 10% for those); ``transfer`` is made hard. At once: allocators spread
over the children, allocators all on the same child (up, down, below what it consumed, over the
pool), usage posted against the children (soft and hard), hard and soft usage of P itself (which
P may not hand on), the same batch posted twice at once, and the root re-allocating to P.

Afterwards: no 5xx; each refusal is the rule it names and wrote nothing; ``verify`` is empty;
every pool is exactly what the successful responses imply (start + the sum of their diffs, the
parent's ``allocated`` the sum of its children's amounts and charges); each success is one ledger
row with the balances its response reported, and replaying the ledger gives every balance; the
counters are the start plus exactly the accepted usage (a batch posted twice counts once); no pool
is negative and on the hard meter no org consumed more than its pool; and on PostgreSQL the
database saw no deadlock (rows are locked in one order; retries would only hide deadlocks).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from orgplane.core.credits.ledger import verify
from orgplane.models.base import utcnow
from support.harness import start_harness, stop_harness
from support.ledger_invariants import Bal, check_invariants, deadlocks, load

POOL = 32  # with as many again in overflow: every task can hold a connection at once
STEPS = {"credits": 1, "operations": 10_000, "transfer": 1}
HARD = {"transfer"}
PCT = 10  # the deployment charge on credits
CHILDREN = 12
ABROAD = 4  # the first children are in another deployment than P

_request_numbers = itertools.count()


@dataclass
class Call:
    kind: str  # "allocation" or "usage"
    request_id: str
    args: dict[str, Any]
    response: Any


class Recorder:
    """Sends requests with their own request ids and keeps every answer."""

    def __init__(self, h: Any) -> None:
        self.h = h
        self.calls: list[Call] = []

    async def send(self, kind: str, method: str, url: str, args: dict[str, Any], **kw: Any) -> Any:
        request_id = f"lc-{next(_request_numbers)}"
        headers = {**self.h.auth(), "X-Request-Id": request_id}
        response = await self.h.client.request(method, url, headers=headers, **kw)
        assert response.status_code < 500, response.text
        self.calls.append(Call(kind, request_id, args, response))
        return response

    async def allocate(self, parent: str, child: str, meter: str, amount: int) -> Any:
        return await self.send(
            "allocation",
            "PUT",
            f"/orgs/{parent}/children/{child}/allocations/{meter}",
            {"parent": parent, "child": child, "meter": meter, "amount": amount},
            json={"amount": amount},
        )

    async def usage(self, org: str, meter: str, events: list[tuple[str, int]]) -> Any:
        payload = [
            {"meter": meter, "quantity": q, "timestamp": _ts(), "idempotency_key": k}
            for k, q in events
        ]
        return await self.send(
            "usage",
            "POST",
            f"/orgs/{org}/usage",
            {"org": org, "meter": meter, "events": events},
            json={"events": payload},
        )


def _ts() -> str:
    return utcnow().isoformat().replace("+00:00", "Z")


def _problem_type(response: Any) -> str:
    return str(response.json()["type"]).rsplit("/", 1)[-1]


async def test_concurrent_allocations_and_usage_keep_the_pools_exact(db_url: str) -> None:
    h = await start_harness(db_url, db_pool_size=POOL)
    try:
        await _run(h)
    finally:
        await stop_harness(h)


async def _run(h: Any) -> None:
    root = h.root.org_id
    for name, change in {
        "transfer": {"enforcement": "hard"},
        "credits": {"deployment_charge_pct": PCT},
    }.items():
        response = await h.client.patch(f"/meters/{name}", json=change, headers=h.auth())
        assert response.status_code == 200, response.text
    for meter, amount in {"operations": 3_000_000, "credits": 60_000, "transfer": 60_000}.items():
        response = await h.client.put(
            f"/orgs/{root}/limits/{meter}", json={"amount": amount}, headers=h.auth()
        )
        assert response.status_code == 200, response.text
    p = (
        await h.create_org(
            root,
            "P",
            allocations={"operations": 1_000_000, "credits": 20_000, "transfer": 20_000},
        )
    )["id"]
    children = [
        (
            await h.create_org(
                p,
                f"C{i}",
                deployment="eu" if i < ABROAD else "us1",
                allocations={"operations": 50_000, "credits": 1_000, "transfer": 1_000},
            )
        )["id"]
        for i in range(CHILDREN)
    ]
    abroad = set(children[:ABROAD])
    c0 = children[0]
    rec = Recorder(h)
    # Usage before the race: C0's floors (30,000 operations, 600 transfer) and P's own use.
    for org, meter, quantity in (
        (c0, "operations", 30_000),
        (c0, "transfer", 600),
        (p, "transfer", 3_000),
        (p, "credits", 500),
    ):
        response = await rec.usage(org, meter, [(f"pre-{org}-{meter}", quantity)])
        assert response.status_code == 200, response.text

    start = await load(h.services.db)
    start_ledger = max(e.id for e in start.ledger)
    deadlocks_before = await deadlocks(h.services.db)
    rec.calls.clear()
    rng = random.Random(20261122)
    keys = itertools.count()

    def amount_for(meter: str, big: bool = False) -> int:
        if meter == "operations":
            return rng.randrange(0, 40 if big else 16) * 10_000
        return rng.randrange(0, 9_000 if big else 3_000)

    def events(meter: str, most: int) -> list[tuple[str, int]]:
        return [(f"e{next(keys)}", rng.randrange(0, most)) for _ in range(rng.randrange(1, 6))]

    # The work of each task, drawn up front (the draws must not depend on the scheduling).
    meters = sorted(STEPS)
    spread = [
        [(children[i % CHILDREN], m, amount_for(m)) for m in rng.choices(meters, k=3)]
        for i in range(20)
    ]
    same_child = [
        [(c0, m, amount_for(m, big=True)) for m in rng.choices(meters, k=3)] for _ in range(15)
    ]
    # Always refused, whatever the order: below C0's consumption, and more than P ever has.
    same_child.append([(c0, "operations", 0), (children[1], "operations", 5_000_000)])
    quantities = {"operations": 20_000, "credits": 300, "transfer": 800}
    consumers = [
        [
            (children[rng.randrange(CHILDREN)], m, events(m, quantities[m]))
            for m in rng.choices(meters, k=3)
        ]
        for _ in range(11)
    ]
    consumers.append([(children[2], "transfer", [(f"e{next(keys)}", 100_000)])])  # over
    own_use = [
        [(p, m, events(m, 1_500 if m == "transfer" else 300)) for m in ("transfer", "credits")]
        for _ in range(8)
    ]
    twice = [
        (children[5], "operations", events("operations", 20_000)),
        (children[6], "credits", events("credits", 300)),
    ]
    from_root = [
        [
            (root, p, "operations", rng.choice([600_000, 900_000, 1_000_000, 1_300_000])),
            (root, p, "transfer", rng.choice([15_000, 20_000, 30_000])),
        ]
        for _ in range(4)
    ]

    async def allocator(work: list[tuple[str, str, int]], parent: str = p) -> None:
        for child, meter, amount in work:
            await rec.allocate(parent, child, meter, amount)

    async def root_allocator(work: list[tuple[str, str, str, int]]) -> None:
        for parent, child, meter, amount in work:
            await rec.allocate(parent, child, meter, amount)

    async def consumer(work: list[tuple[str, str, list[tuple[str, int]]]]) -> None:
        for org, meter, batch in work:
            await rec.usage(org, meter, batch)

    tasks = [
        *(allocator(w) for w in spread),
        *(allocator(w) for w in same_child),
        *(consumer(w) for w in consumers),
        *(consumer(w) for w in own_use),
        *(consumer([batch]) for batch in twice for _ in range(2)),
        *(root_allocator(w) for w in from_root),
    ]
    assert len(tasks) == 64
    await asyncio.gather(*tasks)

    # --- every answer is one the rules allow
    allocations = [c for c in rec.calls if c.kind == "allocation"]
    usages = [c for c in rec.calls if c.kind == "usage"]
    for call in allocations:
        assert call.response.status_code in (200, 409), call.response.text
        if call.response.status_code == 409:
            assert _problem_type(call.response) in ("insufficient_pool", "below_consumption")
    for call in usages:
        assert call.response.status_code in (200, 409), call.response.text
        if call.response.status_code == 409:
            assert call.args["meter"] in HARD, call.response.text
            assert _problem_type(call.response) == "limit_exceeded"
    outcomes = {
        (c.response.status_code, _problem_type(c.response) if c.response.status_code != 200 else "")
        for c in allocations
    }
    assert {(200, ""), (409, "insufficient_pool"), (409, "below_consumption")} <= outcomes
    assert {c.response.status_code for c in usages} == {200, 409}

    # --- the invariants, read straight from the database
    db = h.services.db
    final = await load(db)
    check_invariants(final, root, STEPS, HARD)

    # --- each success is one ledger row with the balances its response reported; no refusal,
    # no unchanged allocation and no usage wrote any
    new_rows = [e for e in final.ledger if e.id > start_ledger]
    by_request: dict[str, list[Any]] = defaultdict(list)
    for e in new_rows:
        by_request[e.request_id].append(e)
    assert set(by_request) <= {c.request_id for c in allocations}
    last_row: dict[tuple[str, str], Any] = {}
    for call in allocations:
        rows = by_request.get(call.request_id, [])
        if call.response.status_code != 200:
            assert rows == [], call.response.text
            continue
        body = call.response.json()
        child, meter = call.args["child"], call.args["meter"]
        assert body["new_child_limit"] == call.args["amount"]
        assert body["deployment_charge"] == _charge(meter, child in abroad, call.args["amount"])
        assert body["new_parent_available"] >= 0
        # What each org consumed only grows, and the checks ran under its row lock: a raise
        # never left the parent with less than it had consumed by the start, and a cut never
        # left the child with less than it had handed on plus consumed by then.
        if body["diff"] > 0:
            used = start.consumed.get((call.args["parent"], meter), 0)
            assert body["new_parent_available"] >= used, (call.args, body)
        if body["diff"] < 0:
            used = start.consumed.get((child, meter), 0)
            assert body["new_child_limit"] >= body["child"]["allocated"] + used, (call.args, body)
        if body["diff"] == 0:
            assert rows == []
            continue
        (row,) = rows
        assert (row.kind, final.public[row.org_id], row.meter) == ("allocation", child, meter)
        assert (row.delta, row.org_amount) == (body["diff"], body["new_child_limit"])
        assert (row.parent_amount, row.parent_allocated) == (
            body["parent"]["limit"],
            body["parent"]["allocated"],
        )
        last_row[(child, meter)] = max(last_row.get((child, meter), row), row, key=lambda r: r.id)
    for (child, meter), row in last_row.items():
        # The last committed allocation's answer is what the child holds now.
        assert row.org_amount == final.limits[(child, meter)].amount

    # --- the pools, exactly: the start plus the diffs the successful responses reported
    expected = {key: Bal(b.amount, b.allocated, b.charge) for key, b in start.limits.items()}
    for call in allocations:
        if call.response.status_code == 200:
            child, meter = call.args["child"], call.args["meter"]
            expected[(child, meter)].amount += call.response.json()["diff"]
    for child in children:
        for meter in STEPS:
            b = expected[(child, meter)]
            b.charge = _charge(meter, child in abroad, b.amount)
    for meter in STEPS:
        expected[(p, meter)].allocated = sum(
            expected[(c, meter)].amount + expected[(c, meter)].charge for c in children
        )
        expected[(p, meter)].charge = 0
        expected[(root, meter)].allocated = expected[(p, meter)].amount
    assert final.limits == expected

    # --- usage: the start plus exactly what was accepted; the batch posted twice counts once
    consumed: dict[tuple[str, str], int] = defaultdict(int, start.consumed)
    accepted_twice: dict[int, int] = defaultdict(int)
    for call in usages:
        if call.response.status_code != 200:
            continue
        batch = call.args["events"]
        body = call.response.json()
        assert body["accepted"] + body["duplicates"] == len(batch)
        index = next((i for i, t in enumerate(twice) if t[2] is batch), None)
        if index is None:
            assert body == {"accepted": len(batch), "duplicates": 0}
            consumed[(call.args["org"], call.args["meter"])] += sum(q for _, q in batch)
        else:
            accepted_twice[index] += body["accepted"]
    for index, (org, meter, batch) in enumerate(twice):
        assert accepted_twice[index] == len(batch)
        consumed[(org, meter)] += sum(q for _, q in batch)
    assert final.consumed == {k: v for k, v in consumed.items() if v}

    if deadlocks_before is not None:
        await db.dispose()  # closing the connections flushes their statistics
        assert await deadlocks(db) == deadlocks_before


def _charge(meter: str, abroad: bool, amount: int) -> int:
    if meter != "credits" or not abroad or amount == 0:
        return 0
    return -(-amount * PCT // 100)


async def test_concurrent_first_allocations_to_one_child_create_its_row_once(db_url: str) -> None:
    """The child has no limit row yet: every allocator but the first must see the one the first
    inserted (on PostgreSQL, after waiting for the parent's row lock) instead of inserting it
    again."""
    h = await start_harness(db_url, db_pool_size=20)
    try:
        root = h.root.org_id
        response = await h.client.put(
            f"/orgs/{root}/limits/credits", json={"amount": 1_000}, headers=h.auth()
        )
        assert response.status_code == 200, response.text
        children = [(await h.create_org(root, f"Fresh {i}"))["id"] for i in range(3)]
        url = "/orgs/{root}/children/{child}/allocations/credits"
        responses = await asyncio.gather(
            *(
                h.client.put(
                    url.format(root=root, child=child), json={"amount": n}, headers=h.auth()
                )
                for child in children
                for n in range(1, 9)
            )
        )
        assert [r.status_code for r in responses] == [200] * len(responses), [
            r.text for r in responses if r.status_code != 200
        ]
        async with h.services.db.read() as conn:
            assert await verify(conn) == []
    finally:
        await stop_harness(h)
