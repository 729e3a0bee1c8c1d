"""Where a console page's time goes: the scale scenario's console pages, in-process.

The suite's ``console_org`` and ``console_tree_level`` figures (``bench/console_pages.py``)
measure the pages served; this script takes them apart on the same kind of database::

    .venv/bin/python bench/console_profile.py --orgs 1000000 --database /tmp/console-1m.db
    .venv/bin/python bench/console_profile.py --database /tmp/console-1m.db     # again, reused

The first run builds the database as the scale scenario does (``orgplane migrate``,
``orgplane bootstrap --json``, ``bench/loader.py``), serves it once with ``orgplane serve`` to
sign the bootstrap's owner in through the console's forms and give the listed children limits
(``console_pages.sign_in`` and ``give_limits``), and keeps the file and what it needs in
``<database>.json``; later runs reuse both. Then, with the app in this process behind httpx's
ASGI transport (one request at a time, orgplane's settings but for ``log_level=warning``):

1. CPU per page (``time.process_time``, best of ``--rounds`` rounds of ``--requests``) for
   each kind of page: the wide org's, a deep org's, the root's, a tree level; and, for scale,
   the API's ``GET /orgs/{id}`` and children page of 50, and a bare ASGI app returning a body of
   the wide page's size through the same transport (the client's share of every figure);
2. the same pages' CPU time on the event loop's thread (``time.thread_time``) split by part,
   each part timed where the page's handler calls it
   (the session and the user's capabilities, the rate limiter, reach and the breadcrumb, the
   children page, the utilization bars and their statements, the template), with the number of
   statements per page and how they ran (SQLAlchemy-compiled or prepared on the driver);
3. a pyinstrument profile of the rotation, written next to the database
   (``<database>-profile.txt``), its top printed.

Nothing listens during the measurement; the server used for the setup runs on 127.0.0.1 and
is stopped in a ``finally``. ``--max-seconds`` bounds the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from console_pages import (
    PAGE,
    console_orgs,
    cookie_header,
    give_limits,
    listed,
    sign_in,
)
from harness import Servers, create_key, serve_orgplane
from loader import Sizes, load
from quick import NO_TRIP_LIMIT, Deadline, fresh_install, port_free

LEVELS = 20  # tree levels in the rotation (cursors spread through the wide org's children)


# ---------------------------------------------------------------------------------------------
# the database, built once


def build(args: argparse.Namespace, meta_path: Path, deadline: Deadline) -> dict[str, Any]:
    url = args.database_url
    env, boot = fresh_install("profile", url)
    loaded = asyncio.run(load(url, Sizes.for_orgs(args.orgs)))
    deadline.check("serving the new database")
    targets = loaded.targets
    servers = Servers()
    with tempfile.TemporaryDirectory(prefix="orgplane-console-profile-") as tmp:
        try:
            base = serve_orgplane(servers, "setup", env, args.port, 1, Path(tmp) / "serve.log")
            key = create_key(base, boot["api_key"], targets["root"], ["orgs:read"], "profile")
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
                orgs = console_orgs(client, targets)
                cursors: list[str | None] = [None]
                page: dict[str, Any] = {"next_cursor": None}
                for _ in range(LEVELS * 10):
                    deadline.check("reading the wide org's children")
                    params = {"limit": "100"}
                    if cursors[-1]:
                        params["cursor"] = str(cursors[-1])
                    page = client.get(f"/orgs/{targets['wide']}/children", params=params).json()
                    if not page["next_cursor"]:
                        break
                    cursors.append(page["next_cursor"])
                levels = cursors[:: max(1, len(cursors) // LEVELS)][:LEVELS]
                pages = {c or "": listed(client, targets["wide"], c) for c in levels}
            children = list(dict.fromkeys(c["id"] for p in pages.values() for c in p))
            cookies = sign_in(base, boot)
            give_limits(base, boot["api_key"], targets, children)
        finally:
            servers.stop_all()
    meta = {
        "orgs": args.orgs,
        "database_url": url,
        "boot": boot,
        "key": key,
        "cookies": cookies,
        "targets": {k: v for k, v in targets.items() if k != "audit_orgs"},
        "orgs_read": orgs,
        "levels": levels,
        "pages": pages,
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


# ---------------------------------------------------------------------------------------------
# timing the parts where the handlers call them


class Parts:
    """CPU time of the event loop's thread in each part (``time.thread_time``: the machine's
    other load does not inflate it, and on SQLite the reads run on that thread), summed over the
    requests timed, and the calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.active = False

    def wrap_async(self, owner: Any, name: str, part: str) -> None:
        original = getattr(owner, name)

        async def timed(*a: Any, **k: Any) -> Any:
            if not self.active:
                return await original(*a, **k)
            started = time.thread_time()
            try:
                return await original(*a, **k)
            finally:
                self.seconds[part] += time.thread_time() - started
                self.calls[part] += 1

        setattr(owner, name, timed)

    def wrap_sync(self, owner: Any, name: str, part: str) -> None:
        original = getattr(owner, name)

        def timed(*a: Any, **k: Any) -> Any:
            if not self.active:
                return original(*a, **k)
            started = time.thread_time()
            try:
                return original(*a, **k)
            finally:
                self.seconds[part] += time.thread_time() - started
                self.calls[part] += 1

        setattr(owner, name, timed)


