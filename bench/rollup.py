"""Consumption roll-up latency: ``GET /orgs/{id}/consumption?rollup=subtree|children`` over a
subtree of 10,000 descendants, served by ``orgplane serve`` (granian, 1 worker).

Run from the repository root::

    .venv/bin/python bench/rollup.py                  # SQLite, then PostgreSQL
    .venv/bin/python bench/rollup.py --no-postgres    # SQLite only

For each database it makes a fresh orgplane database (a temporary SQLite file, or a scratch
PostgreSQL database ``orgplane_bench_rollup`` created through ``--postgres <admin DSN>`` and
dropped at the end), runs ``orgplane migrate`` and ``orgplane bootstrap``, then bulk-loads with
SQLAlchemy Core, straight into ``orgs`` and ``usage_daily`` (then ``usage_subtree_daily``, the
per-subtree day counters ingestion keeps, summed from it in one INSERT ... SELECT):

* under the bootstrap root, a "top" org with ``--descendants`` (10,000) descendants: 12 regions,
  300 accounts under them, projects spread unevenly over the accounts (Pareto-weighted), and
  deep chains of 5 orgs hanging from some projects down to depth 9 (the default depth limit);
* a sibling of the top with ``--outside`` (2,000) orgs of its own, so the table holds usage
  the roll-up must skip;
* for ``--usage-share`` (80%) of all these orgs, one ``usage_daily`` row per meter (the three
  built-in ones) and day from the first day of the previous month to today.

It starts ``orgplane serve`` on 127.0.0.1, creates a ``usage:read`` key of the top org through
the API, checks that both roll-ups return exactly the sums that were loaded, and measures each
roll-up: ``--requests`` (200) sequential requests on one keep-alive connection after
``--warmup`` (10), client-side latency p50/p90/p99/max; then ``wrk -t1 -c4`` for
``--wrk-seconds`` (10) for throughput. When the p99 misses the target (50 ms) it also
profiles (``--profile always|auto|never``): the roll-up's SQL timed alone through orgplane's own
read connection, their plans (``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL, ``EXPLAIN QUERY
PLAN`` on SQLite), a pyinstrument profile of the request in-process, and the same four-window
sums read from a per-subtree daily counter table built for the purpose (the fix it suggests).

Results go to ``bench/results/<date>-rollup.json`` (profiles next to it). Servers run in their
own process groups and are stopped in a ``finally``; the scratch database is dropped; the run is
bounded by ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quick import (
    BIN,
    HOST,
    NO_TRIP_LIMIT,
    Deadline,
    Processes,
    fresh_install,
    git_state,
    interrupt,
    port_free,
    postgres_database,
    wait_ready,
    write_report,
    wrk,
)

from orgplane.core.ids import new_public_id
from orgplane.core.usage import consumption
from orgplane.models import orgs, usage_daily

BENCH_DIR = Path(__file__).resolve().parent
TARGET_P99_MS = 50.0
METERS = {  # meter: (smallest, largest) daily quantity of an org
    "operations": (100, 5_000),
    "credits": (1, 100),
    "transfer": (1_000_000, 500_000_000),
}
CHUNK = 20_000
CHAIN = 5  # deep chains: projects at depth 4, chains down to depth 9 (< max_tree_depth 10)


# ---------------------------------------------------------------------------------------------
# data


class Tree:
    """Org rows planned in memory (ids assigned here), inserted in one go."""

    def __init__(self, next_id: int, root: dict[str, Any]) -> None:
        self.next_id = next_id
        self.root = root
        self.rows: list[dict[str, Any]] = []

    def add(self, parent: dict[str, Any], name: str) -> dict[str, Any]:
        org_id = self.next_id
        self.next_id += 1
        row = {
            "id": org_id,
            "parent_id": parent["id"],
            "path": f"{parent['path']}{org_id}/",
            "depth": parent["depth"] + 1,
            "name": name,
        }
        self.rows.append(row)
        return row

    def subtree(
        self,
        parent: dict[str, Any],
        name: str,
        total: int,
        *,
        regions: int,
        accounts: int,
        deep_share: float,
        rng: random.Random,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """``name`` under ``parent`` with ``total`` descendants; returns it and its children."""
        top = self.add(parent, name)
        regions = min(regions, total)
        accounts = min(accounts, total - regions)
        region_rows = [self.add(top, f"{name} region {i}") for i in range(regions)]
        account_rows = [
            self.add(region_rows[i % regions], f"{name} account {i}") for i in range(accounts)
        ]
        remaining = total - regions - accounts
        chains = int(remaining * deep_share) // CHAIN
        projects = remaining - chains * CHAIN
        if account_rows and projects:
            weights = [rng.paretovariate(1.2) for _ in account_rows]
            owners = rng.choices(account_rows, weights=weights, k=projects)
            project_rows = [
                self.add(owner, f"{name} project {i}") for i, owner in enumerate(owners)
            ]
        else:
            project_rows = []
        hang_from = project_rows or account_rows or region_rows or [top]
        for c in range(chains):
            link = hang_from[(c * 7919) % len(hang_from)]
            for level in range(CHAIN):
                link = self.add(link, f"{name} chain {c}.{level}")
        return top, region_rows


def org_values(row: dict[str, Any], root_id: int, now: datetime) -> dict[str, Any]:
    return {
        **row,
        "uuid": str(uuid.uuid4()),
        "public_id": new_public_id(),
        "root_id": root_id,
        "settings": {},
        "tags": [],
        "customizations": {},
        "created_at": now,
        "modified_at": now,
        "version": 1,
    }


async def load(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Bulk-load the tree and its counters; return what the roll-ups must answer."""
    rng = random.Random(args.seed)
    engine = create_async_engine(url)
    now = datetime.now(UTC)
    today = now.date()
    current = consumption.month_of(today)
    previous = current.previous()
    days = [previous.start + timedelta(days=d) for d in range((today - previous.start).days + 1)]
    try:
        async with engine.begin() as conn:
            root = (
                (await conn.execute(sa.select(orgs.c.id, orgs.c.path, orgs.c.depth)))
                .one()
                ._asdict()
            )
            tree = Tree(root["id"] + 1, root)
            top, regions = tree.subtree(
                root,
                "Bench top",
                args.descendants,
                regions=12,
                accounts=300,
                deep_share=0.2,
                rng=rng,
            )
            if args.outside:
                tree.subtree(
                    root,
                    "Bench other",
                    args.outside - 1,
                    regions=4,
                    accounts=40,
                    deep_share=0.1,
                    rng=rng,
                )
            values = [org_values(row, root["id"], now) for row in tree.rows]
            for start in range(0, len(values), CHUNK):
                await conn.execute(sa.insert(orgs), values[start : start + CHUNK])
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    sa.text(
                        "SELECT setval(pg_get_serial_sequence('orgs', 'id'), "
                        "(SELECT max(id) FROM orgs))"
                    )
                )

            # Expected sums: {group path: {meter: {"period": n, "prev_period": n}}}.
            groups = [top["path"]] + [r["path"] for r in regions]
            expected: dict[str, dict[str, dict[str, int]]] = {
                g: {m: {"period": 0, "prev_period": 0} for m in METERS} for g in groups
            }
            rows_total = 0
            with_usage = 0
            buffer: list[dict[str, Any]] = []
            for org in tree.rows:
                if rng.random() >= args.usage_share:
                    continue
                with_usage += 1
                in_groups = [g for g in groups if org["path"].startswith(g)]
                for meter, (low, high) in METERS.items():
                    base = rng.randint(low, high)
                    for day in days:
                        quantity = int(base * (0.5 + rng.random()))
                        buffer.append(
                            {
                                "org_id": org["id"],
                                "root_id": root["id"],
                                "meter": meter,
                                "day": day,
                                "quantity": quantity,
                            }
                        )
                        bucket = "period" if day >= current.start else "prev_period"
                        for g in in_groups:
                            expected[g][meter][bucket] += quantity
                if len(buffer) >= CHUNK:
                    await conn.execute(sa.insert(usage_daily), buffer)
                    rows_total += len(buffer)
                    buffer = []
            if buffer:
                await conn.execute(sa.insert(usage_daily), buffer)
                rows_total += len(buffer)
            # What ingestion keeps alongside: the per-subtree day counters of every ancestor.
            await conn.execute(
                sa.text(
                    "INSERT INTO usage_subtree_daily (org_id, meter, day, root_id, quantity) "
                    "SELECT a.id, d.meter, d.day, :root_id, SUM(d.quantity) "
                    "FROM usage_daily d JOIN orgs m ON m.id = d.org_id "
                    "JOIN orgs a ON m.path >= a.path AND m.path < a.path || '~' "
                    "GROUP BY a.id, d.meter, d.day"
                ),
                {"root_id": root["id"]},
            )
        # What autovacuum / a maintained database would have: statistics and a visibility map.
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(sa.text("VACUUM ANALYZE orgs"))
                await conn.execute(sa.text("VACUUM ANALYZE usage_daily"))
                await conn.execute(sa.text("VACUUM ANALYZE usage_subtree_daily"))
        elif args.sqlite_analyze:
            async with engine.begin() as conn:
                await conn.execute(sa.text("ANALYZE"))
        async with engine.connect() as conn:
            top_public = (
                await conn.execute(sa.select(orgs.c.public_id).where(orgs.c.id == top["id"]))
            ).scalar_one()
            depth_counts = dict(
                (
                    await conn.execute(
                        sa.select(orgs.c.depth, sa.func.count())
                        .where(orgs.c.path > top["path"], orgs.c.path < top["path"] + "~")
                        .group_by(orgs.c.depth)
                        .order_by(orgs.c.depth)
                    )
                ).all()
            )
            orgs_count = (await conn.execute(sa.select(sa.func.count()).select_from(orgs))).scalar()
    finally:
        await engine.dispose()
    return {
        "root_id": root["id"],
        "top_id": top["id"],
        "top_public_id": top_public,
        "top_path": top["path"],
        "children_paths": [r["path"] for r in regions],
        "descendants": sum(depth_counts.values()),
        "descendants_by_depth": {str(k): v for k, v in depth_counts.items()},
        "orgs_in_table": orgs_count,
        "orgs_with_usage": with_usage,
        "usage_daily_rows": rows_total,
        "days": [days[0].isoformat(), days[-1].isoformat()],
        "expected": expected,
    }


