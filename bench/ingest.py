"""Usage ingestion throughput: events/s posted in batches through the HTTP API.

Run from the repository root::

    .venv/bin/python bench/ingest.py                      # SQLite and PostgreSQL
    .venv/bin/python bench/ingest.py --no-postgres        # SQLite only
    .venv/bin/python bench/ingest.py --no-sqlite --serve  # orgplane serve (granian, 1 worker)

For each database it builds a fresh orgplane database (a temporary SQLite file, or a scratch
PostgreSQL database ``orgplane_bench_ingest``, created through the admin DSN and dropped at the
end), migrates it, bootstraps a root, creates ``--orgs`` children and a ``usage:write`` key, and
runs the app in this process behind httpx's ASGI transport (the full stack: authentication, rate
limiter, access log, validation, the ingest transaction, audit). With ``--serve`` the batches go
over HTTP to ``orgplane serve --server granian --workers 1`` started on the same database (the
set-up still runs in this process), and the server's own CPU is reported too. The request bodies
are encoded before the clock starts. Each event names one of the children, one of two meters
and a time in the last hour; every key is new. After a warm-up, ``--batches`` batches of
``--batch-size`` events are posted with ``--concurrency`` requests in flight; then the same
batches again (every event a duplicate). It prints events/s and the p50/p99 latency of a batch
for both passes, and checks that the counters hold exactly what was sent. Bounded by
``--max-seconds``. ``--alerts N`` sets usage alerts on N of the orgs first (their limits far
above the run's usage), to measure what checking them costs ingestion.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from orgplane.app import build_services, create_app
from orgplane.config import Settings
from orgplane.core.bootstrap import bootstrap
from orgplane.db.migrate import upgrade
from orgplane.models import usage_daily, usage_events

DEFAULT_ADMIN_DSN = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DATABASE = "orgplane_bench_ingest"
NO_TRIP_LIMIT = "1000000000/minute"
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"


@dataclass
class Pass:
    events: int
    seconds: float
    cpu_seconds: float  # of this process: client, app and driver, not the database server
    latencies: list[float]
    server_cpu_seconds: float | None = None  # of the served app (--serve), else None

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    def line(self, label: str) -> str:
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"  {label:<11} {self.events_per_s:>10,.0f} events/s   "
            f"batch p50 {statistics.median(ordered) * 1000:6.1f} ms   p99 {p99 * 1000:6.1f} ms   "
            f"process CPU {self.cpu_seconds / self.events * 1e6:5.1f} ms/1,000 events   "
            + (
                f"server CPU {self.server_cpu_seconds / self.events * 1e6:5.1f} ms/1,000 events   "
                if self.server_cpu_seconds is not None
                else ""
            )
            + f"({self.events:,} events in {self.seconds:.2f} s)"
        )


async def _admin(dsn: str, statement: str) -> None:
    engine = create_async_engine(dsn, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


def _bodies(orgs: list[str], batches: int, size: int, prefix: str) -> list[bytes]:
    now = datetime.now(UTC)
    bodies = []
    for b in range(batches):
        events = [
            {
                "meter": "operations" if i % 4 else "credits",
                "quantity": 1 + i % 10,
                "timestamp": (now - timedelta(seconds=(b * size + i) % 3600)).isoformat(),
                "idempotency_key": f"{prefix}-{b}-{i}",
                "org_id": orgs[(b * size + i) % len(orgs)],
            }
            for i in range(size)
        ]
        bodies.append(msgspec.json.encode({"events": events}))
    return bodies


async def _post_all(
    client: httpx.AsyncClient,
    path: str,
    headers: dict[str, str],
    bodies: list[bytes],
    c: int,
    server: int | None = None,
) -> Pass:
    queue = list(reversed(bodies))
    latencies: list[float] = []
    events = 0

    async def worker() -> None:
        nonlocal events
        while queue:
            body = queue.pop()
            started = time.perf_counter()
            response = await client.post(path, content=body, headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text[:500]}")
            result = response.json()
            events += result["accepted"] + result["duplicates"]

    server_cpu = _group_cpu_seconds(server) if server is not None else 0.0
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(c)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    served = _group_cpu_seconds(server) - server_cpu if server is not None else None
    return Pass(events, elapsed, cpu, latencies, served)


def _group_cpu_seconds(pgid: int) -> float:
    """utime + stime of the processes of a process group (the server and its workers)."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def _served(url: str, port: int) -> Iterator[tuple[str, int]]:
    """``orgplane serve`` (granian, 1 worker) on ``url`` in its own process group: (base URL,
    process group id); stopped on the way out."""
    env = {
        **os.environ,
        "ORGPLANE_DATABASE_URL": url,
        "ORGPLANE_ENVIRONMENT": "development",
        "ORGPLANE_LOG_LEVEL": "warning",
        "ORGPLANE_RATE_LIMIT_PER_KEY": NO_TRIP_LIMIT,
        "ORGPLANE_RATE_LIMIT_PER_ORG": NO_TRIP_LIMIT,
    }
    env.pop("ORGPLANE_REDIS_URL", None)
    argv = [str(BIN / "orgplane"), "serve", "--host", HOST, "--port", str(port)]
    argv += ["--workers", "1", "--server", "granian"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            base = f"http://{HOST}:{port}"
            _wait_ready(f"{base}/healthz", proc, log)
            yield base, proc.pid
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Any) -> None:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if proc.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"orgplane serve exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within 60 s")


