"""The suite's scenarios on one database, and the separate benchmarks it runs as subprocesses.

* ``requests``: orgplane ``GET /orgs/{id}`` and ``GET /orgs/{id}/children?limit=100`` (1 worker)
  against the bare ASGI app (``/hello``, and the same two reads with the raw driver) and the
  FastAPI + SQLAlchemy ORM reference app (the same two reads), all three served at once by
  granian on 127.0.0.1 over the base data set (``bench/loader.py``, 1,000 orgs by default).
  Before measuring, the three apps must return the same JSON for both reads.
* ``workers``: the same ``GET /orgs/{id}`` with Redis-backed rate limits
  (``ORGPLANE_REDIS_URL``), 1 worker against N workers, in rounds; then N workers with a known
  per-key limit L: 3 x L requests from 16 connections must get exactly L 200s and 2 x L 429s,
  with both workers serving (their CPU time is read from /proc).
* ``ingest``, ``rollup``, ``allocations``: ``bench/ingest.py``, ``bench/rollup.py`` and
  ``bench/allocations.py``, each run as a subprocess in its own process group with the suite's
  remaining time as its ``--max-seconds``; their figures are read from their output.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from harness import (
    Figure,
    Load,
    Say,
    Servers,
    cpu_ticks,
    create_key,
    group_members,
    measure,
    serve_module,
    serve_orgplane,
)
from loader import Loaded, Sizes, load
from quick import BENCH_DIR, Deadline, fresh_install, orgplane

REDIS_DEFAULT = "redis://127.0.0.1:6379/11"


@dataclass
class Context:
    """What every scenario of a run shares."""

    load: Load
    connections: int
    workers: int
    base_orgs: int
    port: int  # orgplane 1 worker; +1 bare, +2 reference, +3/+4 workers, +5 scale, +6..+8 subs
    redis_url: str
    rate_limit: int
    quick: bool
    deadline: Deadline
    workdir: Path
    results_dir: Path
    stem: str
    say: Say
    timings: dict[str, float] = field(default_factory=dict)


def measure_figures(ctx: Context, figures: list[Figure], servers: Servers) -> None:
    """Run every figure's wrk rounds under the run's load, deadline and log."""
    measure(
        figures, ctx.load, servers=servers, deadline=ctx.deadline, workdir=ctx.workdir, say=ctx.say
    )


def record(ctx: Context, name: str, started: float) -> float:
    """Add the seconds since ``started`` to ``ctx.timings[name]``; returns them."""
    seconds = round(time.monotonic() - started, 1)
    ctx.timings[name] = round(ctx.timings.get(name, 0.0) + seconds, 1)
    return seconds


# ---------------------------------------------------------------------------------------------
# data


def prepare(
    ctx: Context, label: str, url: str, orgs: int, purpose: str
) -> tuple[dict[str, str], Any, Loaded]:
    """migrate, bootstrap --json, then the bulk loader: (env, bootstrap, what was loaded)."""
    ctx.deadline.check(f"loading the {purpose} data")
    started = time.monotonic()
    env, boot = fresh_install(label, url)
    loaded = asyncio.run(load(url, Sizes.for_orgs(orgs), say=ctx.say))
    seconds = record(
        ctx, f"{label}: {purpose} data, {orgs:,} orgs (migrate, bootstrap, load)", started
    )
    ctx.say(f"[{label}] database ready in {seconds:.0f} s (loader {loaded.total_seconds} s)")
    return env, boot, loaded


def verify_audit(env: dict[str, str]) -> dict[str, Any]:
    """``orgplane audit verify`` on the loaded chains."""
    started = time.monotonic()
    try:
        output = orgplane(["audit", "verify"], env, timeout=600)
        passed = True
    except RuntimeError as exc:
        output, passed = str(exc), False
    return {
        "passed": passed,
        "output": output.strip()[-500:],
        "seconds": round(time.monotonic() - started, 1),
    }


# ---------------------------------------------------------------------------------------------
# requests: orgplane against the bare and the reference apps


def _same(label: str, what: str, answers: dict[str, httpx.Response]) -> None:
    """The three apps must answer 200 with the same JSON, fields in the same order."""
    bodies = {}
    for app, response in answers.items():
        if response.status_code != 200:
            raise RuntimeError(f"[{label}] {app} {what}: {response.status_code} {response.text}")
        bodies[app] = response.json()
    reference = bodies["orgplane"]
    for app, body in bodies.items():
        if json.dumps(body) != json.dumps(reference):
            raise RuntimeError(
                f"[{label}] {app} and orgplane differ on {what}:\n{body}\n{reference}"
            )


def request_figures(
    label: str, bases: dict[str, str], key: str, targets: dict[str, Any], wanted: set[str], c: int
) -> list[Figure]:
    auth = {"Authorization": f"Bearer {key}"}
    read, wide = targets["read"], targets["wide"]
    figures = []
    if "get_org" in wanted:
        figures += [
            Figure("get_org", "orgplane", label, f"{bases['orgplane']}/orgs/{read}", auth),
            Figure("get_org", "bare", label, f"{bases['bare']}/orgs/{read}", auth),
            Figure("get_org", "reference", label, f"{bases['reference']}/orgs/{read}", auth),
            Figure("hello", "bare", label, f"{bases['bare']}/hello"),
        ]
    if "children" in wanted:
        path = f"/orgs/{wide}/children?limit=100"
        figures += [
            Figure("children", app, label, f"{bases[app]}{path}", auth)
            for app in ("orgplane", "bare", "reference")
        ]
    for figure in figures:
        figure.connections = c
    return figures


def check_parity(label: str, bases: dict[str, str], key: str, targets: dict[str, Any]) -> None:
    """The reads measured, and the second page of children (the keyset cursor), answered alike
    by the three apps."""
    auth = {"Authorization": f"Bearer {key}"}
    children = f"/orgs/{targets['wide']}/children?limit=100"
    cursor = httpx.get(f"{bases['orgplane']}{children}", headers=auth).json()["next_cursor"]
    reads = [("GET /orgs/{id}", f"/orgs/{targets['read']}"), ("the children", children)]
    if cursor:
        reads.append(("the second page of children", f"{children}&cursor={cursor}"))
    for what, path in reads:
        answers = {
            app: httpx.get(f"{base}{path}", headers=auth, timeout=30) for app, base in bases.items()
        }
        _same(label, what, answers)


def requests_scenario(
    ctx: Context,
    label: str,
    url: str,
    bare_database: str,
    wanted: set[str],
) -> dict[str, Any]:
    """The base data set, orgplane + bare + reference side by side, every figure in rounds;
    then, when wanted, the workers scenario on the same database."""
    env, boot, loaded = prepare(ctx, label, url, ctx.base_orgs, "base")
    result: dict[str, Any] = {"data": data_summary(loaded), "audit_verify": verify_audit(env)}
    verified = "passed" if result["audit_verify"]["passed"] else "FAILED"
    ctx.say(f"[{label}] orgplane audit verify on the loaded chains: {verified}")
    servers = Servers()
    try:
        bases = {
            "orgplane": serve_orgplane(
                servers, "orgplane", env, ctx.port, 1, ctx.workdir / f"{label}-orgplane.log"
            )
        }
        targets = loaded.targets
        key = create_key(
            bases["orgplane"], boot["api_key"], targets["region"], ["orgs:read"], "suite"
        )
        bases["bare"] = serve_module(
            servers,
            "bare",
            "bare_asgi:app",
            {**env, "BARE_DATABASE": bare_database},
            ctx.port + 1,
            ctx.workdir / f"{label}-bare.log",
        )
        bases["reference"] = serve_module(
            servers,
            "reference",
            "reference_app:app",
            {**env, "REFERENCE_DATABASE_URL": url},
            ctx.port + 2,
            ctx.workdir / f"{label}-reference.log",
        )
        check_parity(label, bases, key, targets)
        ctx.say(f"[{label}] orgplane, bare and reference return the same JSON for both reads")
        figures = request_figures(label, bases, key, targets, wanted, ctx.connections)
        if figures:
            started = time.monotonic()
            measure_figures(ctx, figures, servers)
            record(ctx, f"{label}: get_org + children", started)
        result["figures"] = [f.summary() for f in figures]
        if "workers" in wanted:
            servers.stop_all()
            result["workers"] = workers_scenario(ctx, label, env, boot["api_key"], targets)
    finally:
        servers.stop_all()
    return result


def data_summary(loaded: Loaded) -> dict[str, Any]:
    return {
        "sizes": loaded.sizes.__dict__,
        "rows": loaded.rows,
        "load_seconds": loaded.seconds,
        "load_total_seconds": loaded.total_seconds,
        "targets": {k: v for k, v in loaded.targets.items() if not isinstance(v, list)},
    }


# ---------------------------------------------------------------------------------------------
# workers


def workers_scenario(
    ctx: Context, label: str, env: dict[str, str], admin_key: str, targets: dict[str, Any]
) -> dict[str, Any]:
    started = time.monotonic()
    redis_env = {**env, "ORGPLANE_REDIS_URL": ctx.redis_url}
    servers = Servers()
    out: dict[str, Any] = {"workers": ctx.workers, "redis_url": ctx.redis_url}
    try:
        figures = []
        for workers, port in ((1, ctx.port + 3), (ctx.workers, ctx.port + 4)):
            base = serve_orgplane(
                servers,
                f"redis-{workers}w",
                redis_env,
                port,
                workers,
                ctx.workdir / f"{label}-redis-{workers}w.log",
            )
            key = create_key(
                base, admin_key, targets["region"], ["orgs:read"], f"workers {workers}"
            )
            figure = Figure(
                f"get_org_{workers}w_redis",
                "orgplane",
                label,
                f"{base}/orgs/{targets['read']}",
                {"Authorization": f"Bearer {key}"},
                connections=ctx.connections,
            )
            figures.append(figure)
        measure_figures(ctx, figures, servers)
        out["figures"] = [f.summary() for f in figures]
        one, many = (f.median("requests_per_s") for f in figures)
        out["scaling"] = round(many / one, 3) if one else None
        servers.stop_all()
        out["limits"] = limits_hold(ctx, label, redis_env, admin_key, targets, servers)
    finally:
        servers.stop_all()
    record(ctx, f"{label}: workers", started)
    return out


def limits_hold(
    ctx: Context,
    label: str,
    env: dict[str, str],
    admin_key: str,
    targets: dict[str, Any],
    servers: Servers,
) -> dict[str, Any]:
    """N workers, a per-key limit of L per hour in Redis: fire 3 x L requests from 16
    connections and count the answers."""
    limit = ctx.rate_limit
    limited = {**env, "ORGPLANE_RATE_LIMIT_PER_KEY": f"{limit}/hour"}
    base = serve_orgplane(
        servers, "limited", limited, ctx.port + 4, ctx.workers, ctx.workdir / f"{label}-limited.log"
    )
    key = create_key(base, admin_key, targets["region"], ["orgs:read"], "limited")
    pids = [p for p in group_members(servers.pid("limited")) if p != servers.pid("limited")]
    before = cpu_ticks(pids)
    statuses = asyncio.run(_fire(f"{base}/orgs/{targets['read']}", key, 3 * limit, 16))
    after = cpu_ticks(pids)
    used = {str(p): after.get(p, 0) - before.get(p, 0) for p in pids}
    total = sum(used.values()) or 1
    shares = {p: round(t / total, 3) for p, t in used.items()}
    served_by_all = len(shares) >= ctx.workers and all(s >= 0.1 for s in shares.values())
    counts = Counter(statuses)
    ok = counts.get(200, 0)
    result = {
        "limit_per_key": f"{limit}/hour",
        "requests": len(statuses),
        "connections": 16,
        "statuses": {str(k): v for k, v in sorted(counts.items())},
        "worker_cpu_share": shares,
        "every_worker_served": served_by_all,
        "exactly_the_limit": ok == limit and counts.get(429, 0) == len(statuses) - limit,
    }
    ctx.say(
        f"[{label}] {ctx.workers} workers, limit {limit}/hour per key: {ok} x 200, "
        f"{counts.get(429, 0)} x 429 of {len(statuses)}; worker CPU shares {shares}"
    )
    return result


async def _fire(url: str, key: str, total: int, connections: int) -> list[int]:
    headers = {"Authorization": f"Bearer {key}"}
    statuses: list[int] = []
    remaining = total

    async def one_connection() -> None:
        nonlocal remaining
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            while remaining > 0:
                remaining -= 1
                statuses.append((await client.get(url)).status_code)

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return statuses


# ---------------------------------------------------------------------------------------------
# the separate benchmarks, as subprocesses


def run_script(
    ctx: Context, name: str, argv: list[str], log: Path
) -> subprocess.CompletedProcess[str]:
    """A bench/ script in its own process group, bounded by the suite's deadline. Interrupted,
    it gets SIGINT (all three unwind through their finally blocks: servers stopped, scratch
    databases dropped), then SIGKILL if it does not stop within 60 s."""
    ctx.deadline.check(name)
    remaining = max(30.0, ctx.deadline.end - time.monotonic())
    argv = [sys.executable, str(BENCH_DIR / name), *argv, "--max-seconds", str(int(remaining))]
    ctx.say(f"[{name}] {' '.join(argv[1:])}")
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=BENCH_DIR.parent,
            start_new_session=True,
            text=True,
        )
        try:
            code = proc.wait(timeout=remaining + 60)
        except BaseException:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
    return subprocess.CompletedProcess(argv, code, log.read_text(errors="replace"), "")


_INGEST_LINE = re.compile(
    r"^\s+(new events|duplicates)\s+([\d,]+) events/s\s+"
    r"batch p50\s+([\d.]+) ms\s+p99\s+([\d.]+) ms",
    re.MULTILINE,
)


def ingest(ctx: Context, admin_dsn: str) -> dict[str, Any]:
    """bench/ingest.py on PostgreSQL against ``orgplane serve`` (1 worker), ``runs`` times:
    events/s of new events (median), and whether every run's counters held exactly what was
    sent (it exits 1 otherwise)."""
    started = time.monotonic()
    options = [
        "--no-sqlite",
        "--serve",
        "--port",
        str(ctx.port + 8),
        "--postgres",
        admin_dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
    ]
    if ctx.quick:
        options += ["--batches", "10", "--warmup", "2"]
    runs = []
    for n in range(1, ctx.load.runs + 1):
        ctx.deadline.check(f"ingest run {n}")
        done = run_script(ctx, "ingest.py", options, ctx.workdir / f"ingest-{n}.log")
        found = {m.group(1): m.groups()[1:] for m in _INGEST_LINE.finditer(done.stdout)}
        run: dict[str, Any] = {"exit": done.returncode}
        if "new events" in found:
            rate, p50, p99 = found["new events"]
            run.update(
                events_per_s=float(rate.replace(",", "")),
                batch_p50_ms=float(p50),
                batch_p99_ms=float(p99),
            )
        if "duplicates" in found:
            run["duplicates_events_per_s"] = float(found["duplicates"][0].replace(",", ""))
        if done.returncode != 0 or "events_per_s" not in run:
            run["output_tail"] = done.stdout[-1500:]
        runs.append(run)
        figure = run.get("events_per_s", "no figure")
        ctx.say(f"[ingest] run {n}: {figure} events/s, exit {done.returncode}")
    rates = [r["events_per_s"] for r in runs if "events_per_s" in r]
    record(ctx, "postgresql: ingest", started)
    return {
        "events_per_s": statistics.median(rates) if rates else None,
        "exactly_once": all(r["exit"] == 0 for r in runs) and len(rates) == len(runs),
        "runs": runs,
    }


def rollup(ctx: Context, admin_dsn: str, databases: list[str]) -> dict[str, Any]:
    """bench/rollup.py: roll-up latency over 10,000 descendants (fewer with --quick)."""
    started = time.monotonic()
    out = ctx.results_dir / f"{ctx.stem}-rollup.json"
    options = [
        "--profile",
        "never",
        "--port",
        str(ctx.port + 6),
        "--out",
        str(out),
        "--postgres",
        admin_dsn,
    ]
    options += [] if "sqlite" in databases else ["--no-sqlite"]
    options += [] if "postgresql" in databases else ["--no-postgres"]
    if ctx.quick:
        options += [
            "--descendants",
            "2000",
            "--outside",
            "200",
            "--requests",
            "50",
            "--warmup",
            "5",
            "--wrk-seconds",
            "2",
        ]
    done = run_script(ctx, "rollup.py", options, ctx.workdir / "rollup.log")
    record(ctx, "rollup (bench/rollup.py)", started)
    result: dict[str, Any] = {"exit": done.returncode, "file": str(out)}
    if done.returncode != 0 or not out.exists():
        result["output_tail"] = done.stdout[-2000:]
        return result
    report = json.loads(out.read_text())
    result["databases"] = {
        r["database"]: {
            "descendants": r["data"]["descendants"],
            **{
                k: {m: v.get(m) for m in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "requests")}
                for k, v in r["rollups"].items()
            },
        }
        for r in report["results"]
    }
    return result


def allocations(ctx: Context, admin_dsn: str) -> dict[str, Any]:
    """bench/allocations.py on PostgreSQL: 64 concurrent allocators, then the ledger checks."""
    started = time.monotonic()
    out = ctx.results_dir / f"{ctx.stem}-allocations.json"
    options = [
        "--no-sqlite",
        "--profile",
        "never",
        "--port",
        str(ctx.port + 7),
        "--out",
        str(out),
        "--postgres",
        admin_dsn,
    ]
    options += [
        "--duration",
        str(ctx.load.duration),
        "--warmup",
        str(max(1, ctx.load.warmup)),
        "--runs",
        str(ctx.load.runs),
    ]
    done = run_script(ctx, "allocations.py", options, ctx.workdir / "allocations.log")
    record(ctx, "postgresql: allocations (bench/allocations.py)", started)
    result: dict[str, Any] = {"exit": done.returncode, "file": str(out)}
    if not out.exists():
        result["output_tail"] = done.stdout[-2000:]
        return result
    measured = json.loads(out.read_text())["results"][0]
    result.update(
        allocations_per_s=measured["allocations_per_s"],
        p50_ms=measured["p50_ms"],
        p99_ms=measured["p99_ms"],
        ledger_verified=measured["ledger_verify"]["passed"],
        pools_add_up=measured["pools"]["adds_up"],
        ledger_rows_match=measured["ledger_rows_match_responses"]["equal"],
        server_errors=bool(measured.get("server_errors")),
    )
    return result
