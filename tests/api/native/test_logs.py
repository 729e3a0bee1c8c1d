"""The audit log (entries, hash chain, verify) and the log endpoints (filters, pages, exports).

Every test taking ``h`` runs on SQLite and on PostgreSQL; ``orgplane audit verify`` runs as a
subprocess against the same database.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import sqlalchemy as sa

from orgplane.core.access.principal import Actor
from orgplane.core.audit import queries
from orgplane.core.audit import service as audit
from orgplane.core.bootstrap import create_root_with_admin_key
from orgplane.core.credentials import service as credentials
from orgplane.core.ids import new_native_key
from orgplane.db.engine import Tx
from orgplane.models import (
    access_log,
    audit_chain_heads,
    audit_log,
    idempotency_keys,
    metadata,
    orgs,
)
from orgplane.models import credentials as credentials_table
from support.harness import Harness

UA = "orgplane-tests/1.0"


async def _rows(h: Harness, statement: Any) -> list[Any]:
    async with h.services.db.read() as conn:
        return list((await conn.execute(statement)).all())


async def _exec(h: Harness, statement: Any) -> None:
    async def run(tx: Tx) -> None:
        await tx.execute(statement)

    await h.services.db.transaction(run)


async def _verify(h: Harness) -> list[audit.ChainBreak]:
    async with h.services.db.read() as conn:
        return await audit.verify(conn)


async def _cli_verify(db_url: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORGPLANE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orgplane.cli",
        "audit",
        "verify",
        "--database-url",
        db_url,
        env=clean,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert "Traceback" not in err.decode(), err.decode()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def _key(h: Harness, org: str, scopes: list[str], key: str | None = None) -> dict[str, Any]:
    response = await h.client.post(
        f"/orgs/{org}/api_keys", json={"name": "test", "scopes": scopes}, headers=h.auth(key)
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _org_pk(h: Harness, public_id: str) -> Any:
    (row,) = await _rows(h, sa.select(orgs).where(orgs.c.public_id == public_id))
    return row


async def _all_pages(
    h: Harness, url: str, params: dict[str, Any] | None = None, key: str | None = None
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**(params or {}), **({"cursor": cursor} if cursor else {})}
        response = await h.client.get(url, params=query, headers=h.auth(key))
        assert response.status_code == 200, response.text
        body = response.json()
        entries += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return entries


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- what an entry records ----------------------------------------------------------------


async def test_each_change_writes_an_entry_with_its_request_context(h):
    root = h.root.org_id
    headers = {**h.auth(), "User-Agent": UA}
    actor = f"key:{h.root.key_id}"
    made: list[tuple[str, httpx.Response]] = []

    response = await h.client.post(f"/orgs/{root}/children", json={"name": "A"}, headers=headers)
    assert response.status_code == 201
    a = response.json()["id"]
    made.append(("org.created", response))
    b = (await h.create_org(root, "B"))["id"]
    # A request id the client sends is kept (and echoed); otherwise one is made up.
    response = await h.client.patch(
        f"/orgs/{a}",
        json={"description": "first customer"},
        headers={**headers, "X-Request-Id": "req-patch-0001"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-patch-0001"
    made.append(("org.updated", response))
    response = await h.client.post(
        f"/orgs/{a}/api_keys", json={"name": "ci", "scopes": ["orgs:read"]}, headers=headers
    )
    key_id = response.json()["id"]
    made.append(("key.created", response))
    response = await h.client.delete(f"/orgs/{a}/api_keys/{key_id}", headers=headers)
    made.append(("key.revoked", response))
    response = await h.client.post(f"/orgs/{a}/move", json={"parent_id": b}, headers=headers)
    assert response.status_code == 200
    made.append(("org.moved", response))
    response = await h.client.delete(f"/orgs/{a}", headers=headers)
    made.append(("org.deleted", response))
    response = await h.client.post(f"/orgs/{a}/restore", headers=headers)
    assert response.status_code == 200
    made.append(("org.restored", response))

    # A request id that is not a plain token is replaced, and the entry has the replacement.
    response = await h.client.patch(
        f"/orgs/{a}",
        json={"description": "second"},
        headers={**headers, "X-Request-Id": "bad id"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] not in ("bad id", "")
    made.append(("org.updated", response))
    request_ids = [r.headers["x-request-id"] for _, r in made]
    assert len(set(request_ids)) == len(request_ids)
    for (action, _), request_id in zip(made, request_ids, strict=True):
        (entry,) = await _rows(h, sa.select(audit_log).where(audit_log.c.request_id == request_id))
        assert entry.action == action
        assert entry.actor == actor and entry.actor_key_id == h.root.key_id
        assert entry.target_id == (key_id if action.startswith("key.") else a)
        assert entry.target_type == ("key" if action.startswith("key.") else "org")
        assert entry.ip == "127.0.0.1"
        assert entry.user_agent == UA
        assert entry.surface == "api"

    by_action: dict[str, Any] = {}
    statement = sa.select(audit_log).where(audit_log.c.target_id.in_([a, key_id]))
    for row in await _rows(h, statement.order_by(audit_log.c.id)):
        by_action.setdefault(row.action, row)  # the first of each
    assert by_action["org.created"].before is None
    assert by_action["org.created"].after["name"] == "A"
    assert by_action["org.updated"].before == {"description": ""}
    assert by_action["org.updated"].after == {"description": "first customer"}
    assert by_action["key.created"].after["scopes"] == ["orgs:read"]
    assert by_action["key.revoked"].before["name"] == "ci"
    assert by_action["org.moved"].before == {"parent_id": root}
    assert by_action["org.moved"].after == {"parent_id": b}

    # The API shows the same entries, newest first, with the same request ids.
    trail = (await h.client.get(f"/orgs/{a}/audit", headers=h.auth())).json()["data"]
    assert [e["action"] for e in trail] == [action for action, _ in reversed(made)]
    assert [e["request_id"] for e in trail] == list(reversed(request_ids))
    assert {(e["actor"], e["ip"], e["user_agent"], e["org_id"], e["surface"]) for e in trail} == {
        (actor, "127.0.0.1", UA, a, "api")
    }

    # Reads write nothing.
    count = len(await _rows(h, sa.select(audit_log.c.id)))
    for url in (f"/orgs/{a}", f"/orgs/{root}/children", f"/orgs/{a}/audit", f"/orgs/{a}/api_keys"):
        assert (await h.client.get(url, headers=h.auth())).status_code == 200
    assert len(await _rows(h, sa.select(audit_log.c.id))) == count
    assert await _verify(h) == []


async def test_a_failed_request_leaves_no_entry_and_no_partial_change(h):
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    await h.create_org(a, "A1")
    b = (await h.create_org(root, "B"))["id"]
    assert (
        await h.client.patch(f"/orgs/{b}", json={"status": "disabled"}, headers=h.auth())
    ).status_code == 200
    reader = await h.create_key(root, ["orgs:read"])

    entries_before = await _rows(h, sa.select(audit_log.c.id))
    orgs_before = await _rows(h, sa.select(orgs.c.id, orgs.c.version, orgs.c.deleted_at))
    failed = [
        await h.client.delete(f"/orgs/{a}", headers=h.auth()),  # has a child: 409
        # The idempotency record is written first in this transaction, then the create fails.
        await h.client.post(
            f"/orgs/{b}/children",
            json={"name": "B1"},
            headers={**h.auth(), "Idempotency-Key": "create-b1"},
        ),
        await h.client.post(f"/orgs/{root}/children", json={"name": "\x00"}, headers=h.auth()),
        await h.client.patch(f"/orgs/{a}", json={"name": "X"}, headers=h.auth(reader)),
        await h.client.post(f"/orgs/{a}/move", json={"parent_id": a}, headers=h.auth()),
    ]
    assert [r.status_code for r in failed] == [409, 409, 400, 403, 409]
    assert await _rows(h, sa.select(audit_log.c.id)) == entries_before
    assert await _rows(h, sa.select(orgs.c.id, orgs.c.version, orgs.c.deleted_at)) == orgs_before
    assert not await _rows(h, sa.select(idempotency_keys))
    for response in failed:
        request_id = response.headers["x-request-id"]
        assert response.json()["request_id"] == request_id
        assert not await _rows(h, sa.select(audit_log).where(audit_log.c.request_id == request_id))
    assert await _verify(h) == []

    # The failed attempt did not use up the idempotency key: once B is active, it creates.
    await h.client.patch(f"/orgs/{b}", json={"status": "active"}, headers=h.auth())
    response = await h.client.post(
        f"/orgs/{b}/children",
        json={"name": "B1"},
        headers={**h.auth(), "Idempotency-Key": "create-b1"},
    )
    assert response.status_code == 201 and "idempotent-replayed" not in response.headers
    # The chain head counts exactly the entries there are.
    (head,) = await _rows(h, sa.select(audit_chain_heads))
    assert head.seq == len(await _rows(h, sa.select(audit_log.c.id)))
    assert await _verify(h) == []


# --- the hash chain -----------------------------------------------------------------------


async def test_verify_names_an_altered_entry_and_the_cli_exits_1(h, db_url):
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    await h.client.patch(f"/orgs/{a}", json={"description": "real"}, headers=h.auth())
    await h.create_org(a, "A1")
    # A second tenant's chain is checked separately and stays intact throughout.
    other = await h.services.db.transaction(create_root_with_admin_key, name="Other")
    await h.create_org(other.org_id, "O1", key=other.api_key)

    assert await _verify(h) == []
    code, out = await _cli_verify(db_url)
    assert (code, out.strip()) == (0, "audit log verified: every chain is intact")

    (updated,) = await _rows(h, sa.select(audit_log).where(audit_log.c.action == "org.updated"))
    await _exec(
        h,
        sa.update(audit_log)
        .where(audit_log.c.id == updated.id)
        .values(after={"description": "forged"}),
    )
    breaks = await _verify(h)
    assert [(b.root_id, b.seq, b.entry_id) for b in breaks] == [
        (updated.root_id, updated.seq, updated.id)
    ]
    assert "altered" in breaks[0].reason
    code, out = await _cli_verify(db_url)
    assert code == 1
    (line,) = out.splitlines()
    assert f"tenant root {updated.root_id}: broken at seq {updated.seq}" in line
    assert "altered" in line

    # Put it back: intact again (the hash covers the content, not the row).
    await _exec(
        h, sa.update(audit_log).where(audit_log.c.id == updated.id).values(after=updated.after)
    )
    assert await _verify(h) == []
    # The surface it came through is covered too.
    assert updated.surface == "api"
    await _exec(
        h, sa.update(audit_log).where(audit_log.c.id == updated.id).values(surface="console")
    )
    assert [b.entry_id for b in await _verify(h)] == [updated.id]
    await _exec(h, sa.update(audit_log).where(audit_log.c.id == updated.id).values(surface="api"))
    assert await _verify(h) == []
    # Rewriting the action of an earlier entry is caught at that entry.
    (first_child,) = await _rows(
        h,
        sa.select(audit_log).where(audit_log.c.target_id == a, audit_log.c.action == "org.created"),
    )
    await _exec(
        h, sa.update(audit_log).where(audit_log.c.id == first_child.id).values(action="org.viewed")
    )
    breaks = await _verify(h)
    assert [(b.seq, b.entry_id) for b in breaks] == [(first_child.seq, first_child.id)]
    assert "altered" in breaks[0].reason


async def test_verify_reports_deleted_entries(h, db_url):
    root = h.root.org_id
    for name in ("A", "B", "C"):
        await h.create_org(root, name)
    chain = await _rows(h, sa.select(audit_log).order_by(audit_log.c.seq))
    assert [e.seq for e in chain] == list(range(1, len(chain) + 1))
    assert await _verify(h) == []

    # The newest entry gone: the chain ends before its head.
    await _exec(h, sa.delete(audit_log).where(audit_log.c.id == chain[-1].id))
    (gap,) = await _verify(h)
    assert gap.seq == chain[-1].seq and "ends before its head" in gap.reason

    # One in the middle gone too: that is now the first broken link, reported as missing.
    middle = chain[2]
    await _exec(h, sa.delete(audit_log).where(audit_log.c.id == middle.id))
    (gap,) = await _verify(h)
    assert gap.seq == middle.seq and "missing" in gap.reason
    code, out = await _cli_verify(db_url)
    assert code == 1 and f"broken at seq {middle.seq}" in out and "missing" in out


# --- the log endpoints: reach -------------------------------------------------------------


async def test_log_endpoints_answer_401_403_404_and_succeed(h):
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    await h.create_org(a, "A1")
    b = (await h.create_org(root, "B"))["id"]
    a_auditor = await h.create_key(a, ["audit:read"])
    a_audit_writer = await h.create_key(a, ["audit:write"])
    a_no_audit = await h.create_key(a, ["orgs:write", "keys:write"])
    other = await h.services.db.transaction(create_root_with_admin_key, name="Other")

    for log in ("audit", "children_audit", "access_log"):
        url = f"/orgs/{a}/{log}"
        for accept in ("application/json", "application/x-ndjson", "text/csv"):
            for headers in ({}, {"Authorization": "Bearer opk_nope"}):
                response = await h.client.get(url, headers={**headers, "Accept": accept})
                assert response.status_code == 401, (log, accept)
            response = await h.client.get(url, headers={**h.auth(a_no_audit), "Accept": accept})
            assert response.status_code == 403, (log, accept)
            assert "audit:read" in response.json()["detail"]
            for key, org_ref in (
                (a_auditor, root),
                (a_auditor, b),
                (other.api_key, a),
                (a_auditor, "nope123"),
            ):
                response = await h.client.get(
                    f"/orgs/{org_ref}/{log}", headers={**h.auth(key), "Accept": accept}
                )
                assert response.status_code == 404, (log, accept, org_ref)
                assert response.json()["detail"] == f"organization {org_ref!r} not found"
            for key in (a_auditor, a_audit_writer, None):
                response = await h.client.get(url, headers={**h.auth(key), "Accept": accept})
                assert response.status_code == 200, (log, accept, response.text)
        response = await h.client.get(url, headers=h.auth(a_auditor))
        assert response.json()["data"], log


# --- the log endpoints: what each one holds -----------------------------------------------


async def test_audit_is_the_orgs_own_and_children_audit_every_descendant(h):
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    a1 = (await h.create_org(a, "A1"))["id"]
    a11 = (await h.create_org(a1, "A11"))["id"]
    b = (await h.create_org(root, "B"))["id"]
    b1 = (await h.create_org(b, "B1"))["id"]
    await h.client.patch(f"/orgs/{a11}", json={"description": "deep"}, headers=h.auth())
    assert (await h.client.delete(f"/orgs/{b}?cascade=true", headers=h.auth())).status_code == 200

    own = await _all_pages(h, f"/orgs/{root}/audit")
    assert {e["org_id"] for e in own} == {root}
    assert {e["action"] for e in own} == {"org.created", "key.created"}  # the bootstrap

    below_root = await _all_pages(h, f"/orgs/{root}/children_audit")
    assert {e["org_id"] for e in below_root} == {a, a1, a11, b, b1}
    assert {(e["org_id"], e["action"]) for e in below_root} >= {
        (a11, "org.updated"),
        (b, "org.deleted"),
        (b1, "org.deleted"),
    }
    below_a = await _all_pages(h, f"/orgs/{a}/children_audit")
    assert {e["org_id"] for e in below_a} == {a1, a11}
    assert [e["action"] for e in await _all_pages(h, f"/orgs/{a11}/children_audit")] == []
    assert [e["action"] for e in await _all_pages(h, f"/orgs/{a11}/audit")] == [
        "org.updated",
        "org.created",
    ]
    # A deleted org's trail stays readable (for as long as it can be restored).
    assert [e["action"] for e in await _all_pages(h, f"/orgs/{b}/audit")] == [
        "org.deleted",
        "org.created",
    ]
    assert {e["org_id"] for e in await _all_pages(h, f"/orgs/{b}/children_audit")} == {b1}
    # Together the two views hold every entry of the tenant exactly once.
    everything = await _rows(
        h, sa.select(audit_log.c.id).where(audit_log.c.root_id == (await _org_pk(h, root)).id)
    )
    assert sorted(e["id"] for e in own + below_root) == sorted(r.id for r in everything)


async def test_log_filters(h):
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    writer = await _key(h, root, ["orgs:write"])
    for i in range(3):
        await h.client.patch(f"/orgs/{a}", json={"description": f"v{i}"}, headers=h.auth())
    a1 = (await h.create_org(a, "A1", key=writer["api_key"]))["id"]
    await h.client.patch(
        f"/orgs/{a1}", json={"description": "w"}, headers=h.auth(writer["api_key"])
    )
    await _key(h, a1, ["orgs:read"])
    url = f"/orgs/{root}/children_audit"
    everything = await _all_pages(h, url)
    assert len(everything) == 7

    async def actions(**params: Any) -> list[str]:
        return [e["action"] for e in await _all_pages(h, url, params)]

    assert await actions(action="org.updated") == ["org.updated"] * 4
    assert await actions(action="org.*") == [
        e["action"] for e in everything if e["action"].startswith("org.")
    ]
    assert await actions(action="key.*") == ["key.created"]
    assert await actions(action="org") == []
    assert await actions(action="org_*") == []  # _ is a literal, not a LIKE wildcard
    assert await actions(action="*") == [e["action"] for e in everything]
    by_writer = await _all_pages(h, url, {"actor": f"key:{writer['id']}"})
    assert [(e["action"], e["org_id"]) for e in by_writer] == [
        ("org.updated", a1),
        ("org.created", a1),
    ]
    assert await actions(actor=f"key:{writer['id']}", action="org.updated") == ["org.updated"]
    assert await actions(actor="key:key_nobody") == []

    # Time ranges: since is inclusive, until exclusive; any ISO 8601 zone notation.
    oldest_first = list(reversed(everything))
    pivot = oldest_first[3]
    at = _ts(pivot["timestamp"])
    expected_since = [e["id"] for e in everything if _ts(e["timestamp"]) >= at]
    expected_until = [e["id"] for e in everything if _ts(e["timestamp"]) < at]
    assert pivot["id"] in expected_since and expected_until
    for since in (
        at.isoformat(),
        at.isoformat().replace("+00:00", "Z"),
        at.astimezone(timezone(timedelta(hours=2))).isoformat(),
        at.replace(tzinfo=None).isoformat(),  # no zone: UTC
    ):
        got = [e["id"] for e in await _all_pages(h, url, {"since": since})]
        assert got == expected_since, since
    got = [e["id"] for e in await _all_pages(h, url, {"until": at.isoformat()})]
    assert got == expected_until
    newest = _ts(everything[0]["timestamp"])
    got = await _all_pages(h, url, {"since": at.isoformat(), "until": newest.isoformat()})
    assert [e["id"] for e in got] == [i for i in expected_since if i != everything[0]["id"]]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert await _all_pages(h, url, {"since": future}) == []

    for bad in (
        {"since": newest.isoformat(), "until": at.isoformat()},
        {"since": at.isoformat(), "until": at.isoformat()},
        {"since": "yesterday"},
        {"cursor": "%%%"},
        {"limit": 0},
    ):
        for accept in ("application/json", "application/x-ndjson", "text/csv"):
            if "cursor" in bad and accept != "application/json":
                continue  # an export is the whole range: it has no cursor to check
            response = await h.client.get(url, params=bad, headers={**h.auth(), "Accept": accept})
            assert response.status_code == 400, (bad, accept, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
    response = await h.client.get(
        url, params={"since": newest.isoformat(), "until": at.isoformat()}, headers=h.auth()
    )
    assert response.json()["errors"][0]["field"] == "query.since"


async def test_pages_are_newest_first_without_duplicates(h):
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    for i in range(11):
        await h.client.patch(f"/orgs/{a}", json={"description": f"v{i}"}, headers=h.auth())
    url = f"/orgs/{a}/audit"
    whole = (await h.client.get(url, params={"limit": 1000}, headers=h.auth())).json()
    assert whole["next_cursor"] is None and len(whole["data"]) == 12

    pages: list[list[int]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        body = (await h.client.get(url, params=params, headers=h.auth())).json()
        pages.append([e["id"] for e in body["data"]])
        if len(pages) == 1:
            # A change made between pages neither repeats nor shifts what follows.
            await h.client.patch(f"/orgs/{a}", json={"description": "late"}, headers=h.auth())
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [5, 5, 2]
    flat = [i for p in pages for i in p]
    assert flat == [e["id"] for e in whole["data"]]
    assert flat == sorted(flat, reverse=True) and len(set(flat)) == len(flat)
    timestamps = [_ts(e["timestamp"]) for e in whole["data"]]
    assert timestamps == sorted(timestamps, reverse=True)

    # Filters and pages combine.
    updated = await _all_pages(h, url, {"action": "org.updated", "limit": 4})
    assert len(updated) == 12 and all(e["action"] == "org.updated" for e in updated)

    # The access log pages the same way.
    for _ in range(6):
        await h.client.get(f"/orgs/{root}", headers=h.auth())
    log = await _all_pages(h, f"/orgs/{root}/access_log", {"limit": 3})
    ids = [e["id"] for e in log]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids) >= 6


async def test_children_audit_is_exactly_the_subtree_whichever_way_it_is_read(h, monkeypatch):
    """The descendants' log walks the tenant's newest entries, then reads older ones from the
    subtree's orgs: pages, filters and exports give the same entries whichever part answers."""
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    a1 = (await h.create_org(a, "A1"))["id"]
    a2 = (await h.create_org(a, "A2"))["id"]
    a11 = (await h.create_org(a1, "A11"))["id"]
    b = (await h.create_org(root, "B"))["id"]
    b1 = (await h.create_org(b, "B1"))["id"]
    other = await h.services.db.transaction(create_root_with_admin_key, name="Other")
    o1 = (await h.create_org(other.org_id, "O1", key=other.api_key))["id"]
    # Another tenant's path can share the subtree's text prefix only through its own root: the
    # entries below must still be this tenant's alone.
    rows = {p: await _org_pk(h, p) for p in (a, a1, a2, a11, b, b1, o1, root, other.org_id)}
    cycle = [a, a1, o1, a11, b1, a2, root, b, other.org_id]

    async def entries(tx: Tx, start: int) -> None:
        for i in range(start, start + 9):
            org = rows[cycle[i % len(cycle)]]
            audit.record(
                tx,
                Actor.system("system:alice" if i % 3 else "system:bob"),
                action="credits.allocated" if i % 2 else "org.updated",
                root_id=org.root_id,
                org_id=org.id,
                target_type="org",
                target_id=org.public_id,
                before=None,
                after={"n": i},
            )

    for start in range(0, 54, 9):
        await h.services.db.transaction(entries, start)

    a_row = rows[a]
    (middle,) = await _rows(
        h,
        sa.select(audit_log.c.at)
        .where(audit_log.c.action == "credits.allocated")
        .order_by(audit_log.c.id)
        .offset(12)
        .limit(1),
    )

    async def expected(**where: Any) -> list[int]:
        statement = (
            sa.select(audit_log.c.id)
            .select_from(audit_log.join(orgs, orgs.c.id == audit_log.c.org_id))
            .where(orgs.c.path.startswith(a_row.path), orgs.c.id != a_row.id)
            .order_by(audit_log.c.id.desc())
        )
        if "action" in where:
            statement = statement.where(audit_log.c.action.startswith(where["action"]))
        if "actor" in where:
            statement = statement.where(audit_log.c.actor == where["actor"])
        if "since" in where:
            statement = statement.where(audit_log.c.at >= where["since"])
        return [r.id for r in await _rows(h, statement)]

    everything = await expected()
    org_ids = {e["org_id"] for e in await _all_pages(h, f"/orgs/{a}/children_audit")}
    assert org_ids == {a1, a2, a11} and len(everything) > 20

    cases = [
        ({}, await expected()),
        ({"action": "credits.*"}, await expected(action="credits.")),
        ({"actor": "system:bob"}, await expected(actor="system:bob")),
        (
            {"action": "credits.*", "since": middle.at.isoformat()},
            await expected(action="credits.", since=middle.at),
        ),
    ]
    assert all(ids for _, ids in cases)
    url = f"/orgs/{a}/children_audit"
    for walk in (1, 5, 17, 10_000):  # the older part answers all, some, or none of it
        monkeypatch.setattr(queries, "RECENT_WALK", walk)
        monkeypatch.setattr(queries, "EXPORT_BATCH", 4)
        for params, ids in cases:
            for limit in (1, 3, 100):
                got = await _all_pages(h, url, {**params, "limit": limit})
                assert [e["id"] for e in got] == ids, (walk, params, limit)
            response = await h.client.get(
                url, params=params, headers={**h.auth(), "Accept": "application/x-ndjson"}
            )
            assert response.status_code == 200
            assert [json.loads(x)["id"] for x in response.text.splitlines()] == ids

    # A cursor of an org's own log is not one of this log's.
    page = (await h.client.get(f"/orgs/{a1}/audit?limit=1", headers=h.auth())).json()
    assert page["next_cursor"]
    response = await h.client.get(url, params={"cursor": page["next_cursor"]}, headers=h.auth())
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "query.cursor"
    # The other tenant's descendants' log holds its own entries only.
    theirs = await _all_pages(h, f"/orgs/{other.org_id}/children_audit", key=other.api_key)
    assert {e["org_id"] for e in theirs} == {o1}


