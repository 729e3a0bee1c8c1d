"""The console figures of the scale scenario: server-rendered pages at 1,000,000 orgs.

After the API figures of ``bench/scale.py`` on the same server and database:

* the root's first owner (``orgplane bootstrap --json`` invites ``admin@example.com`` and prints
  the invitation's ``console_link``) accepts the invitation through the console's form and signs
  in through ``POST /console/sign-in``, each form posted with the CSRF token of its page, as a
  browser does; the figures send the session cookie and the CSRF cookie a browser holds;
* limits are given through the API (``PUT /orgs/{root}/limits/operations``, then allocations
  root -> region -> wide org -> each child the measured pages list), so that every child those
  pages list has a utilization bar to draw. This writes audit entries under the first region,
  which is why the console figures are measured after the API figures, not in their rounds;
* every URL measured is fetched once first and must answer 200 with the page's content: the
  org's name in its ``<h1>``, signed in (the sign-out form), and for the wide org and the tree
  levels the 50 children the API lists at the same place, each with a bar; a redirect to the
  sign-in page fails the run here, and during the load wrk counts any 3xx as an error;
* the figures, with wrk at 1 connection (the latency target) and at 32 (throughput), each
  rotating over its URLs through a generated Lua script:

  - ``console_org``: ``GET /console/orgs/{id}`` over orgs of the main tenant: the root, two
    regions, the wide org, a project and the deepest orgs (the trail of 9 ancestors);
  - ``console_tree_level``: ``GET /console/orgs/{wide}/children?cursor=...``, the fragment the
    tree loads when a level is opened: the first page and 100 cursors through the listing;

* each run also reads the server's own latency histogram of the figure's route from orgplane's
  ``/metrics`` before and after (the issue's target is server time): the share of the run's
  requests served within 50 ms, beside wrk's p99;
* afterwards, the same samples again (the session held through the load), and the server's RSS.
"""

from __future__ import annotations

import html
import os
import re
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from harness import Figure, Servers, api, group_rss
from scenarios import measure_figures

PAGE = 50  # children a console page lists (orgplane.console.orgs.CHILDREN_PAGE)
METER = "operations"
STEP = 10_000  # the meter's step: every amount a multiple of it
CSRF_COOKIE = "orgplane_csrf"
SESSION_COOKIE = "orgplane_session"
OWNER = "admin@example.com"
# The routes as orgplane's /metrics labels them: the server's own latency of each figure.
ORG_ROUTE = "/console/orgs/{org_id}"
LEVEL_ROUTE = "/console/orgs/{org_id}/children"
_CSRF_INPUT = re.compile(r'name="_csrf_token" value="([^"]+)"')


def _form(client: httpx.Client, path: str, fields: dict[str, str]) -> httpx.Response:
    """GET the page at ``path``, then POST its form with the CSRF token of its hidden input (the
    cookie came with the page)."""
    page = client.get(path)
    if page.status_code != 200:
        raise RuntimeError(f"GET {path}: {page.status_code} {page.text[:300]}")
    found = _CSRF_INPUT.search(page.text)
    if not found or CSRF_COOKIE not in client.cookies:
        raise RuntimeError(f"GET {path}: no CSRF token in the page or no {CSRF_COOKIE} cookie")
    return client.post(path, data={**fields, "_csrf_token": html.unescape(found.group(1))})


def sign_in(base: str, boot: dict[str, Any]) -> dict[str, str]:
    """The bootstrap's first owner accepts the invitation and signs in through the console's
    forms; returns the cookies a browser then sends with every console page."""
    link = boot.get("console_link")
    if not link or boot.get("owner_email") != OWNER:
        raise RuntimeError(f"bootstrap --json gave no console invitation for {OWNER}: {boot}")
    password = secrets.token_urlsafe(18)
    with httpx.Client(base_url=base, timeout=30) as client:
        accepted = _form(client, urlsplit(link).path, {"password": password})
        if accepted.status_code != 303 or "/console/sign-in" not in accepted.headers["location"]:
            raise RuntimeError(f"accepting the invitation: {accepted.status_code} {accepted.text}")
        signed = _form(
            client, "/console/sign-in", {"email": OWNER, "password": password, "next": "/console"}
        )
        session = signed.cookies.get(SESSION_COOKIE)
        if signed.status_code != 303 or not session:
            raise RuntimeError(f"signing in: {signed.status_code} {signed.text[:500]}")
        return {SESSION_COOKIE: session, CSRF_COOKIE: str(client.cookies[CSRF_COOKIE])}