# ---------------------------------------------------------------------------------------------
# measuring


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank: the smallest value with at least pct% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def summary(latencies_ms: list[float]) -> dict[str, Any]:
    return {
        "requests": len(latencies_ms),
        "p50_ms": round(percentile(latencies_ms, 50), 2),
        "p90_ms": round(percentile(latencies_ms, 90), 2),
        "p99_ms": round(percentile(latencies_ms, 99), 2),
        "max_ms": round(max(latencies_ms), 2),
        "mean_ms": round(statistics.fmean(latencies_ms), 2),
    }


def check_answers(client: httpx.Client, top: str, data: dict[str, Any]) -> None:
    """Both roll-ups must return exactly the sums that were loaded."""
    expected = data["expected"]
    subtree = client.get(f"/orgs/{top}/consumption", params={"rollup": "subtree"})
    subtree.raise_for_status()
    got = {m["meter"]: m for m in subtree.json()["entries"][0]["meters"]}
    for meter, sums in expected[data["top_path"]].items():
        if (got[meter]["consumed"], got[meter]["previous_period"]) != (
            sums["period"],
            sums["prev_period"],
        ):
            raise RuntimeError(f"subtree roll-up of {meter}: got {got[meter]}, expected {sums}")
    children = client.get(f"/orgs/{top}/consumption", params={"rollup": "children"})
    children.raise_for_status()
    entries = children.json()["entries"]
    if len(entries) != len(data["children_paths"]):
        raise RuntimeError(f"children roll-up: {len(entries)} entries")
    for meter in METERS:
        got_sum = sum(m["consumed"] for e in entries for m in e["meters"] if m["meter"] == meter)
        want = sum(expected[p][meter]["period"] for p in data["children_paths"])
        if got_sum != want:
            raise RuntimeError(f"children roll-up of {meter}: got {got_sum}, expected {want}")