# --- exports ------------------------------------------------------------------------------

BULK = 1030  # more than one export batch (1000)


async def _bulk_audit(h: Harness, org_public_id: str, count: int) -> None:
    """Append ``count`` real, chained entries for an org in one transaction."""
    org = await _org_pk(h, org_public_id)

    async def run(tx: Tx) -> None:
        for i in range(count):
            audit.record(
                tx,
                Actor.system("bulk"),
                action="test.bulk",
                root_id=org.root_id,
                org_id=org.id,
                target_type="org",
                target_id=org.public_id,
                before={"n": i} if i % 2 else None,
                after={"n": i + 1, "note": 'quote " and, comma'},
            )

    await h.services.db.transaction(run)


async def test_exports_stream_every_filtered_entry_as_ndjson_and_csv(h):
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    await h.client.patch(f"/orgs/{a}", json={"description": "d"}, headers=h.auth())
    await _bulk_audit(h, a, BULK)
    assert await _verify(h) == []
    total = BULK + 2
    url = f"/orgs/{a}/audit"

    response = await h.client.get(url, headers={**h.auth(), "Accept": "application/x-ndjson"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.headers["content-disposition"] == f'attachment; filename="{a}-audit.ndjson"'
    assert response.text.endswith("\n")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) == total
    ids = [e["id"] for e in lines]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == total
    db_ids = await _rows(
        h, sa.select(audit_log.c.id).where(audit_log.c.org_id == (await _org_pk(h, a)).id)
    )
    assert set(ids) == {r.id for r in db_ids}
    # Each line is the same object a page holds.
    page = (await h.client.get(url, params={"limit": 3}, headers=h.auth())).json()["data"]
    assert lines[:3] == page

    # Filters apply to exports.
    response = await h.client.get(
        url, params={"action": "org.*"}, headers={**h.auth(), "Accept": "application/x-ndjson"}
    )
    assert [json.loads(x)["action"] for x in response.text.splitlines()] == [
        "org.updated",
        "org.created",
    ]

    response = await h.client.get(url, headers={**h.auth(), "Accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == f'attachment; filename="{a}-audit.csv"'
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == total
    assert list(rows[0]) == list(lines[0])
    for row, entry in zip(rows, lines, strict=True):
        assert int(row["id"]) == entry["id"]
        assert row["action"] == entry["action"]
        for field in ("before", "after"):
            assert (json.loads(row[field]) if row[field] else None) == entry[field]
    assert json.loads(rows[0]["after"])["note"] == 'quote " and, comma'

    # children_audit exports the descendants' entries, access_log its own.
    response = await h.client.get(
        f"/orgs/{root}/children_audit", headers={**h.auth(), "Accept": "application/x-ndjson"}
    )
    assert len(response.text.splitlines()) == total
    assert response.headers["content-disposition"].endswith(f'"{root}-children_audit.ndjson"')


async def test_access_log_exports_and_an_empty_csv_still_has_its_header(h):
    root = h.root.org_id
    org = await _org_pk(h, root)
    for i in range(BULK):
        h.services.access_log.record(
            actor="anonymous",
            action="API_KEY_AUTH",
            status="FAILURE",
            org_id=org.id,
            root_id=org.id,
            method="GET",
            path=f"/orgs/{root}",
            detail=f"bulk {i}",
        )
    await h.services.access_log.flush()
    url = f"/orgs/{root}/access_log"
    response = await h.client.get(
        url, params={"status": "failure"}, headers={**h.auth(), "Accept": "application/x-ndjson"}
    )
    assert response.status_code == 200
    lines = [json.loads(x) for x in response.text.splitlines()]
    assert len(lines) == BULK and {e["status"] for e in lines} == {"FAILURE"}
    assert response.headers["content-disposition"].endswith(f'"{root}-access.ndjson"')

    response = await h.client.get(url, params={"status": "bogus"}, headers=h.auth())
    assert response.status_code == 400
    # Filters by time apply to the access log as to the audit log.
    cut = _ts(lines[10]["timestamp"])
    newer = await _all_pages(h, url, {"since": cut.isoformat(), "status": "FAILURE"})
    assert [e["id"] for e in newer] == [e["id"] for e in lines if _ts(e["timestamp"]) >= cut]
    older = await _all_pages(h, url, {"until": cut.isoformat(), "status": "FAILURE"})
    assert len(newer) + len(older) == BULK

    response = await h.client.get(url, headers={**h.auth(), "Accept": "text/csv"})
    rows = list(csv.DictReader(io.StringIO(response.text)))
    # Every bulk row, plus the successful authentications of this test's own requests.
    successes = [r for r in rows if r["status"] == "SUCCESS"]
    assert len(rows) == BULK + len(successes) and len(successes) >= 2
    assert rows[: len(successes)] == successes  # newest first

    response = await h.client.get(
        f"/orgs/{root}/audit",
        params={"action": "nothing.*"},
        headers={**h.auth(), "Accept": "text/csv"},
    )
    assert response.status_code == 200
    (header,) = response.text.splitlines()
    assert header.split(",")[:3] == ["id", "seq", "timestamp"]
    response = await h.client.get(
        url, params={"action": "nothing"}, headers={**h.auth(), "Accept": "text/csv"}
    )
    assert response.text.splitlines()[0].split(",")[:3] == ["id", "timestamp", "user"]
    response = await h.client.get(
        url, params={"action": "nothing"}, headers={**h.auth(), "Accept": "application/x-ndjson"}
    )
    assert response.status_code == 200 and response.text == ""


# --- the access log -----------------------------------------------------------------------


async def test_every_authentication_attempt_is_in_the_access_log(h):
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    gone = (await h.create_org(a, "Gone"))["id"]
    good = await _key(h, a, ["orgs:read"])
    revoked = await _key(h, a, ["orgs:read"])
    await h.client.delete(f"/orgs/{a}/api_keys/{revoked['id']}", headers=h.auth())

    # Minted live, then aged past its expiry (no command mints an expired key).
    expired = await h.services.db.transaction(
        credentials.mint,
        actor=Actor.system("test"),
        org_ref=a,
        name="old",
        scopes=["orgs:read"],
        expires_at=datetime.now(UTC) + timedelta(minutes=1),
    )
    await _exec(
        h,
        sa.update(credentials_table)
        .where(credentials_table.c.public_id == expired.row.public_id)
        .values(expires_at=datetime.now(UTC) - timedelta(minutes=1)),
    )
    orphan = await _key(h, gone, ["orgs:read"])
    assert (await h.client.delete(f"/orgs/{gone}", headers=h.auth())).status_code == 200
    unknown = new_native_key()

    attempts = [
        ("SUCCESS", {"Authorization": f"Bearer {good['api_key']}"}, None),
        ("FAILURE", {}, "missing credentials"),
        ("FAILURE", {"Authorization": "Bearer opk_malformed"}, "malformed key"),
        ("FAILURE", {"Authorization": f"Bearer {unknown}"}, "unknown key"),
        ("FAILURE", {"Authorization": f"Bearer {revoked['api_key']}"}, "revoked key"),
        ("FAILURE", {"Authorization": f"Token {expired.secret}"}, "expired key"),
        ("FAILURE", {"Authorization": f"Bearer {orphan['api_key']}"}, "organization not active"),
    ]
    for status, headers, _ in attempts:
        response = await h.client.get(f"/orgs/{a}", headers={**headers, "User-Agent": UA})
        assert response.status_code == (200 if status == "SUCCESS" else 401)

    # Failures of a known key land in that key's org, with its key id.
    log = (await h.client.get(f"/orgs/{a}/access_log", headers=h.auth())).json()["data"]
    seen = [(e["status"], e["key_id"], e["detail"]) for e in log if e["user_agent"] == UA]
    assert seen == [  # newest first
        ("FAILURE", expired.row.public_id, "expired key"),
        ("FAILURE", revoked["id"], "revoked key"),
        ("SUCCESS", good["id"], None),
    ]
    success = next(e for e in log if e["status"] == "SUCCESS" and e["user_agent"] == UA)
    assert success["user"] == f"key:{good['id']}" and success["action"] == "API_KEY_AUTH"
    assert (success["method"], success["path"], success["ip"]) == ("GET", f"/orgs/{a}", "127.0.0.1")
    gone_log = (await h.client.get(f"/orgs/{gone}/access_log", headers=h.auth())).json()["data"]
    assert [(e["key_id"], e["detail"]) for e in gone_log if e["user_agent"] == UA] == [
        (orphan["id"], "organization not active")
    ]
    # The root's own log holds the root key's uses, not A's.
    root_log = await _all_pages(h, f"/orgs/{root}/access_log")
    assert {e["key_id"] for e in root_log} == {h.root.key_id}

    # Attempts that name no known key belong to no org.
    anonymous = await _rows(
        h,
        sa.select(access_log).where(access_log.c.user_agent == UA, access_log.c.org_id.is_(None)),
    )
    assert sorted(r.detail for r in anonymous) == [
        "malformed key",
        "missing credentials",
        "unknown key",
    ]
    for row in anonymous:
        assert (row.actor, row.key_id, row.root_id, row.status) == (
            "anonymous",
            None,
            None,
            "FAILURE",
        )
        assert (row.method, row.path, row.ip) == ("GET", f"/orgs/{a}", "127.0.0.1")
        assert row.at is not None
    assert len(await _rows(h, sa.select(access_log).where(access_log.c.user_agent == UA))) == len(
        attempts
    )


async def test_no_secret_is_ever_stored_in_a_log(h):
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    used = await _key(h, a, ["orgs:write", "keys:write", "audit:read"])
    revoked = await _key(h, a, ["orgs:read"], key=used["api_key"])
    await h.client.delete(f"/orgs/{a}/api_keys/{revoked['id']}", headers=h.auth(used["api_key"]))
    unknown = new_native_key()
    secrets = [h.root.api_key, used["api_key"], revoked["api_key"], unknown]
    for secret in secrets:
        for url in (f"/orgs/{a}", f"/orgs/{a}/children?x={secret}"):
            response = await h.client.get(url, headers=h.auth(secret))
            assert secret not in response.text
        await h.client.patch(f"/orgs/{a}", json={"description": "x"}, headers=h.auth(secret))
    await h.client.get(f"/orgs/{a}/access_log", headers=h.auth())

    logged = await _rows(h, sa.select(access_log))
    assert len(logged) >= 3 * len(secrets)
    for table in metadata.sorted_tables:
        for row in await _rows(h, sa.select(table)):
            text = " ".join(str(value) for value in row)
            for secret in secrets:
                # The 8-character hint is shown in listings by design; nothing beyond it is kept.
                assert secret[8:] not in text, (table.name, secret)
    for log in ("audit", "access_log"):
        for accept in ("application/x-ndjson", "text/csv"):
            response = await h.client.get(
                f"/orgs/{a}/{log}", headers={**h.auth(), "Accept": accept}
            )
            assert response.status_code == 200 and response.text
            assert not any(secret[8:] in response.text for secret in secrets)
