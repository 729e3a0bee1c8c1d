"""The scale scenario: orgplane over a large tree (1,000,000 orgs, 10,000,000 audit entries by
default in the suite), and a command to time the bulk loader alone.

As part of ``bench/suite.py`` (``--only scale``, ``--scale N``), for each database it makes a
fresh orgplane database (``orgplane migrate``, ``orgplane bootstrap --json``), fills it with
``bench/loader.py`` (N orgs in four tenant trees, 10 x N audit entries in valid hash chains,
users, keys, usage events and their counters), serves it with ``orgplane serve`` (granian,
1 worker, on 127.0.0.1), creates an ``orgs:read`` + ``audit:read`` key of the main tenant's root
through the API, and:

* walks the wide org's children (N/15 of them) page by page through ``next_cursor`` and checks
  that every child came exactly once — the keyset pages the figures then rotate over;
* measures, with wrk at 1 connection (the latency targets) and at 32 (throughput), each figure
  rotating over several URLs through a generated Lua script:

  - ``scale_get_org``: ``GET /orgs/{id}`` of the deepest org under the key;
  - ``children_page``: ``GET /orgs/{wide}/children?limit=100&cursor=...``, pages from the whole
    listing (target p99 <= 20 ms);
  - ``audit_action``: ``GET /orgs/{id}/audit?action=...&limit=100`` on the 10 orgs with the most
    entries, four actions (target p99 <= 50 ms, as for the two below);
  - ``audit_window``: ``GET /orgs/{id}/audit?actor=...&since=...&until=...`` on the same orgs,
    30-day windows through the year;
  - ``children_audit``: ``GET /orgs/{region}/children_audit?action=credits.*&since=...`` over
    the regions of the main tenant (their whole subtrees' entries, joined through the paths);

* reads the server's memory after that load: VmRSS of every process of its process group
  (target <= 200 MB at 1,000,000 orgs);
* then, on the same server, the console's pages (``bench/console_pages.py``), signed in as the
  bootstrap's first owner, in rounds of their own: ``console_org`` (``GET /console/orgs/{id}``
  over orgs of the main tenant, the wide org included) and ``console_tree_level`` (the fragment
  of a tree level, ``GET /console/orgs/{wide}/children?cursor=...``); target p99 <= 50 ms at
  1 connection, and >= 500 pages/s at 32 for ``console_org`` on SQLite.

``orgplane audit verify`` is not run on the scale data by default (it reads every entry back:
about 45 s per million entries on a 2-core machine); ``--verify-audit`` runs it.

Alone, it times the loader (and leaves nothing behind)::

    .venv/bin/python bench/scale.py --orgs 100000                 # SQLite and PostgreSQL
    .venv/bin/python bench/scale.py --orgs 100000 --no-sqlite --verify-audit
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import traceback
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
from console_pages import run_console
from harness import Figure, Servers, create_key, group_rss, serve_orgplane
from loader import Sizes, load
from quick import (
    Deadline,
    fresh_install,
    interrupt,
    postgres_database,
)
from scenarios import Context, data_summary, measure_figures, prepare, record, verify_audit

TARGETS_MS = {
    "children_page": 20.0,
    "audit_action": 50.0,
    "audit_window": 50.0,
    "children_audit": 50.0,
}
RSS_TARGET_MIB = 200.0
AUDIT_ACTIONS = ("org.updated", "credits.allocated", "key.created", "usage.ingested")
ROTATION = 100  # pages of children in the rotation


def walk_children(client: httpx.Client, wide: str, expected: int, deadline: Deadline) -> list[str]:
    """Every page of the wide org's children; returns the cursors, checks each child once."""
    cursors: list[str] = []
    seen: set[str] = set()
    cursor: str | None = None
    while True:
        deadline.check("walking the children pages")
        params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        response = client.get(f"/orgs/{wide}/children", params=params)
        response.raise_for_status()
        page = response.json()
        for org in page["data"]:
            if org["id"] in seen:
                raise RuntimeError(f"child {org['id']} came twice while paging")
            seen.add(org["id"])
        cursor = page["next_cursor"]
        if not cursor:
            break
        cursors.append(cursor)
    if len(seen) != expected:
        raise RuntimeError(f"paging gave {len(seen)} children, {expected} were loaded")
    return cursors


def spread(items: list[Any], n: int) -> list[Any]:
    """Up to ``n`` items evenly spread over the list."""
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def scale_paths(targets: dict[str, Any], cursors: list[str]) -> dict[str, list[str]]:
    """The rotations each figure's wrk script goes through."""
    wide = targets["wide"]
    pages = [f"/orgs/{wide}/children?limit=100"]
    pages += [f"/orgs/{wide}/children?limit=100&cursor={c}" for c in spread(cursors, ROTATION)]
    busy = targets["audit_orgs"][:10]
    first = date.fromisoformat(targets["audit_first_day"])
    windows = [
        (first + timedelta(days=30 * m), first + timedelta(days=30 * m + 30)) for m in range(12)
    ]
    actors = targets["audit_actors"][:4] or ["system"]
    recent = (first + timedelta(days=275)).isoformat()
    return {
        "scale_get_org": [f"/orgs/{targets['deep']}"],
        "children_page": pages,
        "audit_action": [
            f"/orgs/{o}/audit?action={a}&limit=100" for o in busy for a in AUDIT_ACTIONS
        ],
        "audit_window": [
            f"/orgs/{o}/audit?actor={actors[i % len(actors)]}"
            f"&since={s}T00:00:00Z&until={u}T00:00:00Z&limit=100"
            for i, o in enumerate(busy)
            for s, u in windows[i % 3 :: 3]
        ],
        "children_audit": [
            f"/orgs/{r}/children_audit?action=credits.*&since={recent}T00:00:00Z&limit=100"
            for r in targets["regions"][:12]
        ],
    }