def instrument(parts: Parts) -> None:
    """Time the console's calls into the core and the template, in the modules that call them
    (the handlers imported the functions by name)."""
    import jinja2

    from orgplane.console import orgs as console_orgs_module
    from orgplane.console import session
    from orgplane.core.orgs import queries
    from orgplane.core.usage import consumption
    from orgplane.db import engine

    parts.wrap_async(session, "principal_of", "session + capabilities")
    parts.wrap_async(console_orgs_module, "reach", "reach (the page's org)")
    parts.wrap_async(queries, "lineage", "breadcrumb (lineage)")
    parts.wrap_async(queries, "list_children", "children page (reach + keyset)")
    parts.wrap_async(consumption, "report", "consumption report (reach + 3 statements)")
    parts.wrap_async(consumption, "utilization", "utilization bars (reach + 2 statements)")
    parts.wrap_sync(jinja2.Template, "render", "template render")
    for reader in (engine.SyncReader, engine.PostgresReader):
        parts.wrap_async(reader, "execute", "statements: SQLAlchemy Core (execute)")
        parts.wrap_async(reader, "first", "statements: prepared (first)")
        parts.wrap_async(reader, "all", "statements: prepared (all)")


# ---------------------------------------------------------------------------------------------
# measuring


Get = Callable[[str], Awaitable[httpx.Response]]


