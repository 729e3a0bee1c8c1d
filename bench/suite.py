"""The benchmark suite in one command (issue 6): orgplane against the machine's ceiling.

Run from the repository root (``make bench`` runs the first line)::

    .venv/bin/python bench/suite.py                   # everything, SQLite and PostgreSQL
    .venv/bin/python bench/suite.py --quick           # every scenario, small, a few minutes
    .venv/bin/python bench/suite.py --only get_org,children --no-postgres

For each database (SQLite, then PostgreSQL) it runs, on fresh databases filled by
``bench/loader.py``: the ``get_org`` and ``children`` scenarios (orgplane, 1 worker, against the
bare ASGI app and a FastAPI + SQLAlchemy ORM reference app on the same server, 1,000 orgs), the
``workers`` scenario (N workers with Redis-backed rate limits) and the ``scale`` scenario
(``--scale`` orgs, 10 audit entries per org; ``bench/scale.py``). Then ``ingest``
(``bench/ingest.py``) and ``allocations`` (``bench/allocations.py``) on PostgreSQL, and
``rollup`` (``bench/rollup.py``) on both. Load: ``wrk -t1 -c32 -d10s --latency`` after a 3 s
warm-up, each figure the median of 3 runs taken in rounds.

It writes ``bench/results/<date>-<hostname>.json`` (everything, every run), a Markdown summary
and a chart (PNG) next to it, and prints the targets with the measured values and a verdict.
Everything listens on 127.0.0.1 only; every server runs in its own process group and is stopped
in a ``finally`` (on success, failure, Ctrl-C or SIGTERM); scratch PostgreSQL databases are
dropped; the whole run is bounded by ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from harness import Load
from quick import (
    BENCH_DIR,
    HOST,
    NO_TRIP_LIMIT,
    Deadline,
    git_state,
    interrupt,
    port_free,
    postgres_database,
    versions,
)
from report import as_dicts, chart, figures_table, markdown, timings_table, verdict_table, verdicts
from scale import run_scale
from scenarios import REDIS_DEFAULT, Context, allocations, ingest, requests_scenario, rollup

SCENARIOS = ("get_org", "children", "workers", "scale", "ingest", "rollup", "allocations")
PORTS = 9  # the suite's ports: --port .. --port + 8
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and 2 s runs: a smoke run"
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=None,
        help="orgs for the scale scenario: "
        "1000, 100000 or 1000000 (default 1000000; 1000 with --quick)",
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios among {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (3; 1 quick)")
    parser.add_argument("--duration", type=int, default=None, help="seconds per run (10; 2 quick)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up seconds (3; 1 quick)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="N of the workers scenario")
    parser.add_argument("--base-orgs", type=int, default=1000, help="orgs for get_org/children")
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        help="per-key limit per hour in the workers scenario (300; 100 quick)",
    )
    parser.add_argument(
        "--verify-audit",
        action="store_true",
        help="also run orgplane audit verify on the scale data (slow at 10M)",
    )
    parser.add_argument("--port", type=int, default=8050, help=f"first of {PORTS} ports")
    parser.add_argument(
        "--postgres",
        default=ADMIN_DSN,
        metavar="ADMIN_DSN",
        help="scratch databases are created through it and dropped",
    )
    parser.add_argument(
        "--redis-url",
        default=REDIS_DEFAULT,
        help=f"Redis database for the workers scenario (default {REDIS_DEFAULT})",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="abort past this (5400; 1500 quick)"
    )
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, small in (
        ("scale", 1_000_000, 1000),
        ("runs", 3, 1),
        ("duration", 10, 2),
        ("warmup", 3, 1),
        ("rate_limit", 300, 100),
        ("max_seconds", 5400.0, 1500.0),
    ):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    args.wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.wanted - set(SCENARIOS)
    if unknown:
        parser.error(
            f"unknown scenarios {', '.join(sorted(unknown))}; known: {', '.join(SCENARIOS)}"
        )
    if not 500 <= args.scale <= 2_000_000 or not 500 <= args.base_orgs <= 100_000:
        parser.error("--scale 500..2,000,000 and --base-orgs 500..100,000")
    if not 1 <= args.runs <= 10 or not 1 <= args.duration <= 120 or not 1 <= args.warmup <= 60:
        parser.error("--runs 1..10, --duration 1..120, --warmup 1..60")
    if args.no_sqlite and args.no_postgres:
        parser.error("--no-sqlite and --no-postgres leave nothing to measure")
    return args


# ---------------------------------------------------------------------------------------------
# before starting


def redis_problem(url: str) -> str | None:
    try:
        import redis

        redis.Redis.from_url(url, socket_timeout=3).ping()
    except Exception as exc:
        return f"Redis at {url} is not reachable ({exc.__class__.__name__}: {exc})"
    return None


def postgres_problem(dsn: str) -> str | None:
    import asyncio

    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"PostgreSQL at {dsn} is not reachable ({exc.__class__.__name__}: {exc})"
    return None


def preflight(args: argparse.Namespace) -> list[str]:
    """Problems that stop the run before it starts."""
    problems = []
    if shutil.which("wrk") is None:
        problems.append("wrk is not installed (apt-get install -y wrk)")
    busy = [p for p in range(args.port, args.port + PORTS) if not port_free(p)]
    if busy:
        problems.append(f"ports in use on {HOST}: {busy}; pick others with --port")
    return problems


# ---------------------------------------------------------------------------------------------
# running


def guarded(ctx: Context, what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a part; a failure is recorded (and the run goes on), an interrupt is not caught."""
    try:
        return fn()
    except Exception:
        text = traceback.format_exc()
        ctx.say(f"[{what}] FAILED:\n{text}")
        return {"error": text[-4000:]}


