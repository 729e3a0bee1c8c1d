"""Many concurrent writers in one tree, on SQLite (one writer at a time) and PostgreSQL (row locks).

The tasks race moves that would form a cycle (A under B while B under A), moves against creates
that would together break the depth cap, creates under a subtree that keeps moving, and renames
of the orgs being moved. Afterwards the tree must satisfy every structural invariant, every
successful response's claim must hold, every refusal must have changed nothing, replaying the
audit log's moves over the starting tree must give exactly the final tree (no lost update), and
the audit chain must verify. Concurrent PATCHes or moves with one ``If-Match``: exactly one wins.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from support.harness import start_harness, stop_harness
from support.ledger_invariants import deadlocks
from support.tree_invariants import audit_entries, check_audit, check_structure, load_tree

MAX_DEPTH = 6
POOL = 15  # with as many again in overflow: every task can hold a connection at once

_request_numbers = itertools.count()


class Recorder:
    """Sends requests with their own request ids and keeps every answer."""

    def __init__(self, h: Any) -> None:
        self.h = h
        self.calls: list[tuple[str, str, dict[str, Any], Any]] = []

    async def send(self, method: str, url: str, **kwargs: Any) -> Any:
        request_id = f"conc-{next(_request_numbers)}"
        headers = {**self.h.auth(), "X-Request-Id": request_id, **kwargs.pop("headers", {})}
        response = await self.h.client.request(method, url, headers=headers, **kwargs)
        assert response.status_code < 500, response.text
        assert response.headers["x-request-id"] == request_id
        self.calls.append((request_id, method, {"url": url, **kwargs}, response))
        return response

    async def create(self, parent: str, name: str) -> Any:
        return await self.send("POST", f"/orgs/{parent}/children", json={"name": name})

    async def move(self, org: str, new_parent: str, **kwargs: Any) -> Any:
        return await self.send(
            "POST", f"/orgs/{org}/move", json={"parent_id": new_parent}, **kwargs
        )


async def test_concurrent_moves_and_creates_keep_the_tree_consistent(db_url: str) -> None:
    h = await start_harness(db_url, max_tree_depth=MAX_DEPTH, db_pool_size=POOL)
    try:
        await _run_the_race(h)
    finally:
        await stop_harness(h)


async def _run_the_race(h: Any) -> None:
    root = h.root.org_id

    async def org(parent: str, name: str) -> str:
        return str((await h.create_org(parent, name))["id"])

    # Cycle races: X_i and Y_i, siblings under the root, each moved under the other at once.
    pairs = [(await org(root, f"x{i}"), await org(root, f"y{i}")) for i in range(6)]
    # Depth races: T_i (two levels) moved under D_i's depth-3 leaf lands T_i's child at depth 5;
    # a child created under T_i's child at the same time would be at 6. Only one may succeed.
    depth_races = []
    for i in range(5):
        d_leaf = await org(await org(await org(root, f"d{i}"), f"d{i}.1"), f"d{i}.2")
        t = await org(root, f"t{i}")
        depth_races.append((d_leaf, t, await org(t, f"t{i}.1")))
    # Subtrees S (S -> S1) carried back and forth between P and Q while others build under them.
    carried_groups = []
    for i in range(2):
        s = await org(root, f"s{i}")
        carried_groups.append((await org(root, f"p{i}"), await org(root, f"q{i}"), s))
        carried_groups[-1] += (await org(s, f"s{i}.1"),)

    start = await load_tree(h.services.db)
    audit_start = await check_audit(h.services.db)
    deadlocks_before = await deadlocks(h.services.db)
    rec = Recorder(h)

    async def cycle_race(a: str, b: str) -> tuple[Any, Any]:
        return await asyncio.gather(rec.move(a, b), rec.move(b, a))

    async def depth_race(d_leaf: str, t: str, t1: str) -> tuple[Any, Any]:
        return await asyncio.gather(rec.move(t, d_leaf), rec.create(t1, f"{t1}-child"))

    async def carry(p: str, q: str, s: str, s1: str) -> list[Any]:
        return [await rec.move(s, p if n % 2 == 0 else q) for n in range(8)]

    async def build_under(p: str, q: str, s: str, s1: str) -> list[Any]:
        # Each create's parent is one the previous create made, while the subtree moves.
        child = await rec.create(s1, f"{s1}.child")
        assert child.status_code == 201, child.text
        grandchild = await rec.create(child.json()["id"], f"{s1}.grandchild")
        return [child, grandchild, await rec.create(s, f"{s}.child")]

    async def create_under_pair(a: str, n: int) -> Any:
        return await rec.create(a, f"{a}.{n}")

    async def rename(target: str, n: int) -> Any:
        return await rec.send("PATCH", f"/orgs/{target}", json={"name": f"renamed {n}"})

    pair_results, depth_results, carried, built, pair_creates, renames = await asyncio.gather(
        asyncio.gather(*(cycle_race(a, b) for a, b in pairs)),
        asyncio.gather(*(depth_race(*race) for race in depth_races)),
        asyncio.gather(*(carry(*group) for group in carried_groups)),
        asyncio.gather(*(build_under(*group) for group in carried_groups for _ in range(6))),
        asyncio.gather(*(create_under_pair(x, n) for n, pair in enumerate(pairs) for x in pair)),
        asyncio.gather(
            *(rename(target, n) for n, target in enumerate([*carried_groups[0][2:], *pairs[0]]))
        ),
    )

    # Which side wins each race is up to the scheduler; that exactly one does is not.
    for first, second in pair_results:
        assert sorted([first.status_code, second.status_code]) == [200, 409], (
            first.text,
            second.text,
        )
    for moved, created in depth_results:
        assert sorted([moved.status_code, created.status_code]) in ([200, 409], [201, 409]), (
            moved.text,
            created.text,
        )
    assert all(r.status_code == 200 for batch in carried for r in batch)
    assert all(r.status_code == 201 for batch in built for r in batch)
    assert all(r.status_code == 201 for r in pair_creates)
    assert all(r.status_code == 200 for r in renames)

    db = h.services.db
    final = await load_tree(db)
    check_structure(final, max_depth=MAX_DEPTH)

    # Each success's claim holds, and each refusal left no trace.
    entries = [e for e in await audit_entries(db) if e.seq > audit_start]
    by_request: dict[str, list[Any]] = {}
    for entry in entries:
        by_request.setdefault(entry.request_id, []).append(entry)
    expected_parents = {k: v.parent for k, v in start.items()}
    for request_id, method, call, response in rec.calls:
        written = by_request.get(request_id, [])
        if response.status_code >= 400:
            assert written == [], (call, response.text)
            continue
        body = response.json()
        assert [e.action for e in written] == [
            {"POST": "org.moved" if call["url"].endswith("/move") else "org.created"}.get(
                method, "org.updated"
            )
        ], call
        if method == "POST" and call["url"].endswith("/children"):
            parent = call["url"].split("/")[2]
            assert body["parent_id"] == parent
            # Nothing moves the orgs created here: each must still be where it was created.
            assert final[body["id"]].parent == parent
            assert not final[body["id"]].deleted
            expected_parents[body["id"]] = parent
        elif method == "POST":
            assert body["parent_id"] == call["json"]["parent_id"]
            assert written[0].after == {"parent_id": call["json"]["parent_id"]}
    assert all(e.request_id in {c[0] for c in rec.calls} for e in entries)

    # No lost update: the moves, replayed in the audit chain's (commit) order, give the tree.
    for entry in entries:
        if entry.action == "org.moved":
            assert expected_parents[entry.target_id] == entry.before["parent_id"], entry
            expected_parents[entry.target_id] = entry.after["parent_id"]
    assert {k: v.parent for k, v in final.items()} == expected_parents
    assert await check_audit(db) == audit_start + len(entries)
    renamed = {r.request.url.path.split("/")[-1]: r.json()["name"] for r in renames}
    for target, name in renamed.items():
        response = await h.client.get(f"/orgs/{target}", headers=h.auth())
        assert response.json()["name"] == name

    if deadlocks_before is not None:
        # Retries would hide them; the lock order is meant to make them impossible.
        await db.dispose()  # closing the connections flushes their statistics
        assert await deadlocks(db) == deadlocks_before


async def test_concurrent_patches_with_one_etag_let_exactly_one_through(db_url: str) -> None:
    h = await start_harness(db_url, db_pool_size=POOL)
    try:
        target = await h.create_org(h.root.org_id, "contended")
        read = await h.client.get(f"/orgs/{target['id']}", headers=h.auth())
        etag = read.headers["etag"]
        audit_start = await check_audit(h.services.db)

        async def patch(n: int) -> Any:
            return await h.client.patch(
                f"/orgs/{target['id']}",
                json={"name": f"writer {n}"},
                headers={**h.auth(), "If-Match": etag},
            )

        responses = await asyncio.gather(*(patch(n) for n in range(30)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] + [412] * 29, [r.text for r in responses if r.status_code != 412]
        winner = next(r for r in responses if r.status_code == 200)
        for loser in responses:
            if loser.status_code == 412:
                assert loser.headers["content-type"].startswith("application/problem+json")
        after = await h.client.get(f"/orgs/{target['id']}", headers=h.auth())
        assert after.json()["name"] == winner.json()["name"]
        assert after.json()["version"] == read.json()["version"] + 1
        assert after.headers["etag"] == winner.headers["etag"] != etag
        assert await check_audit(h.services.db) == audit_start + 1
    finally:
        await stop_harness(h)


async def test_concurrent_moves_with_one_etag_let_exactly_one_through(db_url: str) -> None:
    h = await start_harness(db_url, db_pool_size=POOL)
    try:
        root = h.root.org_id
        mover = (await h.create_org(root, "mover"))["id"]
        targets = [(await h.create_org(root, f"target {n}"))["id"] for n in range(12)]
        etag = (await h.client.get(f"/orgs/{mover}", headers=h.auth())).headers["etag"]
        audit_start = await check_audit(h.services.db)

        responses = await asyncio.gather(
            *(
                h.client.post(
                    f"/orgs/{mover}/move",
                    json={"parent_id": target},
                    headers={**h.auth(), "If-Match": etag},
                )
                for target in targets
            )
        )
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] + [412] * 11, [r.text for r in responses]
        winner = next(r for r in responses if r.status_code == 200)
        tree = await load_tree(h.services.db)
        check_structure(tree, max_depth=h.services.settings.max_tree_depth)
        assert tree[mover].parent == winner.json()["parent_id"]
        assert await check_audit(h.services.db) == audit_start + 1
    finally:
        await stop_harness(h)


async def test_concurrent_deletes_and_restores_see_the_tree_as_it_is(db_url: str) -> None:
    """A delete racing a move of its ancestor, double deletes and triple restores."""
    h = await start_harness(db_url, db_pool_size=POOL)
    try:
        root = h.root.org_id
        groups = []
        for i in range(4):
            a = (await h.create_org(root, f"a{i}"))["id"]
            b = (await h.create_org(a, f"b{i}"))["id"]
            c = (await h.create_org(b, f"c{i}"))["id"]
            d = (await h.create_org(a, f"d{i}"))["id"]
            d1 = (await h.create_org(d, f"d{i}.1"))["id"]
            e = (await h.create_org(root, f"e{i}"))["id"]
            e1 = (await h.create_org(e, f"e{i}.1"))["id"]
            r = (await h.create_org(root, f"r{i}"))["id"]
            deleted = await h.client.delete(f"/orgs/{e}?cascade=true", headers=h.auth())
            assert deleted.status_code == 200, deleted.text
            groups.append((a, b, c, d, d1, e, e1, r))
        audit_start = await check_audit(h.services.db)
        rec = Recorder(h)

        async def race(a: str, b: str, d: str, e: str, r: str) -> list[Any]:
            return await asyncio.gather(
                rec.move(a, r),
                # B has a live child wherever A is: without cascade, never deletable.
                rec.send("DELETE", f"/orgs/{b}"),
                rec.send("DELETE", f"/orgs/{b}"),
                rec.send("DELETE", f"/orgs/{d}", params={"cascade": "true"}),
                rec.send("DELETE", f"/orgs/{d}", params={"cascade": "true"}),
                *(rec.send("POST", f"/orgs/{e}/restore") for _ in range(3)),
            )

        results = await asyncio.gather(*(race(a, b, d, e, r) for a, b, _, d, _, e, _, r in groups))
        for moved, *deletes_b, delete_d1, delete_d2, restore1, restore2, restore3 in results:
            assert moved.status_code == 200, moved.text
            assert [x.status_code for x in deletes_b] == [409, 409], [x.text for x in deletes_b]
            assert sorted([delete_d1.status_code, delete_d2.status_code]) == [200, 404]
            codes = sorted(x.status_code for x in (restore1, restore2, restore3))
            assert codes == [200, 409, 409], [x.text for x in (restore1, restore2, restore3)]

        tree = await load_tree(h.services.db)
        check_structure(tree, max_depth=h.services.settings.max_tree_depth)
        for a, b, c, d, d1, e, e1, r in groups:
            assert tree[a].parent == r
            assert not any(tree[x].deleted for x in (a, b, c, e, e1))
            assert tree[d].deleted and tree[d1].deleted
            assert tree[d1].deleted_with == tree[d].id
        # Per group: the move, the two deletes of the cascade, the two restores; nothing else.
        assert await check_audit(h.services.db) == audit_start + 5 * len(groups)
    finally:
        await stop_harness(h)