def sequential(
    client: httpx.Client, path: str, params: dict[str, str], n: int, budget: float = 1e9
) -> list[float]:
    """``n`` requests one after the other, or as many as fit in ``budget`` seconds."""
    latencies: list[float] = []
    end = time.monotonic() + budget
    for _ in range(n):
        if latencies and time.monotonic() > end:
            break
        started = time.perf_counter()
        response = client.get(path, params=params)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
        latencies.append(elapsed)
    return latencies


def measure(
    label: str,
    database_url: str,
    args: argparse.Namespace,
    workdir: Path,
    deadline: Deadline,
) -> dict[str, Any]:
    env, boot = fresh_install(label, database_url)
    started = time.monotonic()
    data = asyncio.run(load(database_url, args))
    data["load_seconds"] = round(time.monotonic() - started, 1)
    print(
        f"[{label}] loaded {data['descendants']:,} descendants under the top "
        f"({data['orgs_in_table']:,} orgs in all), {data['usage_daily_rows']:,} usage_daily "
        f"rows ({data['days'][0]} .. {data['days'][1]}) in {data['load_seconds']} s",
        flush=True,
    )
    deadline.check("serving")

    procs = Processes()
    base = f"http://{HOST}:{args.port}"
    results: dict[str, Any] = {}
    try:
        procs.start(
            "orgplane",
            [
                *(str(BIN / "orgplane"), "serve", "--host", HOST, "--port", str(args.port)),
                *("--workers", "1", "--server", "granian"),
            ],
            env,
            workdir / f"{label}-orgplane.log",
        )
        wait_ready(f"{base}/healthz", procs)
        admin = {"Authorization": f"Bearer {boot['api_key']}"}
        top = data["top_public_id"]
        key = httpx.post(
            f"{base}/orgs/{top}/api_keys",
            json={"name": "rollup bench", "scopes": ["usage:read"]},
            headers=admin,
            timeout=30,
        )
        if key.status_code != 201:
            raise RuntimeError(f"create key: {key.status_code} {key.text}")
        data["key"] = key.json()["api_key"]
        headers = {"Authorization": f"Bearer {data['key']}"}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            check_answers(client, top, data)
            print(f"[{label}] both roll-ups return the loaded sums", flush=True)
            for rollup in ("subtree", "children"):
                deadline.check(f"{rollup} roll-up")
                path = f"/orgs/{top}/consumption"
                load_before = os.getloadavg()
                sequential(client, path, {"rollup": rollup}, args.warmup)
                latencies = sequential(
                    client, path, {"rollup": rollup}, args.requests, args.scenario_seconds
                )
                procs.check_alive()
                result = summary(latencies)
                result["stopped_by_scenario_seconds"] = len(latencies) < args.requests
                result["load_avg"] = [load_before[0], os.getloadavg()[0]]
                if args.wrk_seconds:
                    deadline.check(f"wrk on the {rollup} roll-up")
                    run = wrk(
                        f"{base}{path}?rollup={rollup}",
                        headers,
                        seconds=args.wrk_seconds,
                        connections=4,
                    )
                    result["wrk_c4"] = {
                        "requests_per_s": run.requests_per_s,
                        "p50_ms": run.p50_ms,
                        "p99_ms": run.p99_ms,
                        "requests": run.requests,
                        "errors": run.non_2xx + run.socket_errors,
                    }
                results[rollup] = result
                wrk_note = (
                    f"; wrk -c4: {result['wrk_c4']['requests_per_s']:.1f} req/s, "
                    f"p50 {result['wrk_c4']['p50_ms']:.1f} ms, "
                    f"p99 {result['wrk_c4']['p99_ms']:.1f} ms"
                    if "wrk_c4" in result
                    else ""
                )
                print(
                    f"[{label}] rollup={rollup:8} {result['requests']} sequential: "
                    f"p50 {result['p50_ms']:.1f} ms  p90 {result['p90_ms']:.1f} ms  "
                    f"p99 {result['p99_ms']:.1f} ms  max {result['max_ms']:.1f} ms  "
                    f"(load {result['load_avg'][0]:.2f} -> {result['load_avg'][1]:.2f})"
                    f"{wrk_note}",
                    flush=True,
                )
    finally:
        procs.stop_all()

    missed = any(r["p99_ms"] > TARGET_P99_MS for r in results.values())
    profile = None
    if args.profile == "always" or (args.profile == "auto" and missed):
        deadline.check("profiling")
        print(f"[{label}] profiling the roll-ups", flush=True)
        profile = asyncio.run(profile_rollups(label, database_url, data, args))
    data.pop("expected")
    data.pop("key", None)
    return {"database": label, "data": data, "rollups": results, "profile": profile}


