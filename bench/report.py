"""The suite's verdicts, tables, Markdown summary and chart, from its results dictionary.

Every target of issue 6 becomes one row: what was measured, the target, and ``met``,
``missed``, or ``not run`` with the reason. Throughput and latency of every wrk figure are
tabulated with the ratios of orgplane to the bare app (the ceiling) and to the FastAPI + ORM
reference, and drawn (matplotlib, Agg backend) as two panels: requests/s and p99 per figure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HELLO_SHARE = 0.30  # orgplane GET /orgs/{id} >= 30% of the bare hello
REFERENCE_FACTOR = 5.0  # >= 5x the FastAPI + ORM reference
CHILDREN_SHARE = 0.70  # children list >= 70% of the bare app doing the same
GET_P99_MS = 10.0
INGEST_EVENTS_PER_S = 50_000.0
ROLLUP_P99_MS = 50.0
ALLOCATIONS_PER_S = 500.0
SCALING = 1.2  # N workers / 1 worker: "throughput scales" on a 2-core machine shared with wrk
RSS_MIB = 200.0
CONSOLE_P99_MS = {"console_org": 50.0, "console_tree_level": 50.0}  # issue 13, 1 connection
CONSOLE_PAGES_PER_S = 500.0  # console_org at 32 connections, on SQLite
SCALE_P99_MS = {
    "children_page": 20.0,
    "audit_action": 50.0,
    "audit_window": 50.0,
    "children_audit": 50.0,
}


@dataclass
class Verdict:
    scenario: str
    database: str
    measured: str
    target: str
    verdict: str


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _figure(figures: list[dict[str, Any]], scenario: str, app: str, c: int | None = None) -> Any:
    for f in figures:
        same = f["scenario"] == scenario and f["app"] == app and f.get("runs")
        if same and (c is None or f["connections"] == c):
            return f
    return None


def _trouble(f: dict[str, Any]) -> str | None:
    """Why a figure cannot be taken at face value: runs with no answer, errors, timeouts."""
    if any(r["requests"] == 0 for r in f["runs"]):
        return "a run got no answer within wrk's 5 s timeout"
    if f["errors"]:
        return f"{f['errors']} errors or timeouts"
    return None


def _checked(text: str, ok: bool, *figures: dict[str, Any]) -> tuple[str, str]:
    """(measured text, verdict), both saying so when a figure had errors or timeouts."""
    troubles = [t for t in (_trouble(f) for f in figures) if t]
    if troubles:
        return f"{text} ({'; '.join(troubles)})", "MISSED"
    return text, _met(ok)


def _not_run(part: Any) -> str | None:
    if part is None:
        return "not run"
    if isinstance(part, dict) and "not_run" in part:
        return f"not run: {part['not_run']}"
    if isinstance(part, dict) and "error" in part:
        return f"not run: failed ({part['error'].splitlines()[-1][:120]})"
    return None


# ---------------------------------------------------------------------------------------------
# verdicts


def _ratio_verdicts(
    db: str, label: str, ours: Any, ceiling: Any, ref: Any, share_target: float, versus: str
) -> list[Verdict]:
    """orgplane's requests/s as a share of a bare figure, and as a multiple of the reference."""
    if not (ours and ceiling and ref):
        return []
    share = ours["requests_per_s"] / max(ceiling["requests_per_s"], 1e-9)
    factor = ours["requests_per_s"] / max(ref["requests_per_s"], 1e-9)
    text = f"{ours['requests_per_s']:,.0f} req/s = {share:.1%} of {ceiling['requests_per_s']:,.0f}"
    measured, verdict = _checked(text, share >= share_target, ours, ceiling)
    out = [Verdict(f"{label} vs {versus}", db, measured, f"≥ {share_target:.0%}", verdict)]
    text = f"{factor:.2f}x ({ref['requests_per_s']:,.0f} req/s)"
    measured, verdict = _checked(text, factor >= REFERENCE_FACTOR, ours, ref)
    out.append(Verdict(f"{label} vs FastAPI + ORM", db, measured, "≥ 5x", verdict))
    return out