def cookie_header(cookies: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


# ---------------------------------------------------------------------------------------------
# what the pages show


def give_limits(base: str, admin_key: str, targets: dict[str, Any], children: list[str]) -> int:
    """A limit of ``operations`` for the root, allocated down to the wide org and from it to each
    of ``children`` (1 to 20 steps each, so that the bars differ). Returns the allocations."""
    root, region, wide = targets["root"], targets["region"], targets["wide"]
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        api(client, "PUT", f"/orgs/{root}/limits/{METER}", 200, json={"amount": 10**12})
        chain = [(root, region, 10**11), (region, wide, 10**10)]
        chain += [(wide, child, STEP * (1 + n % 20)) for n, child in enumerate(children)]
        for parent, child, amount in chain:
            api(
                client,
                "PUT",
                f"/orgs/{parent}/children/{child}/allocations/{METER}",
                200,
                json={"amount": amount},
            )
    return len(chain)


def console_orgs(client: httpx.Client, targets: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The orgs of the org-page rotation, read through the API: id -> the org."""
    ids = [targets["root"], *targets["regions"][:2], targets["wide"], targets["read"]]
    ids += [targets["deep"], *targets.get("deep_orgs", [])]
    out: dict[str, dict[str, Any]] = {}
    for org_id in dict.fromkeys(ids):
        response = client.get(f"/orgs/{org_id}")
        response.raise_for_status()
        out[org_id] = response.json()
    return out


def listed(client: httpx.Client, wide: str, cursor: str | None) -> list[dict[str, Any]]:
    """The wide org's children a console page shows after ``cursor``, as the API lists them."""
    params = {"limit": str(PAGE), **({"cursor": cursor} if cursor else {})}
    response = client.get(f"/orgs/{wide}/children", params=params)
    response.raise_for_status()
    return list(response.json()["data"])


def check_page(
    client: httpx.Client,
    path: str,
    headers: dict[str, str],
    *,
    title: str | None,
    children: list[dict[str, Any]] | None,
    bars: int | None,
) -> dict[str, Any]:
    """``path`` answers 200 with the page itself, not a redirect to the sign-in page: the org's
    name as its title, the sign-out form, and the children the API lists at the same place (in
    order; with ``bars`` utilization bars)."""
    response = client.get(path, headers=headers)
    body = response.text
    trouble = []
    if response.status_code != 200:
        where = response.headers.get("location")
        trouble.append(f"status {response.status_code}" + (f", to {where}" if where else ""))
    elif not response.headers.get("content-type", "").startswith("text/html"):
        trouble.append(f"content-type {response.headers.get('content-type')}")
    if title is not None and f"<h1>{html.escape(title)}</h1>" not in body:
        trouble.append(f"no <h1>{title}</h1>")
    if title is not None and 'action="/console/sign-out"' not in body:
        trouble.append("not signed in (no sign-out form)")
    # Each child is linked from its name (and, in a tree level, from "Its children" too).
    shown = list(dict.fromkeys(re.findall(r'<a href="/console/orgs/([^"/?]+)">', body)))
    if children is not None:
        expected = [c["id"] for c in children]
        in_order = [o for o in shown if o in set(expected)]
        if in_order != expected:
            trouble.append(f"children shown {len(in_order)} of {len(expected)}, or not in order")
    drawn = body.count('class="meter-bar"')
    if bars is not None and drawn != bars:
        trouble.append(f"{drawn} utilization bars, {bars} expected")
    if trouble:
        raise RuntimeError(f"GET {path}: {'; '.join(trouble)}\n{body[:600]}")
    return {"path": path, "bytes": len(response.content), "bars": drawn}


# ---------------------------------------------------------------------------------------------
# the figures


def run_console(
    ctx: Any,
    label: str,
    base: str,
    boot: dict[str, Any],
    api_headers: dict[str, str],
    targets: dict[str, Any],
    cursors: list[str],
    servers: Servers,
    server_name: str,
) -> dict[str, Any]:
    """Sign in, give the listed children limits, check every URL, measure both figures at 1 and
    at ``ctx.connections`` connections. The tree levels are the first page of the wide org's
    children and one after each of ``cursors`` (keyset cursors of that listing: the console's
    and the API's are the same)."""
    wide = targets["wide"]
    out: dict[str, Any] = {"load_avg_before": os.getloadavg()}
    started = time.monotonic()
    cookies = sign_in(base, boot)
    browser = cookie_header(cookies)
    out["signed_in_seconds"] = round(time.monotonic() - started, 1)
    ctx.say(f"[{label}] console: {OWNER} accepted the invitation and signed in")
    levels: list[str | None] = [None, *cursors]
    with httpx.Client(base_url=base, headers=api_headers, timeout=60) as client:
        orgs = console_orgs(client, targets)
        pages = {cursor: listed(client, wide, cursor) for cursor in levels}
    children = list(dict.fromkeys(c["id"] for page in pages.values() for c in page))
    started = time.monotonic()
    out["allocations"] = give_limits(base, boot["api_key"], targets, children)
    out["allocation_seconds"] = round(time.monotonic() - started, 1)
    ctx.say(
        f"[{label}] console: {out['allocations']:,} allocations so that the {len(children):,} "
        f"children listed have a utilization bar ({out['allocation_seconds']} s)"
    )
    org_paths = [f"/console/orgs/{o}" for o in orgs]
    level_paths = [f"/console/orgs/{wide}/children" + (f"?cursor={c}" if c else "") for c in levels]
    samples: list[dict[str, Any]] = []
    with httpx.Client(base_url=base, timeout=60) as client:

        def check_all() -> list[dict[str, Any]]:
            checked = [
                check_page(
                    client,
                    f"/console/orgs/{o}",
                    browser,
                    title=org["name"],
                    children=pages[None] if o == wide else None,
                    bars=len(pages[None]) if o == wide else None,
                )
                for o, org in orgs.items()
            ]
            checked += [
                check_page(client, path, browser, title=None, children=pages[c], bars=len(pages[c]))
                for path, c in zip(level_paths, levels, strict=True)
            ]
            return checked

        samples = check_all()
        out["checked_before"] = len(samples)
        ctx.say(
            f"[{label}] console: {len(samples)} pages answer 200 with their content "
            f"(the wide org's page {samples[list(orgs).index(wide)]['bytes']:,} bytes)"
        )
        figures = [
            Figure(
                name,
                "orgplane",
                label,
                base + paths[0],
                browser,
                paths,
                connections=c,
                route=route,
            )
            for c in (1, ctx.connections)
            for name, paths, route in (
                ("console_org", org_paths, ORG_ROUTE),
                ("console_tree_level", level_paths, LEVEL_ROUTE),
            )
        ]
        measure_started = time.monotonic()
        measure_figures(ctx, figures, servers)
        out["measure_seconds"] = round(time.monotonic() - measure_started, 1)
        out["checked_after"] = len(check_all())
    out["load_avg_after"] = os.getloadavg()
    out["rss_after_console"] = group_rss(servers.pid(server_name))
    out["orgs"] = {o: {"name": org["name"], "depth": org.get("depth")} for o, org in orgs.items()}
    out["pages"] = {
        "console_org": len(org_paths),
        "console_tree_level": len(level_paths),
        "bytes": {s["path"]: s["bytes"] for s in samples},
    }
    out["figures"] = [f.summary() for f in figures]
    ctx.say(
        f"[{label}] console: the session held through the load; server RSS "
        f"{out['rss_after_console']['total_mib']} MiB"
    )
    return out