# ---------------------------------------------------------------------------------------------
# profiling


class _Capture:
    """A Reader that keeps the statements it is given and returns no rows."""

    def __init__(self) -> None:
        self.statements: list[Any] = []

    async def execute(self, statement: Any, params: Any = None) -> list[Any]:
        self.statements.append(statement)
        return []


async def _timed(fn: Any, n: int) -> dict[str, Any]:
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        latencies.append((time.perf_counter() - started) * 1000)
    return summary(latencies)


async def profile_rollups(
    label: str, url: str, data: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    from orgplane.app import build_services, create_app
    from orgplane.config import Settings

    today = datetime.now(UTC).date()
    windows = consumption._Windows(consumption.month_of(today), today)
    groups = {"subtree": [data["top_path"]], "children": data["children_paths"]}
    settings = Settings(
        database_url=url,
        environment="development",
        log_level="warning",
        rate_limit_per_key=NO_TRIP_LIMIT,
        rate_limit_per_org=NO_TRIP_LIMIT,
    )
    services = build_services(settings)
    db = services.db
    out: dict[str, Any] = {}
    stamp = f"{datetime.now(UTC):%Y-%m-%d}"
    results_dir = args.out.parent if args.out else BENCH_DIR / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    try:
        # 1. The roll-up's one aggregate statement, alone, through orgplane's read connection.
        for rollup, keys in groups.items():

            async def run_sums(keys: list[Any] = keys) -> None:
                async with db.read() as conn:
                    await consumption._sums(conn, keys, windows)

            await run_sums()
            out[f"sql_{rollup}"] = await _timed(run_sums, args.profile_requests)
            print(
                f"[{label}]   the {rollup} sums statement alone: "
                f"p50 {out[f'sql_{rollup}']['p50_ms']:.1f} ms, "
                f"p99 {out[f'sql_{rollup}']['p99_ms']:.1f} ms",
                flush=True,
            )

        # 2. Their plans.
        for rollup, keys in groups.items():
            capture = _Capture()
            await consumption._sums(capture, keys, windows)
            sql = str(
                capture.statements[0].compile(
                    dialect=db.engine.dialect, compile_kwargs={"literal_binds": True}
                )
            )
            explain = (
                f"EXPLAIN (ANALYZE, BUFFERS) {sql}"
                if db.dialect == "postgresql"
                else f"EXPLAIN QUERY PLAN {sql}"
            )
            async with db.read() as conn:
                plan_rows = (await conn.execute(sa.text(explain))).all()
            plan = "\n".join(" | ".join(str(c) for c in row) for row in plan_rows)
            out[f"sql_text_{rollup}"] = sql
            out[f"plan_{rollup}"] = plan
            print(
                f"[{label}]   plan of the {rollup} statement:\n"
                + "\n".join(f"      {line}" for line in plan.splitlines())
            )
        async with db.read() as conn:
            counted = (
                await conn.execute(
                    sa.text(
                        "SELECT count(*) FROM usage_daily u JOIN orgs m ON m.id = u.org_id "
                        "WHERE m.path >= :p AND m.path < :p || '~' AND u.day >= :d"
                    ),
                    {"p": data["top_path"], "d": windows.earliest},
                )
            ).scalar_one()
        out["rows_aggregated_per_subtree_request"] = counted
        print(f"[{label}]   rows summed by one subtree request: {counted:,}", flush=True)

        # 3. The whole request in-process, under pyinstrument.
        try:
            from pyinstrument import Profiler
        except ImportError:
            out["pyinstrument"] = "pyinstrument is not installed"
        else:
            app = create_app(settings, services)
            services.access_log.start()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://bench",
                headers={"Authorization": f"Bearer {data['key']}"},
                timeout=120,
            ) as client:
                path = f"/orgs/{data['top_public_id']}/consumption"
                for _ in range(3):
                    (await client.get(path, params={"rollup": "subtree"})).raise_for_status()
                profiler = Profiler(interval=0.0005, async_mode="enabled")
                profiler.start()
                for _ in range(args.profile_requests):
                    (await client.get(path, params={"rollup": "subtree"})).raise_for_status()
                profiler.stop()
            text = profiler.output_text(unicode=False, color=False, show_all=False)
            profile_file = results_dir / f"{stamp}-rollup-profile-{label}.txt"
            profile_file.write_text(text)
            out["pyinstrument_file"] = str(profile_file)
            print(f"[{label}]   pyinstrument ({args.profile_requests} subtree requests):")
            lines = text.splitlines()
            start = next((i for i, t in enumerate(lines) if "get_consumption" in t), 0)
            for line in lines[start : start + 25]:
                print(f"      {line}")

        # 4. The fix it points at: per-subtree daily counters, read by the same query shape.
        out["subtree_counters"] = await _subtree_counters(db, data, windows, args)
        for rollup in ("subtree", "children"):
            s = out["subtree_counters"][rollup]
            print(
                f"[{label}]   same sums from per-subtree daily counters ({rollup}): "
                f"p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, "
                f"{out['subtree_counters']['rows_' + rollup]} rows read",
                flush=True,
            )
    finally:
        await services.access_log.stop()
        await db.dispose()
    return out