async def _set_alerts(
    client: httpx.AsyncClient, admin: dict[str, str], root: str, orgs: list[str]
) -> None:
    """Usage alerts (50/80/100%) on both meters of these orgs: the first (the batches' parent)
    on its subtree, the others on their own usage, each with a limit far above what the run
    uses (every batch is checked; none fires)."""
    parent, children = orgs[0], orgs[1:]
    for meter in ("operations", "credits"):
        calls = [
            (f"/orgs/{root}/limits/{meter}", {"amount": 10**13}),
            (f"/orgs/{root}/children/{parent}/allocations/{meter}", {"amount": 10**12}),
            *((f"/orgs/{parent}/children/{c}/allocations/{meter}", {"amount": 10**10})
              for c in children),
            (f"/orgs/{parent}/alerts/{meter}", {"scope": "subtree"}),
            *((f"/orgs/{c}/alerts/{meter}", {"scope": "org"}) for c in children),
        ]  # fmt: skip
        for path, body in calls:
            response = await client.put(path, json=body, headers=admin)
            response.raise_for_status()


async def run(url: str, args: argparse.Namespace) -> tuple[Pass, Pass]:
    upgrade(url)
    settings = Settings(
        database_url=url,
        environment="development",
        log_level="warning",
        rate_limit_per_key=NO_TRIP_LIMIT,
        rate_limit_per_org=NO_TRIP_LIMIT,
    )
    services = build_services(settings)
    app = create_app(settings, services)
    services.access_log.start()
    try:
        root = await bootstrap(services.db, name="Bench root")
        assert root is not None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=120
        ) as client:
            admin = {"Authorization": f"Bearer {root.api_key}"}
            parent = (
                await client.post(
                    f"/orgs/{root.org_id}/children", json={"name": "Ingest"}, headers=admin
                )
            ).json()
            orgs = [parent["id"]]
            for n in range(args.orgs - 1):
                child = await client.post(
                    f"/orgs/{parent['id']}/children", json={"name": f"C{n}"}, headers=admin
                )
                orgs.append(child.json()["id"])
            if args.alerts:
                await _set_alerts(client, admin, root.org_id, orgs[: args.alerts])
            key = await client.post(
                f"/orgs/{parent['id']}/api_keys",
                json={"name": "ingest", "scopes": ["usage:write"]},
                headers=admin,
            )
            headers = {
                "Authorization": f"Bearer {key.json()['api_key']}",
                "Content-Type": "application/json",
            }
            path = f"/orgs/{parent['id']}/usage"
            warmup = _bodies(orgs, args.warmup, args.batch_size, "warm")
            bodies = _bodies(orgs, args.batches, args.batch_size, "run")
            if not args.serve:
                await _post_all(client, path, headers, warmup, args.concurrency)
                fresh = await _post_all(client, path, headers, bodies, args.concurrency)
                again = await _post_all(client, path, headers, bodies, args.concurrency)
        if args.serve:
            with _served(url, args.port) as (base, server):
                limits = httpx.Limits(max_connections=args.concurrency)
                async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as served:
                    c = args.concurrency
                    await _post_all(served, path, headers, warmup, c, server)
                    fresh = await _post_all(served, path, headers, bodies, c, server)
                    again = await _post_all(served, path, headers, bodies, c, server)

        total = (args.warmup + args.batches) * args.batch_size
        async with services.db.read() as conn:
            stored = await conn.execute(sa.select(sa.func.count()).select_from(usage_events))
            folded = await conn.execute(sa.select(sa.func.sum(usage_daily.c.quantity)))
            stored_n, folded_n = stored.scalar_one(), folded.scalar_one()
        expected_sum = sum(1 + i % 10 for i in range(args.batch_size)) * (
            args.warmup + args.batches
        )
        if stored_n != total or folded_n != expected_sum:
            raise RuntimeError(
                f"stored {stored_n}/{total} events, counters {folded_n}/{expected_sum}"
            )
        return fresh, again
    finally:
        await services.access_log.stop()
        await services.db.dispose()


async def main_async(args: argparse.Namespace) -> int:
    results: dict[str, tuple[Pass, Pass]] = {}
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory(prefix="orgplane-bench-") as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            results["SQLite"] = await run(url, args)
            print(_report("SQLite", results["SQLite"], args), flush=True)
    if not args.no_postgres:
        admin = args.postgres
        url = make_url(admin).set(database=DATABASE).render_as_string(hide_password=False)
        await _admin(admin, f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await _admin(admin, f'CREATE DATABASE "{DATABASE}"')
        try:
            results["PostgreSQL"] = await run(url, args)
            print(_report("PostgreSQL", results["PostgreSQL"], args), flush=True)
        finally:
            await _admin(admin, f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    return 0


def _report(name: str, passes: tuple[Pass, Pass], args: argparse.Namespace) -> str:
    fresh, again = passes
    return "\n".join(
        [
            f"{name}: {args.batches} batches of {args.batch_size:,} events over {args.orgs} orgs, "
            f"{args.concurrency} in flight, {args.alerts} orgs with alerts, "
            + ("orgplane serve (granian, 1 worker)" if args.serve else "in process")
            + f" (load average {os.getloadavg()[0]:.2f})",
            fresh.line("new events"),
            again.line("duplicates"),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--orgs", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--postgres", default=DEFAULT_ADMIN_DSN, help="admin DSN")
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument(
        "--serve", action="store_true", help="post to orgplane serve (granian, 1 worker)"
    )
    parser.add_argument("--port", type=int, default=8790, help="the served app's port")
    parser.add_argument(
        "--alerts",
        type=int,
        default=0,
        help="usage alerts on this many of the orgs (the batches' parent on its subtree)",
    )
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not 1 <= args.batches * args.batch_size <= 1_000_000 or args.batch_size > 10_000:
        parser.error("at most 1,000,000 events per pass and 10,000 per batch")
    try:
        return asyncio.run(asyncio.wait_for(main_async(args), args.max_seconds))
    except TimeoutError:
        print(f"aborted after {args.max_seconds:.0f} s", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
