"""``orgplane access-log``: the operator's view of authentication attempts across the
installation, failures with unknown keys (which belong to no org) included, as NDJSON."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from orgplane.core.ids import new_native_key
from support.cli import CliResult, run_cli
from support.harness import Harness

ATTACKER = ("198.51.100.9", 40000)


def _lines(result: CliResult) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


async def test_access_log_shows_every_attempt_with_filters(
    h: Harness, db_url: str, tmp_path: Path
) -> None:
    started = datetime.now(UTC) - timedelta(seconds=1)
    child = (await h.create_org(h.root.org_id, "Child"))["id"]
    child_key = await h.create_key(child, ["orgs:read"])
    transport = httpx.ASGITransport(app=h.app, client=ATTACKER)
    async with httpx.AsyncClient(transport=transport, base_url="http://orgplane.test") as attacker:
        unknown = await attacker.get("/me", headers={"Authorization": f"Bearer {new_native_key()}"})
        assert unknown.status_code == 401
    assert (await h.client.get(f"/orgs/{child}", headers=h.auth(child_key))).status_code == 200
    await h.services.access_log.flush()

    db = ("--database-url", db_url)
    everything, failures, of_child, newest, later, earlier = await asyncio.gather(
        run_cli("access-log", *db, cwd=tmp_path),
        run_cli("access-log", "--status", "FAILURE", *db, cwd=tmp_path),
        run_cli("access-log", "--org", child, *db, cwd=tmp_path),
        run_cli("access-log", "--limit", "1", *db, cwd=tmp_path),
        run_cli("access-log", "--since", started.isoformat(), *db, cwd=tmp_path),
        run_cli("access-log", "--until", "2000-01-01", *db, cwd=tmp_path),
    )

    entries = _lines(everything)
    # Newest first: the child's read, the unknown key, then the root's two writes.
    assert [e["status"] for e in entries] == ["SUCCESS", "FAILURE", "SUCCESS", "SUCCESS"]
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)
    failure = entries[1]
    assert failure["org_id"] is None and failure["key_id"] is None
    assert failure["detail"] == "unknown key" and failure["ip"] == ATTACKER[0]
    assert (failure["method"], failure["path"], failure["action"]) == ("GET", "/me", "API_KEY_AUTH")
    assert failure["at"].endswith("Z") and datetime.fromisoformat(failure["at"]) >= started
    assert entries[0]["org_id"] == child and entries[2]["org_id"] == h.root.org_id
    assert set(entries[0]) == {
        "id",
        "at",
        "status",
        "action",
        "actor",
        "key_id",
        "org_id",
        "method",
        "path",
        "ip",
        "user_agent",
        "detail",
    }

    assert _lines(failures) == [failure]
    assert _lines(of_child) == [entries[0]]
    assert _lines(newest) == [entries[0]]
    assert _lines(later) == entries
    assert _lines(earlier) == []


async def test_access_log_names_the_bad_option(h: Harness, db_url: str, tmp_path: Path) -> None:
    db = ("--database-url", db_url)
    status, since, overflow, limit, org, window = await asyncio.gather(
        run_cli("access-log", "--status", "MAYBE", *db, cwd=tmp_path),
        run_cli("access-log", "--since", "yesterday", *db, cwd=tmp_path),
        run_cli("access-log", "--since", "0001-01-01T00:00:00+23:59", *db, cwd=tmp_path),
        run_cli("access-log", "--limit", "0", *db, cwd=tmp_path),
        run_cli("access-log", "--org", "org_nothere", *db, cwd=tmp_path),
        run_cli("access-log", "--since", "2026-02-01", "--until", "2026-01-01", *db, cwd=tmp_path),
    )
    for result, option in ((status, "--status"), (since, "--since"), (limit, "--limit")):
        assert result.returncode == 2, result
        assert option in result.stderr and "Traceback" not in result.stderr
    assert overflow.returncode == 2 and "--since" in overflow.stderr, overflow
    assert "Traceback" not in overflow.stderr
    assert org.returncode == 1 and "'org_nothere' not found" in org.stderr, org
    assert window.returncode == 1 and "since" in window.stderr, window
    for result in (status, since, overflow, limit, org, window):
        assert result.stdout == ""
