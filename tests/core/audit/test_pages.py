"""Audit pages against a reference: for every filter combination and page size, walking the
cursors gives exactly the entries a filter over all the entries in Python gives, in the same
order, none skipped or repeated.

The entries' times are drawn out of order and with ties (appends are ordered by the chain, not by
``at``: an entry's time is taken when it is recorded, before the chain head is locked), so no
path may assume that ``at`` follows ``id``.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from orgplane.core.access.principal import Actor, Principal
from orgplane.core.access.service import authenticate
from orgplane.core.audit import queries
from orgplane.core.audit import service as audit
from orgplane.core.bootstrap import create_root_with_admin_key
from orgplane.db.engine import Tx
from orgplane.models import audit_log, orgs
from support.harness import Harness

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ACTORS = ("system:alice", "system:bob", "key:carol", "user:dan")
ACTIONS = ("credits.allocated", "credits.released", "org.updated", "key.created")


def _at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


async def _rows(h: Harness, statement: Any) -> list[Any]:
    async with h.services.db.read() as conn:
        return list((await conn.execute(statement)).all())


async def _append(h: Harness, targets: list[Any], rng: random.Random, count: int) -> None:
    """``count`` chained entries in a few transactions, over both tenants; each one's time drawn
    from 120 minutes (ties, and out of the chain's order)."""

    async def run(tx: Tx, n: int) -> None:
        for _ in range(n):
            org = rng.choice(targets)
            audit.record(
                tx,
                Actor.system(rng.choice(ACTORS)),
                action=rng.choice(ACTIONS),
                root_id=org.root_id,
                org_id=org.id,
                target_type="org",
                target_id=org.public_id,
            )
            tx.pending_audit[-1]["at"] = _at(rng.randrange(120))

    left = count
    while left:
        n = min(left, rng.randint(1, 60))
        await h.services.db.transaction(run, n)
        left -= n


async def _tree(h: Harness) -> dict[str, Any]:
    """A tenant with two levels below A and a sibling B, and another tenant."""
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    a1 = (await h.create_org(a, "A1"))["id"]
    a2 = (await h.create_org(a, "A2"))["id"]
    a11 = (await h.create_org(a1, "A11"))["id"]
    b = (await h.create_org(root, "B"))["id"]
    other = await h.services.db.transaction(create_root_with_admin_key, name="Other")
    o1 = (await h.create_org(other.org_id, "O1", key=other.api_key))["id"]
    refs = {"root": root, "A": a, "A1": a1, "A2": a2, "A11": a11, "B": b, "O1": o1}
    refs["Other"] = other.org_id
    found = await _rows(h, sa.select(orgs).where(orgs.c.public_id.in_(refs.values())))
    by_public = {r.public_id: r for r in found}
    return {name: by_public[ref] for name, ref in refs.items()}


def _matches(entry: Any, f: queries.LogFilters) -> bool:
    if f.since and entry.at < f.since:
        return False
    if f.until and entry.at >= f.until:
        return False
    if f.actor and entry.actor != f.actor:
        return False
    if f.action:
        if f.action.endswith("*"):
            return bool(entry.action.startswith(f.action[:-1]))
        return bool(entry.action == f.action)
    return True


async def _expected(h: Harness, org: Any, log: str, f: queries.LogFilters) -> list[int]:
    """The reference: every entry read, filtered and ordered in Python."""
    entries = await _rows(h, sa.select(audit_log))
    paths = {r.id: r.path for r in await _rows(h, sa.select(orgs.c.id, orgs.c.path))}
    if log == "audit":
        mine = [e for e in entries if e.org_id == org.id]
    else:
        mine = [e for e in entries if paths[e.org_id].startswith(org.path) and e.org_id != org.id]
    return sorted((e.id for e in mine if _matches(e, f)), reverse=True)


async def _root_principal(h: Harness) -> Principal:
    result = await authenticate(h.services.db.read, h.services.keys, h.root.api_key)
    assert result.principal is not None
    return result.principal


async def _paged(
    h: Harness, org: Any, log: str, f: queries.LogFilters, limit: int, between: Any = None
) -> list[int]:
    """Every page through the cursors; ``between`` runs after the first page."""
    ids: list[int] = []
    cursor: str | None = None
    while True:
        async with h.services.db.read() as conn:
            rows, cursor = await queries.page(
                conn,
                await _root_principal(h),
                org,
                log,  # type: ignore[arg-type]
                f,
                limit=limit,
                cursor=cursor,
            )
        assert len(rows) <= limit and (cursor is None or len(rows) == limit)
        ids += [r.id for r in rows]
        if between is not None and len(ids) == len(rows):
            await between()
        if cursor is None:
            return ids


def _windows(times: list[datetime]) -> list[tuple[datetime | None, datetime | None]]:
    first, last = min(times), max(times)
    tie = sorted(times)[len(times) // 2]
    return [
        (None, None),
        (None, first),  # before every entry
        (last + timedelta(microseconds=1), None),  # after every entry
        (first - timedelta(days=1), first),  # before every entry, both ends
        (tie, tie + timedelta(microseconds=1)),  # exactly the entries of one tie
        (tie, None),
        (None, tie),
        (_at(30), _at(31)),  # one minute: the entries at 30, none at 31
        (_at(20), _at(95)),
        (_at(119) + timedelta(seconds=1), _at(500)),  # between the last entry and nothing
    ]


@pytest.mark.parametrize("log", ["audit", "children_audit"])
async def test_pages_equal_a_filter_over_every_entry(h, monkeypatch, log):
    tree = await _tree(h)
    rng = random.Random(20261206)
    targets = [tree[n] for n in ("A", "A1", "A2", "A11", "B", "O1", "root")]
    await _append(h, targets, rng, 700)
    times = [r.at for r in await _rows(h, sa.select(audit_log.c.at))]
    windows = _windows(times)
    # Ties and times out of the chain's order are in the data.
    assert len(set(times)) < len(times)
    ordered = [r.at for r in await _rows(h, sa.select(audit_log.c.at).order_by(audit_log.c.id))]
    assert ordered != sorted(ordered)

    combos = [
        queries.LogFilters(since=s, until=u, actor=actor, action=action)
        for s, u in windows
        for actor in (None, "system:bob", "user:dan", "nobody")
        for action in (None, "credits.*", "org.updated")
        if not (s and u and s >= u)
    ]
    orgs_to_read = ["A", "A1"] if log == "children_audit" else ["A", "A11", "B"]
    # The descendants' log: the tenant walk alone, the walk then the subtree's orgs, and both
    # walks then the orgs (small limits on the walks and on what counts as a small subtree);
    # the walks test an entry's org against the subtree's hashed ids or by its path.
    settings = [
        (20_000, 100_000, 5_000, 20_000),
        (7, 50, 5_000, 20_000),
        (7, 50, 5_000, 0),
        (3, 40, 1, 20_000),
        (3, 40, 1, 0),
    ]
    if log == "audit":
        settings = settings[:1]
    checked = 0
    for walk, far, small, hashed in settings:
        monkeypatch.setattr(queries, "RECENT_WALK", walk)
        monkeypatch.setattr(queries, "FAR_WALK", far)
        monkeypatch.setattr(queries, "SMALL_SUBTREE", small)
        monkeypatch.setattr(queries, "HASHED_SUBTREE", hashed)
        for name in orgs_to_read:
            org = tree[name]
            for f in rng.sample(combos, 45):
                expected = await _expected(h, org, log, f)
                for limit in (4, 100):
                    got = await _paged(h, org, log, f, limit)
                    assert got == expected, (walk, name, f, limit)
                checked += bool(expected)
    assert checked > 20  # most combinations are not empty


async def test_entries_appended_between_pages_change_nothing_that_follows(h):
    tree = await _tree(h)
    rng = random.Random(7)
    targets = [tree[n] for n in ("A", "A1", "A11")]
    await _append(h, targets, rng, 300)

    async def more() -> None:
        await _append(h, targets, rng, 40)

    for org, log, f in [
        (tree["A"], "audit", queries.LogFilters(actor="system:bob", since=_at(10), until=_at(90))),
        (tree["A"], "audit", queries.LogFilters(actor="key:carol")),
        (tree["A"], "children_audit", queries.LogFilters(action="credits.*", since=_at(40))),
        (tree["A"], "children_audit", queries.LogFilters()),
    ]:
        expected = await _expected(h, org, log, f)
        assert expected
        assert await _paged(h, org, log, f, 7, between=more) == expected


async def test_children_audit_pages_keep_the_seq_and_id_cursor(h):
    tree = await _tree(h)
    await _append(h, [tree["A1"], tree["A2"]], random.Random(3), 30)
    url = f"/orgs/{tree['A'].public_id}/children_audit"
    response = await h.client.get(url, params={"limit": 5}, headers=h.auth())
    body = response.json()
    last = body["data"][-1]
    (row,) = await _rows(h, sa.select(audit_log.c.seq).where(audit_log.c.id == last["id"]))
    after = queries.decode_cursor(body["next_cursor"], int, int)
    assert after == (row.seq, last["id"])