def request_verdicts(db: str, part: Any, connections: int) -> list[Verdict]:
    reason = _not_run(part)
    if reason:
        return [
            Verdict(
                "GET /orgs/{id}", db, "-", "≥ 30% of hello, ≥ 5x reference, p99 ≤ 10 ms", reason
            ),
            Verdict("children?limit=100", db, "-", "≥ 70% of bare, ≥ 5x reference", reason),
        ]
    figures = part.get("figures", [])
    ours = _figure(figures, "get_org", "orgplane")
    out = _ratio_verdicts(
        db,
        "GET /orgs/{id}",
        ours,
        _figure(figures, "hello", "bare"),
        _figure(figures, "get_org", "reference"),
        HELLO_SHARE,
        "bare hello",
    )
    if ours:
        measured, verdict = _checked(f"{ours['p99_ms']:.1f} ms", ours["p99_ms"] <= GET_P99_MS, ours)
        out.append(
            Verdict(
                f"GET /orgs/{{id}} p99 at {connections} connections",
                db,
                measured,
                "≤ 10 ms",
                verdict,
            )
        )
    out += _ratio_verdicts(
        db,
        "children?limit=100",
        _figure(figures, "children", "orgplane"),
        _figure(figures, "children", "bare"),
        _figure(figures, "children", "reference"),
        CHILDREN_SHARE,
        "bare, same query",
    )
    return out


def worker_verdicts(db: str, part: Any) -> list[Verdict]:
    reason = _not_run(part)
    name = "N workers + Redis rate limits"
    if reason:
        return [Verdict(name, db, "-", "scales; limits hold across workers", reason)]
    n = part["workers"]
    out = []
    if part.get("scaling") is not None:
        measured, verdict = _checked(
            f"{part['scaling']:.2f}x", part["scaling"] >= SCALING, *part["figures"]
        )
        out.append(
            Verdict(
                f"GET /orgs/{{id}}, {n} workers vs 1 (Redis limits)",
                db,
                measured,
                f"scales (≥ {SCALING}x)",
                verdict,
            )
        )
    limits = part.get("limits")
    if limits:
        statuses = limits["statuses"]
        ok = limits["exactly_the_limit"] and limits["every_worker_served"]
        out.append(
            Verdict(
                f"per-key limit across {n} workers",
                db,
                f"{statuses.get('200', 0)} x 200 / {limits['requests']} for "
                f"{limits['limit_per_key']}; every worker served: "
                f"{'yes' if limits['every_worker_served'] else 'no'}",
                "exactly the limit",
                _met(ok),
            )
        )
    return out


def scale_verdicts(db: str, part: Any, scale: int, connections: int) -> list[Verdict]:
    at = f"at {scale:,} orgs"
    reason = _not_run(part)
    if reason:
        return [Verdict(f"children page / audit / RSS {at}", db, "-", "see targets", reason)]
    figures = part.get("figures", [])
    out = []
    for scenario, limit in SCALE_P99_MS.items():
        one = _figure(figures, scenario, "orgplane", 1)
        if one is None:
            continue
        many = _figure(figures, scenario, "orgplane", connections)
        text = f"{one['p99_ms']:.1f} ms (p50 {one['p50_ms']:.1f})"
        if many and connections != 1:
            text += f"; at c{connections} p99 {many['p99_ms']:.1f} ms"
        measured, verdict = _checked(text, one["p99_ms"] <= limit, one)
        out.append(
            Verdict(
                f"{scenario} {at} (p99, 1 connection)", db, measured, f"≤ {limit:.0f} ms", verdict
            )
        )
    rss = part.get("rss_after_load")
    if rss:
        out.append(
            Verdict(
                f"server RSS {at}",
                db,
                f"{rss['total_mib']:.0f} MiB",
                f"≤ {RSS_MIB:.0f} MB",
                _met(rss["total_mib"] <= RSS_MIB),
            )
        )
    return out + console_verdicts(db, part, at, connections)