async def _subtree_counters(
    db: Any, data: dict[str, Any], windows: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """A scratch table ``bench_subtree_daily (org_id, meter, day, quantity)``: each org's
    subtree total per meter and day (what ingestion would maintain for every ancestor of the
    org an event names). Filled here for the top and its children only, from usage_daily."""
    meta = sa.MetaData()
    table = sa.Table(
        "bench_subtree_daily",
        meta,
        sa.Column("org_id", sa.BigInteger, primary_key=True),
        sa.Column("meter", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("quantity", sa.BigInteger, nullable=False),
    )
    group_ids = {data["top_path"]: data["top_id"]}
    for path in data["children_paths"]:
        group_ids[path] = int(path.rstrip("/").rsplit("/", 1)[1])
    async with db.engine.begin() as conn:
        await conn.run_sync(meta.create_all)
        grp, member = orgs.alias("grp"), orgs.alias("member")
        fill = (
            sa.select(
                grp.c.id,
                usage_daily.c.meter,
                usage_daily.c.day,
                sa.func.sum(usage_daily.c.quantity),
            )
            .select_from(
                usage_daily.join(member, member.c.id == usage_daily.c.org_id).join(
                    grp,
                    sa.and_(member.c.path >= grp.c.path, member.c.path < grp.c.path + "~"),
                )
            )
            .where(grp.c.id.in_(list(group_ids.values())))
            .group_by(grp.c.id, usage_daily.c.meter, usage_daily.c.day)
        )
        await conn.execute(
            sa.insert(table).from_select(["org_id", "meter", "day", "quantity"], fill)
        )
        if db.dialect == "postgresql":
            await conn.execute(sa.text("ANALYZE bench_subtree_daily"))

    previous = windows.period.previous()

    def between(bounds: tuple[date, date]) -> Any:
        return sa.and_(table.c.day >= bounds[0], table.c.day < bounds[1])

    buckets = {
        "period": between((windows.period.start, windows.period.end)),
        "week": between(windows.week),
        "prev_week": between(windows.prev_week),
        "prev_period": between((previous.start, previous.end)),
    }
    columns = [
        sa.func.coalesce(sa.func.sum(sa.case((c, table.c.quantity), else_=0)), 0).label(k)
        for k, c in buckets.items()
    ]
    out: dict[str, Any] = {}
    for rollup, ids in (
        ("subtree", [data["top_id"]]),
        ("children", [group_ids[p] for p in data["children_paths"]]),
    ):
        statement = (
            sa.select(table.c.org_id, table.c.meter, *columns)
            .where(
                table.c.org_id.in_(ids),
                table.c.day >= windows.earliest,
                table.c.day < windows.period.end,
            )
            .group_by(table.c.org_id, table.c.meter)
        )

        async def run(statement: Any = statement) -> None:
            async with db.read() as conn:
                await conn.execute(statement)

        async with db.read() as conn:
            rows = (await conn.execute(statement)).all()
            read = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(table)
                    .where(table.c.org_id.in_(ids), table.c.day >= windows.earliest)
                )
            ).scalar_one()
        if rollup == "subtree":
            got = {r.meter: int(r.period) for r in rows}
            want = {m: s["period"] for m, s in data["expected"][data["top_path"]].items()}
            if got != want:
                raise RuntimeError(f"subtree counters disagree: {got} != {want}")
        out[rollup] = await _timed(run, args.profile_requests * 5)
        out[f"rows_{rollup}"] = read
    return out