def sqlite_database(
    ctx: Context, name: str, fn: Callable[[str, str], dict[str, Any]]
) -> dict[str, Any]:
    """A fresh SQLite file for ``fn(url, path)``, removed afterwards."""
    path = ctx.workdir / f"{name}.db"
    try:
        return fn(f"sqlite+aiosqlite:///{path}", str(path))
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def pg_database(admin: str, name: str, fn: Callable[[str, str], dict[str, Any]]) -> dict[str, Any]:
    """A scratch PostgreSQL database for ``fn(url, dsn)``, dropped afterwards."""
    with postgres_database(admin, name) as dsn:
        return fn(dsn.replace("postgresql://", "postgresql+asyncpg://", 1), dsn)


def on_database(
    ctx: Context,
    args: argparse.Namespace,
    label: str,
    name: str,
    fn: Callable[[str, str], dict[str, Any]],
) -> dict[str, Any]:
    if label == "sqlite":
        return sqlite_database(ctx, name, fn)
    return pg_database(args.postgres, name, fn)


def run_requests(
    ctx: Context, args: argparse.Namespace, label: str, redis_trouble: str | None
) -> dict[str, Any]:
    """The requests (+ workers) scenarios on one database; ``redis_trouble`` says why the
    workers scenario cannot run, if it cannot."""
    parts: dict[str, Any] = {}
    wanted = set(args.wanted)
    if redis_trouble:
        wanted.discard("workers")
    if wanted & {"get_org", "children", "workers"}:
        parts["requests"] = guarded(
            ctx,
            f"{label} requests",
            lambda: on_database(
                ctx,
                args,
                label,
                "orgplane_suite",
                lambda url, bare: requests_scenario(ctx, label, url, bare, wanted),
            ),
        )
    if "workers" in args.wanted and redis_trouble:
        parts.setdefault("requests", {})["workers"] = {"not_run": redis_trouble}
    return parts


def run_scale_on(ctx: Context, args: argparse.Namespace, label: str) -> dict[str, Any]:
    return guarded(
        ctx,
        f"{label} scale",
        lambda: on_database(
            ctx,
            args,
            label,
            "orgplane_suite_scale",
            lambda url, _: run_scale(ctx, label, url, args.scale, args.verify_audit),
        ),
    )


def run_all(
    ctx: Context, args: argparse.Namespace, results: dict[str, Any], notes: list[str]
) -> None:
    databases = [
        d for d, off in (("sqlite", args.no_sqlite), ("postgresql", args.no_postgres)) if not off
    ]
    pg_problem = postgres_problem(args.postgres) if "postgresql" in databases else None
    if pg_problem:
        notes.append(f"PostgreSQL parts not run: {pg_problem}")
        databases.remove("postgresql")
        results["databases"]["postgresql"] = {
            "requests": {"not_run": pg_problem},
            "scale": {"not_run": pg_problem},
        }
    redis_trouble = redis_problem(args.redis_url) if "workers" in args.wanted else None
    for label in databases:
        results["databases"][label] = run_requests(ctx, args, label, redis_trouble)
    # The throughput parts before the scale loads: a database that has just written millions
    # of rows goes on flushing them for minutes, and every commit measured meanwhile waits.
    without_pg = pg_problem or ("--no-postgres" if args.no_postgres else None)
    for name, bench in (("ingest", ingest), ("allocations", allocations)):
        if name not in args.wanted:
            continue
        if without_pg:
            results[name] = {"not_run": f"needs PostgreSQL ({without_pg})"}
        else:
            results[name] = guarded(ctx, name, partial(bench, ctx, args.postgres))
    if "rollup" in args.wanted:
        if databases:
            results["rollup"] = guarded(
                ctx, "rollup", lambda: rollup(ctx, args.postgres, databases)
            )
        else:
            results["rollup"] = {"not_run": "no database left to run it on"}
    if "scale" in args.wanted:
        for label in databases:
            results["databases"][label]["scale"] = run_scale_on(ctx, args, label)


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "quick": args.quick,
        "scenarios": sorted(args.wanted),
        "scale_orgs": args.scale,
        "base_orgs": args.base_orgs,
        "wrk": f"-t1 -c{args.connections} -d{args.duration}s --latency",
        "warmup_seconds": args.warmup,
        "runs": args.runs,
        "workers": args.workers,
        "rate_limit_per_key": f"{args.rate_limit}/hour",
        "server": "granian, uvloop, on 127.0.0.1; orgplane through `orgplane serve --server "
        "granian`, the bare and reference apps through the granian command line, 1 worker",
        "orgplane_env": {
            "ORGPLANE_RATE_LIMIT_PER_KEY": NO_TRIP_LIMIT,
            "ORGPLANE_RATE_LIMIT_PER_ORG": NO_TRIP_LIMIT,
            "ORGPLANE_ENVIRONMENT": "development",
            "everything else": "defaults",
        },
        "redis_url": args.redis_url,
        "max_seconds": args.max_seconds,
    }