def console_verdicts(db: str, part: dict[str, Any], at: str, connections: int) -> list[Verdict]:
    """The console's pages (issue 13): p99 at 1 connection for both figures (wrk's, which holds
    the server's time and the loopback; the server's own histogram is shown beside it); pages/s
    of the org page at ``connections`` on SQLite (PostgreSQL's is reported beside its p99)."""
    console = part.get("console")
    reason = _not_run(console)
    if reason:
        return [Verdict(f"console pages {at}", db, "-", "p99 ≤ 50 ms; ≥ 500 pages/s", reason)]
    figures = part.get("figures", [])
    out = []
    for scenario, limit in CONSOLE_P99_MS.items():
        one = _figure(figures, scenario, "orgplane", 1)
        if one is None:
            continue
        many = _figure(figures, scenario, "orgplane", connections)
        text = f"{one['p99_ms']:.1f} ms (p50 {one['p50_ms']:.1f}, {one['requests_per_s']:,.0f}/s)"
        if one.get("server_within_50ms") is not None:
            text += f"; server time: {one['server_within_50ms']:.1%} within 50 ms"
        if many and connections != 1:
            text += (
                f"; at c{connections} {many['requests_per_s']:,.0f} pages/s, "
                f"p99 {many['p99_ms']:.0f} ms"
            )
        measured, verdict = _checked(text, one["p99_ms"] <= limit, one, *([many] if many else []))
        out.append(
            Verdict(
                f"{scenario} {at} (p99, 1 connection)", db, measured, f"≤ {limit:.0f} ms", verdict
            )
        )
    many = _figure(figures, "console_org", "orgplane", connections)
    if many and db == "sqlite":
        measured, verdict = _checked(
            f"{many['requests_per_s']:,.0f} pages/s (p50 {many['p50_ms']:.0f} ms)",
            many["requests_per_s"] >= CONSOLE_PAGES_PER_S,
            many,
        )
        out.append(
            Verdict(
                f"console_org {at} ({connections} connections)",
                db,
                measured,
                f"≥ {CONSOLE_PAGES_PER_S:.0f} pages/s",
                verdict,
            )
        )
    rss = console.get("rss_after_console")
    if rss:
        out.append(
            Verdict(
                f"server RSS {at}, after the console's pages too",
                db,
                f"{rss['total_mib']:.0f} MiB",
                f"≤ {RSS_MIB:.0f} MB",
                _met(rss["total_mib"] <= RSS_MIB),
            )
        )
    return out


def ingest_verdicts(part: Any) -> list[Verdict]:
    name = "POST /orgs/{id}/usage, batches of 1,000"
    reason = _not_run(part)
    if reason:
        return [Verdict(name, "postgresql", "-", "≥ 50,000 events/s, exactly once", reason)]
    rate = part.get("events_per_s")
    measured = f"{rate:,.0f} events/s" if rate else "no figure"
    measured += f"; exactly once: {'yes' if part['exactly_once'] else 'NO'}"
    ok = bool(rate and rate >= INGEST_EVENTS_PER_S and part["exactly_once"])
    return [Verdict(name, "postgresql", measured, "≥ 50,000 events/s, exactly once", _met(ok))]


def rollup_verdicts(part: Any) -> list[Verdict]:
    reason = _not_run(part)
    if reason or not part.get("databases"):
        why = reason or f"not run: rollup.py exited {part.get('exit')}"
        return [Verdict("subtree consumption roll-up", "-", "-", "p99 ≤ 50 ms", why)]
    out = []
    for db, r in part["databases"].items():
        sub = r.get("subtree", {})
        out.append(
            Verdict(
                f"subtree roll-up over {r['descendants']:,} descendants",
                db,
                f"p99 {sub.get('p99_ms', float('nan')):.1f} ms (p50 {sub.get('p50_ms', 0):.1f})",
                "p99 ≤ 50 ms",
                _met(sub.get("p99_ms", 1e9) <= ROLLUP_P99_MS),
            )
        )
    return out