async def cpu_per_request(get: Get, paths: list[str], requests: int, rounds: int) -> float:
    """Best of ``rounds``: process CPU per request (ms) over ``requests`` requests rotating
    over ``paths``."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for i in range(requests):
            response = await get(paths[i % len(paths)])
            if response.status_code != 200:
                raise RuntimeError(f"{paths[i % len(paths)]}: {response.status_code}")
        best = min(best, (time.process_time() - started) / requests * 1000)
    return best


def bare_app(size: int) -> Any:
    body = b"x" * size

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/html; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


@contextlib.contextmanager
def quiet_gc_freeze() -> Iterator[None]:
    """What the served app does at startup (gc.freeze after building), for comparable CPU."""
    import gc

    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def profile(meta: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from pyinstrument import Profiler

    from orgplane.app import build_services, create_app
    from orgplane.config import Settings

    settings = Settings(
        database_url=meta["database_url"],
        environment="development",
        log_level="warning",  # served, each request logs a line at info (~11 µs, measured)
        rate_limit_per_key=NO_TRIP_LIMIT,
        rate_limit_per_org=NO_TRIP_LIMIT,
    )
    services = build_services(settings)
    app = create_app(settings, services)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    targets, wide = meta["targets"], meta["targets"]["wide"]
    browser = cookie_header(meta["cookies"])
    api = {"Authorization": f"Bearer {meta['key']}"}
    level_paths = [
        f"/console/orgs/{wide}/children" + (f"?cursor={c}" if c else "") for c in meta["levels"]
    ]
    kinds = {
        "console: the wide org (50 children, bars)": [f"/console/orgs/{wide}"],
        "console: a deepest org (no children)": [f"/console/orgs/{targets['deep']}"],
        "console: the root (its regions)": [f"/console/orgs/{targets['root']}"],
        "console: a tree level (50 children, bars)": level_paths,
        "console: the suite's org rotation": [f"/console/orgs/{o}" for o in meta["orgs_read"]],
    }
    api_kinds = {
        "API: GET /orgs/{wide}": [f"/orgs/{wide}"],
        "API: GET /orgs/{wide}/children?limit=50": [f"/orgs/{wide}/children?limit={PAGE}"],
    }
    services.access_log.start()
    report: dict[str, Any] = {"cpu_ms_per_request": {}, "parts_ms_per_request": {}}
    try:
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as client,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=bare_app(30_000)), base_url="http://bench"
            ) as bare,
        ):

            async def console_get(path: str) -> httpx.Response:
                return await client.get(path, headers=browser)

            async def api_get(path: str) -> httpx.Response:
                return await client.get(path, headers=api)

            # The pages answer as the suite checks them before measuring (sign-in held).
            for path in kinds["console: the wide org (50 children, bars)"]:
                response = await console_get(path)
                if response.status_code != 200 or "meter-bar" not in response.text:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
            for paths in [*kinds.values(), *api_kinds.values()]:
                for path in paths:
                    await (api_get if path.startswith("/orgs") else console_get)(path)
            with quiet_gc_freeze():
                for name, paths in kinds.items():
                    ms = await cpu_per_request(console_get, paths, args.requests, args.rounds)
                    report["cpu_ms_per_request"][name] = round(ms, 3)
                    print(f"  CPU per request  {ms:7.2f} ms  {name}", flush=True)
                for name, paths in api_kinds.items():
                    ms = await cpu_per_request(api_get, paths, args.requests * 4, args.rounds)
                    report["cpu_ms_per_request"][name] = round(ms, 3)
                    print(f"  CPU per request  {ms:7.2f} ms  {name}", flush=True)

                async def bare_get(path: str) -> httpx.Response:
                    return await bare.get(path)

                ms = await cpu_per_request(bare_get, ["/"], args.requests * 4, args.rounds)
                name = "bare ASGI app, 30 kB body, same transport (the client's share)"
                report["cpu_ms_per_request"][name] = round(ms, 3)
                print(f"  CPU per request  {ms:7.2f} ms  {name}", flush=True)

                # 2. The parts.
                parts = Parts()
                instrument(parts)
                for name in (
                    "console: the wide org (50 children, bars)",
                    "console: a tree level (50 children, bars)",
                    "console: a deepest org (no children)",
                ):
                    paths = kinds[name]
                    parts.seconds.clear()
                    parts.calls.clear()
                    parts.active = True
                    cpu_times = []
                    for i in range(args.requests):
                        started = time.thread_time()
                        await console_get(paths[i % len(paths)])
                        cpu_times.append(time.thread_time() - started)
                    parts.active = False
                    n = args.requests
                    total = sum(cpu_times) / n * 1000
                    shares = {
                        part: {
                            "ms": round(s / n * 1000, 3),
                            "calls": round(parts.calls[part] / n, 1),
                        }
                        for part, s in parts.seconds.items()
                    }
                    report["parts_ms_per_request"][name] = {
                        "thread_cpu_ms": round(total, 3),
                        "thread_cpu_p50_ms": round(statistics.median(cpu_times) * 1000, 3),
                        "parts": shares,
                    }
                    print(f"  {name}: {total:.2f} ms of the loop thread's CPU (client included)")
                    for part, v in sorted(shares.items(), key=lambda kv: kv[0]):
                        print(f"      {v['ms']:7.3f} ms  {v['calls']:5.1f} calls  {part}")

                # 3. pyinstrument over the suite's two rotations.
                profiler = Profiler(interval=0.0002, async_mode="disabled")
                rotation = kinds["console: the suite's org rotation"] + level_paths
                profiler.start()
                for i in range(args.requests * 2):
                    await console_get(rotation[i % len(rotation)])
                profiler.stop()

    finally:
        await services.access_log.stop()
        await services.db.dispose()
    report["pyinstrument"] = profiler.output_text(unicode=False, color=False, show_all=False)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orgs", type=int, default=100_000, help="orgs when building")
    parser.add_argument(
        "--database",
        type=Path,
        default=Path(tempfile.gettempdir()) / "orgplane-console-profile.db",
        help="the SQLite file: built if absent, reused with its .json otherwise",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="another database (e.g. an empty PostgreSQL one) instead of --database",
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--port", type=int, default=8075, help="the setup server's, 127.0.0.1")
    parser.add_argument(
        "--build-only", action="store_true", help="build the database and its .json, then stop"
    )
    parser.add_argument("--max-seconds", type=float, default=3600)
    args = parser.parse_args()
    deadline = Deadline(args.max_seconds)
    if args.database_url is None:
        args.database_url = f"sqlite+aiosqlite:///{args.database}"
    meta_path = Path(f"{args.database}.json")
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["database_url"] != args.database_url:
            raise SystemExit(f"{meta_path} describes {meta['database_url']}, not this database")
    else:
        if args.database.exists() and args.database_url.startswith("sqlite"):
            raise SystemExit(f"{args.database} exists without its {meta_path.name}: remove it")
        if not port_free(args.port):
            raise SystemExit(f"port {args.port} is in use on 127.0.0.1; pick another (--port)")
        meta = build(args, meta_path, deadline)
    if args.build_only:
        print(f"built {args.database} and {meta_path.name}")
        return 0
    print(
        f"{meta['orgs']:,} orgs; load average {os.getloadavg()[0]:.2f}; "
        f"{args.rounds} rounds of {args.requests} requests",
        flush=True,
    )
    # The samples answer as the suite requires before anything is timed.
    report = asyncio.run(profile(meta, args))
    prefix = args.database.with_suffix("")
    text = report.pop("pyinstrument")
    Path(f"{prefix}-profile.txt").write_text(text)
    Path(f"{prefix}-profile.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {prefix}-profile.txt and {prefix}-profile.json")
    for line in text.splitlines()[:80]:
        print(f"    {line}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
