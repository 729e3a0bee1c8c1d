"""What the suite's scenarios share: servers, wrk figures measured in rounds, /proc readings.

A *figure* is one URL (or a rotation of URLs, through a generated wrk Lua script) loaded by
``wrk -t1 -c<connections> -d<duration>s --latency`` after a warm-up; it is measured ``runs``
times, in rounds over every figure of a scenario (so that a burst of load from elsewhere lowers
all of them, not one), and reported as the median run: requests/s, p50, p99, errors.

Servers are started the way a user starts them (``orgplane serve ... --server granian``; the bare
and reference apps under the granian command line, 1 worker, uvloop), each in its own process
group, through ``quick.py``'s ``Processes``, which stops them all in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from quick import BENCH_DIR, BIN, HOST, Deadline, Processes, WrkRun, parse_wrk, wait_ready

Say = Callable[[str], None]
DRAIN_MAX_SECONDS = 120.0
DRAINED_PROBE_SECONDS = 0.25


# ---------------------------------------------------------------------------------------------
# servers


class Servers(Processes):
    """``Processes`` that can also stop one server by name, and find its process group."""

    def pid(self, name: str) -> int:
        for known, proc, _ in self.procs:
            if known == name:
                return proc.pid
        raise KeyError(name)

    def stop(self, name: str) -> None:
        for index, (known, proc, _) in enumerate(self.procs):
            if known != name:
                continue
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
            del self.procs[index]
            return


def serve_orgplane(
    servers: Servers, name: str, env: dict[str, str], port: int, workers: int, log: Path
) -> str:
    """``orgplane serve`` on 127.0.0.1; returns its base URL once /healthz answers."""
    servers.start(
        name,
        [
            *(str(BIN / "orgplane"), "serve", "--host", HOST, "--port", str(port)),
            *("--workers", str(workers), "--server", "granian"),
        ],
        env,
        log,
    )
    base = f"http://{HOST}:{port}"
    wait_ready(f"{base}/healthz", servers, timeout=60)
    return base


def serve_module(
    servers: Servers, name: str, target: str, env: dict[str, str], port: int, log: Path
) -> str:
    """An ASGI app of bench/ (``bare_asgi:app``, ``reference_app:app``) under granian."""
    servers.start(
        name,
        [
            *(str(BIN / "granian"), "--interface", "asgi", "--host", HOST),
            *("--port", str(port), "--workers", "1", "--loop", "uvloop"),
            *("--no-access-log", target),
        ],
        {**env, "PYTHONPATH": str(BENCH_DIR)},
        log,
    )
    base = f"http://{HOST}:{port}"
    wait_ready(f"{base}/openapi.json" if "reference" in target else f"{base}/hello", servers)
    return base


def api(client: httpx.Client, method: str, path: str, expect: int, **kwargs: Any) -> Any:
    response = client.request(method, path, **kwargs)
    if response.status_code != expect:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
    return response.json()


def create_key(base: str, admin_key: str, org: str, scopes: list[str], name: str) -> str:
    """A new API key of ``org``, created through orgplane's API; returns the secret."""
    with httpx.Client(base_url=base, timeout=30) as client:
        created = api(
            client,
            "POST",
            f"/orgs/{org}/api_keys",
            201,
            json={"name": name, "scopes": scopes},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
    return str(created["api_key"])


# ---------------------------------------------------------------------------------------------
# /proc


def group_members(pgid: int) -> list[int]:
    """Pids of the processes in a process group (the server and its workers)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            members.append(int(entry.name))
    return sorted(members)


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def group_rss(pgid: int) -> dict[str, Any]:
    """VmRSS of every process of the group and their sum, in MiB."""
    per_process = {pid: rss_kib(pid) for pid in group_members(pgid)}
    return {
        "total_mib": round(sum(per_process.values()) / 1024, 1),
        "processes_mib": {str(p): round(k / 1024, 1) for p, k in per_process.items()},
    }


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """utime + stime of each pid, in clock ticks."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = int(fields[11]) + int(fields[12])
    return out


# ---------------------------------------------------------------------------------------------
# figures


LUA_ROTATION = """-- Generated by bench/harness.py: each request the next path of the list.
local paths = {%s}
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
"""


# Labels hold braces themselves (route="/orgs/{org_id}"): the value follows the last "} ".
_BUCKET = re.compile(r"^orgplane_request_duration_seconds_bucket\{(.*)\} (\S+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def server_histogram(base: str, route: str) -> dict[float, float]:
    """The server's own latency histogram of ``GET route`` (orgplane's /metrics: the time from
    the request reaching the app to its last byte sent), cumulative counts by upper bound."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    out: dict[float, float] = {}
    for labels, value in _BUCKET.findall(text):
        found = dict(_LABEL.findall(labels))
        if found.get("route") == route and found.get("method") == "GET":
            out[float(found["le"])] = float(value)
    return out


def server_times(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """What the server timed between two readings: requests, the share within each bound, and
    the smallest bound holding 99% of them (the p99 rounded up to the histogram's buckets)."""
    delta = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in sorted(after)}
    total = delta.get(float("inf"), 0.0)
    if not total:
        return {"requests": 0}
    within = {le: n / total for le, n in delta.items()}
    p99 = next((le for le, share in within.items() if share >= 0.99), float("inf"))
    return {
        "requests": int(total),
        "within_50ms": round(within.get(0.05, 0.0), 5),
        "p99_at_most_ms": None if p99 == float("inf") else round(p99 * 1000, 1),
        "share_within_ms": {
            str(round(le * 1000, 1)): round(share, 5)
            for le, share in within.items()
            if le != float("inf")
        },
    }


@dataclass
class Figure:
    """One thing measured: an app, a scenario, a database, and its runs. With ``route`` (an
    orgplane route template, as /metrics labels it), each run also reads the server's own
    latency histogram of that route before and after (``server``: one entry per run)."""

    scenario: str
    app: str  # orgplane, bare, reference
    database: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)  # a rotation of paths instead of one
    connections: int = 32
    runs: list[WrkRun] = field(default_factory=list)
    route: str | None = None
    server: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.database}/{self.scenario}/{self.app}@c{self.connections}"

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.runs))

    def summary(self) -> dict[str, Any]:
        if not self.runs:
            return {"scenario": self.scenario, "app": self.app, "runs": []}
        server = {}
        if self.server:
            measured = [s for s in self.server if s.get("requests")]
            server = {
                "server_within_50ms": statistics.median(s["within_50ms"] for s in measured)
                if measured
                else None,
                "server_p99_at_most_ms": [s.get("p99_at_most_ms") for s in self.server],
                "server_runs": self.server,
            }
        return {
            **server,
            "scenario": self.scenario,
            "app": self.app,
            "database": self.database,
            "connections": self.connections,
            "url": self.url,
            "rotation": len(self.paths) or None,
            "requests_per_s": round(self.median("requests_per_s"), 1),
            "p50_ms": round(self.median("p50_ms"), 3),
            "p99_ms": round(self.median("p99_ms"), 3),
            "errors": sum(r.non_2xx + r.socket_errors for r in self.runs),
            "runs": [asdict(r) for r in self.runs],
        }