def allocation_verdicts(part: Any) -> list[Verdict]:
    name = "64 concurrent allocators on one parent"
    reason = _not_run(part)
    if reason or "allocations_per_s" not in part:
        why = reason or f"not run: allocations.py exited {part.get('exit')}"
        return [Verdict(name, "postgresql", "-", "≥ 500/s, ledger verifies", why)]
    verified = part["ledger_verified"] and part["pools_add_up"] and part["ledger_rows_match"]
    measured = (
        f"{part['allocations_per_s']:,.0f}/s (p99 {part['p99_ms']:,.0f} ms); "
        f"ledger verifies: {'yes' if verified else 'NO'}"
    )
    ok = part["allocations_per_s"] >= ALLOCATIONS_PER_S and verified
    return [Verdict(name, "postgresql", measured, "≥ 500/s, ledger verifies", _met(ok))]


def verdicts(results: dict[str, Any]) -> list[Verdict]:
    out: list[Verdict] = []
    for db, parts in results["databases"].items():
        if "get_org" in results["only"] or "children" in results["only"]:
            out += request_verdicts(db, parts.get("requests"), results["connections"])
        if "workers" in results["only"]:
            requests = parts.get("requests") or {}
            out += worker_verdicts(db, requests.get("workers") or _not_run_part(requests))
    for db, parts in results["databases"].items():
        if "scale" in results["only"]:
            out += scale_verdicts(db, parts.get("scale"), results["scale"], results["connections"])
    if "ingest" in results["only"]:
        out += ingest_verdicts(results.get("ingest"))
    if "rollup" in results["only"]:
        out += rollup_verdicts(results.get("rollup"))
    if "allocations" in results["only"]:
        out += allocation_verdicts(results.get("allocations"))
    return out


def _not_run_part(requests: dict[str, Any]) -> dict[str, Any]:
    reason = _not_run(requests) or "not run"
    return {"not_run": reason.removeprefix("not run: ")}


# ---------------------------------------------------------------------------------------------
# tables


def verdict_table(rows: list[Verdict]) -> str:
    lines = [
        "| scenario | database | measured | target | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {v.scenario} | {v.database} | {v.measured} | {v.target} | {v.verdict} |" for v in rows
    ]
    return "\n".join(lines)


def _ratios(f: dict[str, Any], figures: list[dict[str, Any]]) -> tuple[str, str]:
    """orgplane's requests/s over the bare app's (hello; the same work) and the reference's."""
    if f["app"] != "orgplane" or f["scenario"] not in ("get_org", "children"):
        return "", ""
    rps = f["requests_per_s"]
    hello = _figure(figures, "hello", "bare")
    same = _figure(figures, f["scenario"], "bare")
    ref = _figure(figures, f["scenario"], "reference")
    bare = []
    if hello:
        bare.append(f"{rps / hello['requests_per_s']:.1%} of hello")
    if same:
        bare.append(f"{rps / same['requests_per_s']:.1%} of same work")
    return ", ".join(bare), f"{rps / ref['requests_per_s']:.2f}x" if ref else ""