def write_outputs(
    report: dict[str, Any], out_dir: Path, stem: str
) -> tuple[Path, Path, Path | None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (out_dir / f"{stem}{ext}" for ext in (".json", ".md", ".png"))
    report["json_name"] = json_path.name
    rows = verdicts(report["results"])
    report["verdicts"] = as_dicts(rows)
    drawn = chart(report["results"], png_path)
    json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2, default=str) + b"\n")
    md_path.write_text(markdown(report, rows, png_path.name if drawn else None))
    return json_path, md_path, png_path if drawn else None


def context(args: argparse.Namespace, workdir: Path, stem: str) -> Context:
    return Context(
        load=Load(args.duration, args.warmup, args.runs),
        connections=args.connections,
        workers=args.workers,
        base_orgs=args.base_orgs,
        port=args.port,
        redis_url=args.redis_url,
        rate_limit=args.rate_limit,
        quick=args.quick,
        deadline=Deadline(args.max_seconds),
        workdir=workdir,
        results_dir=args.out_dir,
        stem=stem,
        say=lambda line: print(line, flush=True),
    )


def build_report(
    args: argparse.Namespace,
    ctx: Context,
    results: dict[str, Any],
    notes: list[str],
    start: dict[str, Any],
) -> dict[str, Any]:
    return {
        "kind": "suite",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "hostname": platform.node(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_at_start": start["load"],
            "load_avg_at_end": os.getloadavg(),
        },
        "versions": versions(),
        # Servers import the code when they start: a tree edited during the run shows here.
        "git": {"at_start": start["git"], "at_end": git_state()},
        "settings": settings_of(args),
        "total_seconds": round(time.monotonic() - start["monotonic"], 1),
        "timings": ctx.timings,
        "notes": notes,
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    args = parse_args(argv)
    problems = preflight(args)
    if problems:
        for problem in problems:
            print(f"cannot run: {problem}", file=sys.stderr)
        return 2
    start: dict[str, Any] = {
        "monotonic": time.monotonic(),
        "load": os.getloadavg(),
        "git": git_state(),
    }
    stem = f"{datetime.now(UTC):%Y-%m-%d}-{platform.node() or 'machine'}"
    stem += "-quick" if args.quick else ""
    if start["load"][0] > 0.5 * (os.cpu_count() or 1):
        print(
            f"warning: load average {start['load'][0]:.1f} on {os.cpu_count()} cores: other "
            "work on this machine lowers and scatters every figure",
            flush=True,
        )
    results: dict[str, Any] = {
        "only": sorted(args.wanted),
        "scale": args.scale,
        "connections": args.connections,
        "databases": {},
    }
    notes: list[str] = []
    if args.quick:
        notes.append(
            "--quick: small data and one short run per figure, a smoke run of every scenario; "
            "its figures are not measurements to compare"
        )
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="orgplane-suite-") as tmp:
        ctx = context(args, Path(tmp), stem)
        try:
            run_all(ctx, args, results, notes)
        except KeyboardInterrupt as exc:
            interrupted = True
            notes.append(f"the run was interrupted ({exc or 'Ctrl-C'}); the results are partial")
        report = build_report(args, ctx, results, notes, start)
    paths = write_outputs(report, args.out_dir, stem)
    print_summary(report, [p for p in paths if p is not None])
    if interrupted:
        return 130
    return 1 if failed(results) else 0


def print_summary(report: dict[str, Any], paths: list[Path]) -> None:
    print("\n" + verdict_table(as_verdicts(report)))
    figures = figures_table(report["results"])
    if figures.count("\n") > 1:
        print("\n" + figures)
    print("\n" + timings_table(report["timings"]))
    print(f"\ntotal {report['total_seconds'] / 60:.1f} minutes")
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"wrote {', '.join(str(p) for p in paths)}")


def as_verdicts(report: dict[str, Any]) -> list[Any]:
    from report import Verdict

    return [Verdict(**v) for v in report["verdicts"]]


def failed(results: dict[str, Any]) -> bool:
    """A part that crashed (not a missed target: those are findings)."""
    parts = [p for db in results["databases"].values() for p in db.values()]
    parts += [p.get("console") for p in parts if isinstance(p, dict)]
    parts += [results.get(k) for k in ("ingest", "rollup", "allocations")]
    return any(isinstance(p, dict) and "error" in p for p in parts)


if __name__ == "__main__":
    sys.exit(main())