@dataclass(frozen=True)
class Load:
    """How every figure is loaded: wrk duration, warm-up and number of runs."""

    duration: int
    warmup: int
    runs: int


def wrk_figure(figure: Figure, seconds: int, workdir: Path) -> WrkRun:
    argv = ["wrk", "-t1", f"-c{figure.connections}", f"-d{seconds}s", "--latency"]
    argv += ["--timeout", "5s"]
    for name, value in figure.headers.items():
        argv += ["-H", f"{name}: {value}"]
    script = None
    if figure.paths:
        with tempfile.NamedTemporaryFile(
            "w", suffix=".lua", dir=workdir, delete=False, encoding="utf-8"
        ) as out:
            out.write(LUA_ROTATION % ", ".join(f'"{p}"' for p in figure.paths))
            script = out.name
        argv += ["-s", script]
    try:
        done = subprocess.run(
            [*argv, figure.url],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=True,
        )
    finally:
        if script:
            os.unlink(script)
    return parse_wrk(done.stdout)


def drain(figure: Figure, run: WrkRun) -> None:
    """Let the requests wrk left in flight finish before the next run starts: the server keeps
    serving them after wrk has gone, and a backlog of slow requests (on SQLite orgplane's reads
    run on the event loop) would land in the next figure's first requests. For orgplane, poll
    ``/readyz`` (a database read, queued behind the backlog) until it answers within 250 ms; for
    the other apps, whose requests are fast, wait the run's p99."""
    if figure.app != "orgplane":
        time.sleep(min(DRAIN_MAX_SECONDS, run.p99_ms / 1000))
        return
    parts = urlsplit(figure.url)
    probe = f"{parts.scheme}://{parts.netloc}/readyz"
    end = time.monotonic() + DRAIN_MAX_SECONDS
    while time.monotonic() < end:
        started = time.monotonic()
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(probe, timeout=max(1.0, end - started))
        if time.monotonic() - started < DRAINED_PROBE_SECONDS:
            return


def measure(
    figures: list[Figure],
    load: Load,
    *,
    servers: Servers,
    deadline: Deadline,
    workdir: Path,
    say: Say,
) -> None:
    """Warm every figure up, then ``load.runs`` rounds over all of them."""
    for figure in figures:
        deadline.check(f"warming up {figure.name}")
        drain(figure, wrk_figure(figure, load.warmup, workdir))
    for round_no in range(1, load.runs + 1):
        for figure in figures:
            deadline.check(f"{figure.name}, round {round_no}")
            servers.check_alive()
            base = "{0.scheme}://{0.netloc}".format(urlsplit(figure.url))
            before = server_histogram(base, figure.route) if figure.route else {}
            run = wrk_figure(figure, load.duration, workdir)
            drain(figure, run)
            figure.runs.append(run)
            if figure.route:
                figure.server.append(server_times(before, server_histogram(base, figure.route)))
            bad = run.non_2xx + run.socket_errors
            say(
                f"  round {round_no} {figure.scenario:>16} {figure.app:<9} c{figure.connections:<3}"
                f"{run.requests_per_s:9,.0f} req/s  p50 {run.p50_ms:7.2f} ms  "
                f"p99 {run.p99_ms:7.2f} ms" + (f"  ERRORS {bad}" if bad else "")
            )