def figures_table(results: dict[str, Any]) -> str:
    lines = [
        "| database | scenario | app | conns | requests/s | p50 ms | p99 ms | errors | vs bare "
        "| vs reference |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for db, figures in all_figures(results).items():
        for f in figures:
            if not f.get("runs"):
                continue
            bare, ref = _ratios(f, figures)
            lines.append(
                f"| {db} | {f['scenario']} | {f['app']} | {f['connections']} | "
                f"{f['requests_per_s']:,.0f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | "
                f"{f['errors']} | {bare} | {ref} |"
            )
    return "\n".join(lines)


def all_figures(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for db, parts in results["databases"].items():
        figures: list[dict[str, Any]] = []
        requests = parts.get("requests") or {}
        figures += requests.get("figures", [])
        figures += (requests.get("workers") or {}).get("figures", [])
        figures += (parts.get("scale") or {}).get("figures", [])
        out[db] = figures
    return out


def timings_table(timings: dict[str, float]) -> str:
    lines = ["| part | seconds |", "| --- | ---: |"]
    lines += [f"| {name} | {seconds:,.0f} |" for name, seconds in timings.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Markdown and chart


def markdown(report: dict[str, Any], rows: list[Verdict], chart_name: str | None) -> str:
    results, machine, settings = report["results"], report["machine"], report["settings"]
    git = report["git"]["at_start"]
    dirty = f", {len(git['modified'])} files of src/ modified" if git["modified"] else ""
    parts = [
        f"# orgplane benchmark suite, {report['date']}",
        "",
        f"Machine `{machine['hostname']}`: {machine['cpus']} cores, {machine['platform']}; load "
        f"average {machine['load_avg_at_start'][0]:.2f} at the start, "
        f"{machine['load_avg_at_end'][0]:.2f} at the end. Commit `{git['commit'][:10]}`{dirty}. "
        f"wrk `{settings['wrk']}` after a {settings['warmup_seconds']} s warm-up, "
        f"{settings['runs']} run(s) per figure, the median; servers: {settings['server']}. "
        f"Total {report['total_seconds'] / 60:.1f} minutes.",
        "",
        "## Targets",
        "",
        verdict_table(rows),
        "",
        "## Every figure",
        "",
        figures_table(results),
        "",
    ]
    if chart_name:
        parts += [f"![throughput and p99 per scenario]({chart_name})", ""]
    parts += ["## Data sets", "", data_table(results), "", "## Time per part", ""]
    parts += [timings_table(report["timings"]), ""]
    notes = report.get("notes") or []
    if notes:
        parts += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    parts += [f"Raw data: `{report['json_name']}`.", ""]
    return "\n".join(parts)


def data_table(results: dict[str, Any]) -> str:
    lines = [
        "| database | data set | orgs | audit entries | loader s |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for db, parts in results["databases"].items():
        for name in ("requests", "scale"):
            data = (parts.get(name) or {}).get("data")
            if data:
                rows = data["rows"]
                lines.append(
                    f"| {db} | {name} | {rows.get('orgs', 0) + 1:,} | "
                    f"{rows.get('audit_log', 0):,} | {data['load_total_seconds']:,.1f} |"
                )
    return "\n".join(lines)


COLORS = {"orgplane": "#3465a4", "bare": "#8ae234", "reference": "#f57900"}


def chart(results: dict[str, Any], path: Path) -> bool:
    """Two panels, requests/s and p99 (log scales), one bar per figure; False if none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [
        (db, f) for db, figures in all_figures(results).items() for f in figures if f.get("runs")
    ]
    if not bars:
        return False
    labels = [f"{db} {f['scenario']} {f['app']} c{f['connections']}" for db, f in bars]
    colors = [COLORS.get(f["app"], "grey") for _, f in bars]
    height = max(4.0, 0.28 * len(bars) + 1.5)
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, height), sharey=True)
    positions = list(range(len(bars)))
    left.barh(positions, [f["requests_per_s"] for _, f in bars], color=colors)
    left.set_xscale("log")
    left.set_xlabel("requests/s (median run, log scale)")
    right.barh(positions, [max(f["p99_ms"], 0.01) for _, f in bars], color=colors)
    right.set_xscale("log")
    right.set_xlabel("p99 latency, ms (log scale)")
    left.set_yticks(positions, labels, fontsize=8)
    left.invert_yaxis()
    for axis in (left, right):
        axis.grid(axis="x", which="both", alpha=0.3)
    fig.suptitle("orgplane (blue), bare ASGI ceiling (green), FastAPI + ORM reference (orange)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def as_dicts(rows: list[Verdict]) -> list[dict[str, str]]:
    return [asdict(v) for v in rows]