# ---------------------------------------------------------------------------------------------


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| database | rollup | p50 ms | p90 ms | p99 ms | max ms | target p99 | wrk -c4 req/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for result in results:
        for rollup, r in result["rollups"].items():
            verdict = "met" if r["p99_ms"] <= TARGET_P99_MS else "MISSED"
            rps = f"{r['wrk_c4']['requests_per_s']:.1f}" if "wrk_c4" in r else "-"
            lines.append(
                f"| {result['database']} | {rollup} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
                f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} | ≤ {TARGET_P99_MS:.0f} ms: {verdict} | "
                f"{rps} |"
            )
    return "\n".join(lines)


def main() -> int:
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--descendants", type=int, default=10_000)
    parser.add_argument("--outside", type=int, default=2_000, help="orgs outside the subtree")
    parser.add_argument("--usage-share", type=float, default=0.8, help="orgs with usage rows")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--requests", type=int, default=200, help="sequential, per roll-up")
    parser.add_argument("--warmup", type=int, default=10, help="requests before measuring")
    parser.add_argument(
        "--scenario-seconds",
        type=float,
        default=600,
        help="stop a roll-up's sequential requests after this long (their count is reported)",
    )
    parser.add_argument("--wrk-seconds", type=int, default=10, help="wrk -c4 run; 0 skips it")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--profile-requests", type=int, default=10)
    parser.add_argument(
        "--sqlite-analyze",
        action="store_true",
        help="run ANALYZE on SQLite after loading (orgplane itself never does)",
    )
    parser.add_argument("--port", type=int, default=8070, help="orgplane's port on 127.0.0.1")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        metavar="ADMIN_DSN",
        help="a scratch database orgplane_bench_rollup is created through it and dropped",
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=3600, help="abort after this long")
    parser.add_argument("--out", type=Path, default=None, help="results file")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not 1 <= args.descendants <= 200_000 or not 0 <= args.outside <= 200_000:
        parser.error("--descendants 1..200,000 and --outside 0..200,000")
    if not 1 <= args.requests <= 10_000:
        parser.error("--requests 1..10,000")
    if not port_free(args.port):
        print(f"port {args.port} on {HOST} is in use; pick another with --port", file=sys.stderr)
        return 2

    deadline = Deadline(args.max_seconds)
    git_at_start = git_state()
    load_at_start = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="orgplane-bench-") as tmp:
        workdir = Path(tmp)
        if not args.no_sqlite:
            url = f"sqlite+aiosqlite:///{workdir / 'rollup.db'}"
            results.append(measure("sqlite", url, args, workdir, deadline))
        if not args.no_postgres:
            with postgres_database(args.postgres, "orgplane_bench_rollup") as dsn:
                url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
                results.append(measure("postgresql", url, args, workdir, deadline))

    out = write_report(
        "rollup",
        targets={"target_p99_ms": TARGET_P99_MS},
        args=args,
        results=results,
        load_at_start=load_at_start,
        git_at_start=git_at_start,
        out=args.out,
    )
    print()
    print(table(results))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"\ninterrupted ({exc}); servers stopped, scratch data removed", file=sys.stderr)
        sys.exit(130)
