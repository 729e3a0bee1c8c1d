"""A first, reproducible measurement: orgplane's authenticated GET /orgs/{id} against the ceiling.

Run from the repository root::

    .venv/bin/python bench/quick.py                 # SQLite
    .venv/bin/python bench/quick.py --postgres      # SQLite, then PostgreSQL (a scratch database)

For each database it builds a fresh orgplane database (migrate, bootstrap, ~1,000 orgs created
through the API), then starts on 127.0.0.1, side by side: ``orgplane serve`` (granian, 1 worker)
and ``bench/bare_asgi.py`` under granian (1 worker). wrk (``-t1 -c32 -d10s`` after a warm-up)
loads, in rounds: orgplane ``GET /orgs/{id}``, bare ``GET /hello``, bare ``GET /orgs/{id}``.
Each figure is the median of the rounds. The table and ``bench/results/<date>-quick.json`` give
requests/s, p50 and p99, and the ratios. Everything it starts is stopped in a ``finally``; the
scratch PostgreSQL database is dropped; the whole run is bounded by ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
# The bench measures the request path with the rate limiter in it, but never trips it.
NO_TRIP_LIMIT = "1000000000/minute"
SCENARIOS = ("orgplane_get_org", "bare_hello", "bare_get_org")


@dataclass
class WrkRun:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int


@dataclass
class Scenario:
    name: str
    url: str
    runs: list[WrkRun] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)

    def summary(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "requests_per_s": round(self.median("requests_per_s"), 1),
            "p50_ms": round(self.median("p50_ms"), 3),
            "p99_ms": round(self.median("p99_ms"), 3),
            "runs": [asdict(r) for r in self.runs],
        }


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def check(self, what: str) -> None:
        if time.monotonic() > self.end:
            raise TimeoutError(f"--max-seconds reached before {what}")


# ---------------------------------------------------------------------------------------------
# processes


class Processes:
    """Every server this run starts, each in its own process group, stopped on exit."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=BENCH_DIR,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append((name, proc, log))

    def stop_all(self) -> None:
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc, _ in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()

    def check_alive(self) -> None:
        for name, proc, log in self.procs:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def wait_ready(url: str, procs: Processes, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        procs.check_alive()
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def orgplane(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        [str(BIN / "orgplane"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"orgplane {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


# ---------------------------------------------------------------------------------------------
# data


def create_orgs(base: str, root: str, admin_key: str, total: int, deadline: Deadline) -> dict:
    """A root with ~sqrt(total) children, the rest spread as their children; a scoped key."""
    headers = {"Authorization": f"Bearer {admin_key}"}
    width = max(1, round((total - 1) ** 0.5))
    created = 1
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:

        def child(parent: str, i: int) -> str:
            body = {
                "name": f"org {i:07d}",
                "description": "created by bench/quick.py",
                "tags": [f"shard:{i % 16}", "bench:quick"],
            }
            response = client.post(f"/orgs/{parent}/children", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"create child: {response.status_code} {response.text}")
            return str(response.json()["id"])

        middles = []
        for _ in range(min(width, total - 1)):
            middles.append(child(root, created))
            created += 1
        i = 0
        while created < total:
            if created % 100 == 0:
                deadline.check("creating orgs")
            child(middles[i % len(middles)], created)
            created += 1
            i += 1
        # The measured read: a grandchild of the root, through a key scoped to its parent.
        scope_org = middles[len(middles) // 2]
        page = client.get(f"/orgs/{scope_org}/children", params={"limit": 1}).json()
        target = page["data"][0]["id"] if page["data"] else scope_org
        key = client.post(
            f"/orgs/{scope_org}/api_keys", json={"name": "bench", "scopes": ["orgs:read"]}
        )
        if key.status_code != 201:
            raise RuntimeError(f"create key: {key.status_code} {key.text}")
    return {"orgs": created, "target": target, "key_org": scope_org, "key": key.json()["api_key"]}


# ---------------------------------------------------------------------------------------------
# wrk

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkRun:
    def find(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, output, re.MULTILINE)
        if match:
            return match.group(1)
        if default is None:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{output}")
        return default

    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkRun(
        requests_per_s=float(find(r"^Requests/sec:\s+([\d.]+)")),
        p50_ms=_ms(find(r"^\s+50%\s+(\S+)")),
        p99_ms=_ms(find(r"^\s+99%\s+(\S+)")),
        requests=int(find(r"^\s+(\d+) requests in")),
        non_2xx=int(find(r"^\s+Non-2xx or 3xx responses: (\d+)", "0")),
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


def wrk(url: str, headers: dict[str, str], *, seconds: int, connections: int) -> WrkRun:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    done = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=seconds + 30, check=True
    )
    return parse_wrk(done.stdout)


# ---------------------------------------------------------------------------------------------
# one database


@contextmanager
def postgres_database(admin_dsn: str, name: str) -> Iterator[str]:
    """A scratch database, dropped afterwards (also when the run fails)."""
    import asyncpg

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        base = admin_dsn.rsplit("/", 1)[0]
        yield f"{base}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def fresh_install(label: str, database_url: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The environment for serving ``database_url`` (rate limits that never trip, no Redis),
    after migrating and bootstrapping it: (env, {"org_id", "api_key"})."""
    env = {
        **os.environ,
        "ORGPLANE_DATABASE_URL": database_url,
        "ORGPLANE_RATE_LIMIT_PER_KEY": NO_TRIP_LIMIT,
        "ORGPLANE_RATE_LIMIT_PER_ORG": NO_TRIP_LIMIT,
        "ORGPLANE_ENVIRONMENT": "development",
    }
    env.pop("ORGPLANE_REDIS_URL", None)
    print(f"[{label}] migrate + bootstrap", flush=True)
    orgplane(["migrate"], env)
    boot = json.loads(orgplane(["bootstrap", "--json"], env))
    if not boot.get("api_key"):
        raise RuntimeError(f"bootstrap did not run on a fresh database: {boot}")
    return env, boot


def write_report(
    kind: str,
    *,
    targets: dict[str, Any],
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    load_at_start: tuple[float, float, float],
    git_at_start: dict[str, Any],
    out: Path | None,
) -> Path:
    """Write the run's JSON report (machine, versions, git state, settings, results)."""
    report = {
        "kind": kind,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **targets,
        "machine": {
            "hostname": platform.node(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_at_start": load_at_start,
            "load_avg_at_end": os.getloadavg(),
        },
        "versions": versions(),
        "git": {"at_start": git_at_start, "at_end": git_state()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": results,
    }
    path = out or BENCH_DIR / "results" / f"{datetime.now(UTC):%Y-%m-%d}-{kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def measure(
    label: str,
    database_url: str,
    bare_database: str,
    args: argparse.Namespace,
    workdir: Path,
    deadline: Deadline,
) -> dict[str, Any]:
    env, boot = fresh_install(label, database_url)
    procs = Processes()
    op_base = f"http://{HOST}:{args.port}"
    bare_base = f"http://{HOST}:{args.bare_port}"
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
        wait_ready(f"{op_base}/healthz", procs)
        started = time.monotonic()
        print(f"[{label}] creating {args.orgs} orgs through the API", flush=True)
        data = create_orgs(op_base, boot["org_id"], boot["api_key"], args.orgs, deadline)
        data["create_seconds"] = round(time.monotonic() - started, 1)
        print(f"[{label}] {data['orgs']} orgs in {data['create_seconds']} s", flush=True)

        procs.start(
            "bare",
            [
                *(str(BIN / "granian"), "--interface", "asgi", "--host", HOST),
                *("--port", str(args.bare_port), "--workers", "1", "--loop", "uvloop"),
                *("--no-access-log", "bare_asgi:app"),
            ],
            {**env, "BARE_DATABASE": bare_database, "PYTHONPATH": str(BENCH_DIR)},
            workdir / f"{label}-bare.log",
        )
        wait_ready(f"{bare_base}/hello", procs)

        auth = {"Authorization": f"Bearer {data['key']}"}
        target = data["target"]
        scenarios = {
            "orgplane_get_org": (Scenario("orgplane_get_org", f"{op_base}/orgs/{target}"), auth),
            "bare_hello": (Scenario("bare_hello", f"{bare_base}/hello"), {}),
            "bare_get_org": (Scenario("bare_get_org", f"{bare_base}/orgs/{target}"), auth),
        }
        for scenario, headers in scenarios.values():
            response = httpx.get(scenario.url, headers=headers, timeout=5)
            if response.status_code != 200:
                raise RuntimeError(f"{scenario.url}: {response.status_code} {response.text}")
        # Same fields, same values: the ceiling does the same work.
        ours = httpx.get(scenarios["orgplane_get_org"][0].url, headers=auth).json()
        bare = httpx.get(scenarios["bare_get_org"][0].url, headers=auth).json()
        if ours["id"] != bare["id"] or ours["name"] != bare["name"]:
            raise RuntimeError(f"the two apps disagree: {ours} / {bare}")

        for scenario, headers in scenarios.values():
            deadline.check(f"warming up {scenario.name}")
            wrk(scenario.url, headers, seconds=args.warmup, connections=args.connections)
        for round_no in range(1, args.runs + 1):
            for scenario, headers in scenarios.values():
                deadline.check(f"{scenario.name} round {round_no}")
                procs.check_alive()
                run = wrk(
                    scenario.url, headers, seconds=args.duration, connections=args.connections
                )
                scenario.runs.append(run)
                print(
                    f"[{label}] round {round_no} {scenario.name:17} "
                    f"{run.requests_per_s:9.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                    f"p99 {run.p99_ms:6.2f} ms  non-2xx {run.non_2xx}",
                    flush=True,
                )
    finally:
        procs.stop_all()

    results = {name: s.summary() for name, (s, _) in scenarios.items()}
    rps = {name: r["requests_per_s"] for name, r in results.items()}
    return {
        "database": label,
        "orgs": data["orgs"],
        "create_orgs_seconds": data["create_seconds"],
        "scenarios": results,
        "ratios": {
            "orgplane_get_org / bare_hello": round(rps["orgplane_get_org"] / rps["bare_hello"], 3),
            "orgplane_get_org / bare_get_org": round(
                rps["orgplane_get_org"] / rps["bare_get_org"], 3
            ),
        },
    }


# ---------------------------------------------------------------------------------------------


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| database | scenario | requests/s | p50 ms | p99 ms | non-2xx |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        for name in SCENARIOS:
            s = result["scenarios"][name]
            bad = sum(r["non_2xx"] + r["socket_errors"] for r in s["runs"])
            lines.append(
                f"| {result['database']} | {name} | {s['requests_per_s']:,.0f} | "
                f"{s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {bad} |"
            )
    lines += [
        "",
        "| database | orgplane / bare hello | orgplane / bare org |",
        "| --- | ---: | ---: |",
    ]
    for result in results:
        r = result["ratios"]
        lines.append(
            f"| {result['database']} | {r['orgplane_get_org / bare_hello']:.1%} | "
            f"{r['orgplane_get_org / bare_get_org']:.1%} |"
        )
    return "\n".join(lines)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    dists = ("orgplane", "litestar", "msgspec", "sqlalchemy", "granian", "aiosqlite", "asyncpg")
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    out["wrk"] = (wrk_version.stdout or wrk_version.stderr).split("[")[0].strip()
    return out


def git_state() -> dict[str, Any]:
    """The commit measured, and the files that differed from it (figures of a dirty tree)."""

    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", *argv], cwd=BENCH_DIR.parent, capture_output=True, text=True, check=False
        )
        return done.stdout.rstrip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "modified": [line[3:] for line in git("status", "--porcelain", "src").splitlines()],
    }


def interrupt(signum: int, _frame: Any) -> None:
    """SIGTERM and SIGINT end a run through its finally blocks (servers stopped, data dropped)."""
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    # SIGTERM (and SIGINT, even when a non-interactive shell started us with it ignored) unwind
    # through the finally blocks, so servers are stopped and the scratch database dropped.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orgs", type=int, default=1000, help="orgs in the tree (default 1000)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per scenario")
    parser.add_argument("--runs", type=int, default=3, help="rounds; each figure is the median")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=8040, help="orgplane's port")
    parser.add_argument("--bare-port", type=int, default=8041, help="the bare app's port")
    parser.add_argument(
        "--postgres",
        nargs="?",
        const="postgresql://postgres@127.0.0.1:5432/postgres",
        default=None,
        metavar="ADMIN_DSN",
        help="also measure on PostgreSQL: a scratch database orgplane_bench is created through "
        "this DSN and dropped afterwards (default postgresql://postgres@127.0.0.1:5432/postgres)",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite measurement")
    parser.add_argument("--max-seconds", type=float, default=900, help="abort after this long")
    parser.add_argument("--out", type=Path, default=None, help="results file")
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    for port in (args.port, args.bare_port):
        if not port_free(port):
            print(f"port {port} on {HOST} is in use; pick another with --port/--bare-port")
            return 2
    deadline = Deadline(args.max_seconds)
    git_at_start = git_state()
    load_at_start = os.getloadavg()
    if load_at_start[0] > 0.5 * (os.cpu_count() or 1):
        print(
            f"warning: load average {load_at_start[0]:.1f} on {os.cpu_count()} cores; other "
            "work on this machine will lower and scatter every figure",
            flush=True,
        )
    results = []
    with tempfile.TemporaryDirectory(prefix="orgplane-bench-") as tmp:
        workdir = Path(tmp)
        if not args.no_sqlite:
            db = workdir / "bench.db"
            results.append(
                measure("sqlite", f"sqlite+aiosqlite:///{db}", str(db), args, workdir, deadline)
            )
        if args.postgres:
            with postgres_database(args.postgres, "orgplane_bench") as dsn:
                url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
                results.append(measure("postgresql", url, dsn, args, workdir, deadline))

    report = {
        "kind": "quick",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "hostname": platform.node(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_at_start": load_at_start,
            "load_avg_at_end": os.getloadavg(),
        },
        "versions": versions(),
        # Servers import the code when they start: a tree edited during the run shows here.
        "git": {"at_start": git_at_start, "at_end": git_state()},
        "settings": {
            "wrk": f"-t1 -c{args.connections} -d{args.duration}s --latency",
            "warmup_seconds": args.warmup,
            "runs": args.runs,
            "server": "granian, 1 worker, uvloop, on 127.0.0.1 (both apps)",
            "orgplane_env": {
                "ORGPLANE_RATE_LIMIT_PER_KEY": NO_TRIP_LIMIT,
                "ORGPLANE_RATE_LIMIT_PER_ORG": NO_TRIP_LIMIT,
                "everything else": "defaults",
            },
        },
        "results": results,
    }
    out = args.out or BENCH_DIR / "results" / f"{datetime.now(UTC):%Y-%m-%d}-quick.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\nwrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"\ninterrupted ({exc}); servers stopped, scratch data removed", file=sys.stderr)
        sys.exit(130)