def check_paths(client: httpx.Client, rotations: dict[str, list[str]]) -> dict[str, int]:
    """Each URL answers 200 before it is measured; returns how many entries the audit ones return
    (a filter that matches nothing would measure an empty scan, not a page)."""
    found: dict[str, int] = {}
    for name, paths in rotations.items():
        for path in paths:
            response = client.get(path)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
            body = response.json()
            found[name] = found.get(name, 0) + (len(body["data"]) if "data" in body else 1)
    return found


def run_scale(ctx: Context, label: str, url: str, orgs: int, verify: bool) -> dict[str, Any]:
    env, boot, loaded = prepare(ctx, label, url, orgs, "scale")
    result: dict[str, Any] = {"orgs": orgs, "data": data_summary(loaded)}
    if verify:
        result["audit_verify"] = verify_audit(env)
        ctx.say(f"[{label}] audit verify: {result['audit_verify']}")
    servers = Servers()
    started = time.monotonic()
    try:
        base = serve_orgplane(
            servers, "orgplane-scale", env, ctx.port + 5, 1, ctx.workdir / f"{label}-scale.log"
        )
        result["rss_idle"] = group_rss(servers.pid("orgplane-scale"))
        targets = loaded.targets
        key = create_key(
            base, boot["api_key"], targets["root"], ["orgs:read", "audit:read"], "scale"
        )
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=auth, timeout=60) as client:
            walk_started = time.monotonic()
            cursors = walk_children(client, targets["wide"], targets["wide_children"], ctx.deadline)
            result["children_walk"] = {
                "children": targets["wide_children"],
                "pages": len(cursors) + 1,
                "seconds": round(time.monotonic() - walk_started, 1),
            }
            ctx.say(
                f"[{label}] paged through {targets['wide_children']:,} children "
                f"in {len(cursors) + 1} pages, each once"
            )
            rotations = scale_paths(targets, cursors)
            result["entries_returned_by_rotation"] = check_paths(client, rotations)
        figures = [
            Figure(
                name,
                "orgplane",
                label,
                base + paths[0],
                auth,
                paths if len(paths) > 1 else [],
                connections=c,
            )
            for c in (1, ctx.connections)
            for name, paths in rotations.items()
        ]
        result["load_avg_before"] = os.getloadavg()
        measure_figures(ctx, figures, servers)
        result["load_avg_after"] = os.getloadavg()
        result["figures"] = [f.summary() for f in figures]
        result["rss_after_load"] = group_rss(servers.pid("orgplane-scale"))
        ctx.say(f"[{label}] server RSS after the load: {result['rss_after_load']['total_mib']} MiB")
        # The console's pages last: giving the listed children limits writes audit entries
        # under the first region, which the audit figures above must not see.
        # A failure here is the console's: the figures above are kept.
        try:
            console = run_console(
                ctx,
                label,
                base,
                boot,
                auth,
                targets,
                spread(cursors, ROTATION),
                servers,
                "orgplane-scale",
            )
        except Exception:
            text = traceback.format_exc()
            ctx.say(f"[{label}] console FAILED:\n{text}")
            console = {"error": text[-4000:]}
        result["figures"] += console.pop("figures", [])
        result["console"] = console
    finally:
        servers.stop_all()
    record(ctx, f"{label}: scale measurements", started)
    return result


# ---------------------------------------------------------------------------------------------
# alone: time the loader


def time_loader(label: str, url: str, orgs: int, verify: bool) -> dict[str, Any]:
    started = time.monotonic()
    env, _ = fresh_install(label, url)
    loaded = asyncio.run(load(url, Sizes.for_orgs(orgs)))
    out: dict[str, Any] = {
        "database": label,
        "orgs": orgs,
        "seconds": round(time.monotonic() - started, 1),
        "loader_seconds": loaded.seconds,
        "rows": loaded.rows,
    }
    if verify:
        out["audit_verify"] = verify_audit(env)
    return out


def main() -> int:
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orgs", type=int, default=100_000, help="orgs to load (default 100000)")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres", metavar="ADMIN_DSN"
    )
    parser.add_argument(
        "--verify-audit", action="store_true", help="run orgplane audit verify after loading"
    )
    parser.add_argument("--max-seconds", type=float, default=3600)
    args = parser.parse_args()
    deadline = Deadline(args.max_seconds)
    results = []
    with tempfile.TemporaryDirectory(prefix="orgplane-scale-") as tmp:
        if not args.no_sqlite:
            results.append(
                time_loader(
                    "sqlite",
                    f"sqlite+aiosqlite:///{Path(tmp) / 'scale.db'}",
                    args.orgs,
                    args.verify_audit,
                )
            )
        deadline.check("loading PostgreSQL")
        if not args.no_postgres:
            with postgres_database(args.postgres, "orgplane_bench_scale") as dsn:
                url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
                results.append(time_loader("postgresql", url, args.orgs, args.verify_audit))
    for r in results:
        print(
            f"{r['database']}: {r['orgs']:,} orgs loaded in {r['seconds']} s "
            f"(migrate + bootstrap + loader); per table: {r['loader_seconds']}"
        )
        if "audit_verify" in r:
            print(f"  audit verify: {r['audit_verify']}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"\ninterrupted ({exc}); scratch data removed", file=sys.stderr)
        sys.exit(130)
