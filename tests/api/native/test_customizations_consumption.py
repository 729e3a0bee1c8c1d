"""Customizations (GET/PUT/PATCH, the published JSON Schema) and monthly consumption reports."""

from __future__ import annotations

import calendar
import json
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from orgplane.core.customizations import service as customizations_service
from orgplane.models import meters, org_limits, orgs, usage_daily, usage_subtree_daily
from orgplane.models.base import utcnow

VALID = {
    "branding": {
        "display_name": "Acme Corp",
        "logo_url": "https://cdn.acme.example/logo.png",
        "primary_color": "#1A2b3C",
        "theme": "dark",
    },
    "login": {"subdomain": "acme", "sso_required": True},
    "support": {"email": "help@acme.example", "url": "http://help.acme.example/"},
    "locale": "en-GB",
    "features": {"beta.search": True, "exports": False},
    "metadata": {"crm_id": "A-17", "seats": 40},
}


def _cust(org_id: str) -> str:
    return f"/orgs/{org_id}/customizations"


async def _audit(h: Any, org_id: str) -> list[dict[str, Any]]:
    response = await h.client.get(f"/orgs/{org_id}/audit", headers=h.auth())
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["data"]
    return entries


# --- customizations ----------------------------------------------------------------------------


async def test_customizations_start_empty_with_an_etag(h):
    org = await h.create_org(h.root.org_id, "Acme")
    response = await h.client.get(_cust(org["id"]), headers=h.auth())
    assert response.status_code == 200
    assert response.json() == {}
    assert response.headers["etag"] == f'"{org["uuid"]}.{org["version"]}"'


async def test_put_replaces_the_document_and_audits_it(h):
    org = await h.create_org(h.root.org_id, "Acme")
    before = await h.client.get(_cust(org["id"]), headers=h.auth())

    response = await h.client.put(
        _cust(org["id"]), json=VALID, headers={**h.auth(), "X-Request-Id": "put-cust-1"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == VALID
    assert response.headers["etag"] != before.headers["etag"]

    stored = await h.client.get(_cust(org["id"]), headers=h.auth())
    assert stored.json() == VALID
    assert stored.headers["etag"] == response.headers["etag"]
    whole = await h.client.get(f"/orgs/{org['id']}", headers=h.auth())
    assert whole.json()["customizations"] == VALID
    assert whole.json()["version"] == org["version"] + 1

    entry = (await _audit(h, org["id"]))[0]
    assert entry["action"] == "org.updated"
    assert entry["target_id"] == org["id"]
    assert entry["before"] == {"customizations": {}}
    assert entry["after"] == {"customizations": VALID}
    assert entry["request_id"] == "put-cust-1"

    # A second PUT replaces rather than merges: members absent from it are gone.
    replacement = {"locale": "fr"}
    response = await h.client.put(_cust(org["id"]), json=replacement, headers=h.auth())
    assert response.status_code == 200
    assert (await h.client.get(_cust(org["id"]), headers=h.auth())).json() == replacement


async def test_put_of_an_invalid_document_names_each_bad_path_and_writes_nothing(h):
    org = await h.create_org(h.root.org_id, "Acme")
    ok = await h.client.put(_cust(org["id"]), json={"locale": "en"}, headers=h.auth())
    assert ok.status_code == 200
    audit_before = await _audit(h, org["id"])

    invalid = {
        "colour": "red",
        "branding": {"primary_color": "#12", "logo_url": "http://acme.example/logo.png"},
        "features": {"beta": "yes"},
    }
    response = await h.client.put(_cust(org["id"]), json=invalid, headers=h.auth())
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 400
    fields = sorted(e["field"] for e in problem["errors"])
    assert fields == [
        "customizations.branding.logo_url",
        "customizations.branding.primary_color",
        "customizations.colour",
        "customizations.features.beta",
    ]
    assert all(e["message"] for e in problem["errors"])

    # Nothing written: same document, same ETag, no new audit entry.
    after = await h.client.get(_cust(org["id"]), headers=h.auth())
    assert after.json() == {"locale": "en"}
    assert after.headers["etag"] == ok.headers["etag"]
    assert await _audit(h, org["id"]) == audit_before


BAD_DOCUMENTS = [
    ([1, 2], "customizations"),
    ({"features": ["a"]}, "customizations.features"),
    ({"branding": {"theme": "neon"}}, "customizations.branding.theme"),
    ({"login": {"subdomain": "-bad-"}}, "customizations.login.subdomain"),
    ({"metadata": {"k": {"nested": 1}}}, "customizations.metadata.k"),
    ({"branding": {"display_name": "Acme", "font": "Comic"}}, "customizations.branding.font"),
]


async def test_put_rejects_each_kind_of_bad_document(h):
    org = await h.create_org(h.root.org_id, "Acme")
    for body, field in BAD_DOCUMENTS:
        response = await h.client.put(_cust(org["id"]), json=body, headers=h.auth())
        assert response.status_code == 400, (body, response.text)
        assert [e["field"] for e in response.json()["errors"]] == [field], body
    assert (await h.client.get(_cust(org["id"]), headers=h.auth())).json() == {}


async def test_put_of_malformed_json_is_a_400(h):
    org = await h.create_org(h.root.org_id, "Acme")
    response = await h.client.put(
        _cust(org["id"]),
        content=b'{"locale": ',
        headers={**h.auth(), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"


async def test_patch_merges_per_rfc_7396(h):
    org = await h.create_org(h.root.org_id, "Acme")
    start = {
        "branding": {"display_name": "Acme", "primary_color": "#112233"},
        "features": {"a": True, "b": False},
        "metadata": {"keep": "yes", "drop": 1},
    }
    assert (await h.client.put(_cust(org["id"]), json=start, headers=h.auth())).status_code == 200

    patch = {
        "branding": {"theme": "dark", "primary_color": "#445566"},
        "features": {"b": None, "c": True},
        "metadata": {"drop": None},
        "locale": "fr",
    }
    response = await h.client.patch(
        _cust(org["id"]),
        content=json.dumps(patch),
        headers={**h.auth(), "Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text
    expected = {
        "branding": {"display_name": "Acme", "primary_color": "#445566", "theme": "dark"},
        "features": {"a": True, "c": True},
        "metadata": {"keep": "yes"},
        "locale": "fr",
    }
    assert response.json() == expected
    assert (await h.client.get(_cust(org["id"]), headers=h.auth())).json() == expected
    entry = (await _audit(h, org["id"]))[0]
    assert entry["before"] == {"customizations": start}
    assert entry["after"] == {"customizations": expected}

    # null removes a whole member; removing an absent one is not an error.
    response = await h.client.patch(
        _cust(org["id"]), json={"branding": None, "login": None}, headers=h.auth()
    )
    assert response.status_code == 200
    assert response.json() == {k: v for k, v in expected.items() if k != "branding"}

    # A merge whose result breaks the schema is refused and writes nothing.
    current = await h.client.get(_cust(org["id"]), headers=h.auth())
    response = await h.client.patch(
        _cust(org["id"]), json={"features": {"a": "on"}}, headers=h.auth()
    )
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["customizations.features.a"]
    after = await h.client.get(_cust(org["id"]), headers=h.auth())
    assert after.json() == current.json()
    assert after.headers["etag"] == current.headers["etag"]

    # A patch that is not an object would replace the whole document: refused.
    response = await h.client.patch(_cust(org["id"]), json=["x"], headers=h.auth())
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        # The examples of RFC 7396, appendix A.
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_follows_the_rfc_examples(target, patch, result):
    assert customizations_service.merge_patch(target, patch) == result


async def test_if_match_guards_put_and_patch(h):
    org = await h.create_org(h.root.org_id, "Acme")
    first = await h.client.get(_cust(org["id"]), headers=h.auth())
    stale = first.headers["etag"]

    response = await h.client.put(
        _cust(org["id"]), json={"locale": "de"}, headers={**h.auth(), "If-Match": stale}
    )
    assert response.status_code == 200
    fresh = response.headers["etag"]
    assert fresh != stale

    for method, body in (("PUT", {"locale": "it"}), ("PATCH", {"locale": "it"})):
        response = await h.client.request(
            method, _cust(org["id"]), json=body, headers={**h.auth(), "If-Match": stale}
        )
        assert response.status_code == 412, (method, response.text)
        assert response.headers["etag"] == fresh
        assert response.json()["status"] == 412
    assert (await h.client.get(_cust(org["id"]), headers=h.auth())).json() == {"locale": "de"}

    response = await h.client.patch(
        _cust(org["id"]), json={"locale": "it"}, headers={**h.auth(), "If-Match": fresh}
    )
    assert response.status_code == 200
    response = await h.client.put(
        _cust(org["id"]), json={"locale": "es"}, headers={**h.auth(), "If-Match": "*"}
    )
    assert response.status_code == 200
    assert response.json() == {"locale": "es"}


async def test_customizations_access_matrix(h):
    a = await h.create_org(h.root.org_id, "A")
    b = await h.create_org(h.root.org_id, "B")
    a_child = await h.create_org(a["id"], "A1")
    reader = await h.create_key(a["id"], ["orgs:read"])
    writer = await h.create_key(a["id"], ["orgs:write"])
    unrelated = await h.create_key(a["id"], ["usage:read"])
    target = _cust(a_child["id"])

    async def call(method: str, path: str, headers: dict[str, str], body: Any = None) -> Any:
        if method == "GET":
            return await h.client.get(path, headers=headers)
        return await h.client.request(method, path, json=body or {"locale": "en"}, headers=headers)

    for method in ("GET", "PUT", "PATCH"):
        # 401: no credentials, or a key that does not exist.
        for headers in ({}, {"Authorization": "Bearer opk_not_a_real_key"}):
            response = await call(method, target, headers)
            assert response.status_code == 401, (method, headers)
            assert response.headers["www-authenticate"].startswith("Bearer")
        # 404: outside the key's subtree (sibling, ancestor) or nonexistent: the same answer.
        for other in (b["id"], h.root.org_id, "org_doesnotexist"):
            response = await call(method, _cust(other), h.auth(writer))
            assert response.status_code == 404, (method, other)
            assert response.json()["detail"] == f"organization {other!r} not found"
            assert response.json()["title"] == "Not found"
        # Reach is decided before validation: an invalid body from outside is still a 404.
        if method != "GET":
            response = await call(method, _cust(b["id"]), h.auth(writer), {"bogus": 1})
            assert response.status_code == 404
        # 403: inside the subtree without the scope.
        response = await call(method, target, h.auth(unrelated))
        assert response.status_code == 403, method

    # orgs:read can read but not write, even with a document that would be invalid.
    assert (await call("GET", target, h.auth(reader))).status_code == 200
    for method in ("PUT", "PATCH"):
        assert (await call(method, target, h.auth(reader))).status_code == 403
        assert (await call(method, target, h.auth(reader), {"bogus": 1})).status_code == 403
    assert (await call("GET", target, h.auth())).json() == {}

    # orgs:write writes inside its subtree, its own org included.
    for org in (a, a_child):
        response = await call("PUT", _cust(org["id"]), h.auth(writer), {"locale": "nl"})
        assert response.status_code == 200
        assert (await call("GET", _cust(org["id"]), h.auth(reader))).json() == {"locale": "nl"}


async def test_the_published_schema_is_the_one_enforced(h):
    response = await h.client.get("/schemas/customizations.json")  # public: no credentials
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/schema+json")
    schema = response.json()
    assert schema == customizations_service.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    assert list(validator.iter_errors(VALID)) == []
    assert list(validator.iter_errors({"branding": {"primary_color": "#12"}}))

    # What the schema accepts the API stores; what it refuses the API refuses.
    org = await h.create_org(h.root.org_id, "Acme")
    assert (await h.client.put(_cust(org["id"]), json=VALID, headers=h.auth())).status_code == 200
    for bad in ({"locale": "english"}, {"support": {"email": "nope"}}):
        assert list(validator.iter_errors(bad))
        response = await h.client.put(_cust(org["id"]), json=bad, headers=h.auth())
        assert response.status_code == 400


# --- consumption -------------------------------------------------------------------------------


def _month(day: date) -> tuple[date, date]:
    start = day.replace(day=1)
    return start, start + timedelta(days=calendar.monthrange(day.year, day.month)[1])


def _sum(rows: dict[tuple[int, str, date], int], orgs: set[int], meter: str, lo, hi) -> int:
    return sum(q for (o, m, d), q in rows.items() if o in orgs and m == meter and lo <= d < hi)


def _pct(part: float, whole: float) -> float | None:
    return None if not whole else round(100.0 * part / whole, 2)


def _expected(
    rows: dict[tuple[int, str, date], int],
    orgs: set[int],
    meter: str,
    limit: int | None,
    today: date,
    period_of: date | None = None,
) -> dict[str, Any]:
    """What a report should say, computed independently from the inserted rows."""
    start, end = _month(period_of or today)
    as_of = min(today, end - timedelta(days=1))
    elapsed = (as_of - start).days + 1 if as_of >= start else 0
    days = (end - start).days
    consumed = _sum(rows, orgs, meter, start, end)
    week = _sum(rows, orgs, meter, as_of - timedelta(days=6), as_of + timedelta(days=1))
    prev_week = _sum(rows, orgs, meter, as_of - timedelta(days=13), as_of - timedelta(days=6))
    prev_start, prev_end = _month(start - timedelta(days=1))
    previous = _sum(rows, orgs, meter, prev_start, prev_end)
    forecast = round(consumed / elapsed * days) if elapsed else consumed
    return {
        "meter": meter,
        "consumed": consumed,
        "extra": max(0, consumed - limit) if limit is not None else 0,
        "limit": limit,
        "utilization_pct": _pct(consumed, limit) if limit is not None else None,
        "forecast": forecast,
        "forecast_utilization_pct": _pct(forecast, limit) if limit is not None else None,
        "last_week": week,
        "change_vs_previous_week_pct": _pct(week - prev_week, prev_week),
        "previous_period": previous,
        "change_vs_previous_period_pct": _pct(consumed - previous, previous),
    }


@contextmanager
def _statements() -> Iterator[list[str]]:
    """The SQL statements any engine runs inside the block."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(sa.engine.Engine, "before_cursor_execute", record)


def _today(tz: str) -> date:
    return datetime.now(ZoneInfo(tz)).date()


async def _roots(conn: Any, org_ids: set[int]) -> dict[int, int]:
    rows = await conn.execute(sa.select(orgs.c.id, orgs.c.root_id).where(orgs.c.id.in_(org_ids)))
    return {row.id: row.root_id for row in rows}


async def _insert_usage(h: Any, rows: dict[tuple[int, str, date], int]) -> None:
    """Write the day counters directly, and fold them into the per-subtree counters of each
    org and its ancestors, as ingestion does (the rows here reach back past what it accepts)."""

    # A write transaction of the app's (BEGIN IMMEDIATE on SQLite): a transaction that reads
    # first and then writes cannot wait for the access log's flush and fails "locked".
    async def write(conn: Any) -> None:
        found = await conn.execute(
            sa.select(orgs.c.id, orgs.c.root_id, orgs.c.path).where(
                orgs.c.id.in_({o for o, _, _ in rows})
            )
        )
        by_id = {row.id: row for row in found}
        await conn.execute(
            sa.insert(usage_daily),
            [
                {"org_id": o, "root_id": by_id[o].root_id, "meter": m, "day": d, "quantity": q}
                for (o, m, d), q in rows.items()
            ],
        )
        subtree: defaultdict[tuple[int, str, date], int] = defaultdict(int)
        root_of: dict[int, int] = {}
        for (o, m, d), q in rows.items():
            for ancestor in by_id[o].path.strip("/").split("/"):
                subtree[(int(ancestor), m, d)] += q
                root_of[int(ancestor)] = by_id[o].root_id
        existing = await conn.execute(
            sa.select(usage_subtree_daily).where(
                usage_subtree_daily.c.org_id.in_({o for o, _, _ in subtree})
            )
        )
        for row in existing:
            key = (row.org_id, row.meter, row.day)
            if key in subtree:
                await conn.execute(
                    sa.update(usage_subtree_daily)
                    .where(
                        usage_subtree_daily.c.org_id == row.org_id,
                        usage_subtree_daily.c.meter == row.meter,
                        usage_subtree_daily.c.day == row.day,
                    )
                    .values(quantity=usage_subtree_daily.c.quantity + subtree.pop(key))
                )
        if subtree:
            await conn.execute(
                sa.insert(usage_subtree_daily),
                [
                    {"org_id": o, "root_id": root_of[o], "meter": m, "day": d, "quantity": q}
                    for (o, m, d), q in subtree.items()
                ],
            )

    await h.services.db.transaction(write)


async def _set_limits(h: Any, limits: dict[tuple[int, str], int]) -> None:
    async def write(conn: Any) -> None:
        roots = await _roots(conn, {o for o, _ in limits})
        await conn.execute(
            sa.insert(org_limits),
            [
                {"org_id": o, "root_id": roots[o], "meter": m, "amount": a, "updated_at": utcnow()}
                for (o, m), a in limits.items()
            ],
        )

    await h.services.db.transaction(write)  # as _insert_usage


async def _meter_names(h: Any) -> list[str]:
    async with h.services.db.engine.connect() as conn:
        return list(
            (await conn.execute(sa.select(meters.c.name).order_by(meters.c.name))).scalars()
        )


async def _report(h: Any, org_id: str, key: str | None = None, **params: str) -> dict[str, Any]:
    response = await h.client.get(f"/orgs/{org_id}/consumption", params=params, headers=h.auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _without_unit(meters_out: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["meter"]: {k: v for k, v in m.items() if k != "unit"} for m in meters_out}


async def test_consumption_of_an_org_without_usage_lists_every_meter(h):
    org = await h.create_org(h.root.org_id, "Quiet")
    tz = org["timezone"]
    today = _today(tz)
    report = await _report(h, org["id"])
    if _today(tz) != today:  # the day turned during the request
        today = _today(tz)
        report = await _report(h, org["id"])

    start, end = _month(today)
    assert report["org_id"] == org["id"]
    assert report["period"] == f"{today.year:04d}-{today.month:02d}"
    assert report["rollup"] == "self"
    assert report["days_elapsed"] == today.day
    assert report["days_in_period"] == (end - start).days
    assert [e["org_id"] for e in report["entries"]] == [org["id"]]
    assert report["entries"][0]["name"] == "Quiet"
    names = [m["meter"] for m in report["entries"][0]["meters"]]
    assert names == await _meter_names(h)
    assert {"operations", "credits", "transfer"} <= set(names)
    for meter in report["entries"][0]["meters"]:
        assert meter["unit"]
        assert meter["consumed"] == 0
        assert meter["extra"] == 0
        assert meter["limit"] is None
        assert meter["utilization_pct"] is None
        assert meter["forecast"] == 0
        assert meter["last_week"] == 0
        assert meter["change_vs_previous_week_pct"] is None
        assert meter["previous_period"] == 0
        assert meter["change_vs_previous_period_pct"] is None


async def test_consumption_figures_in_the_orgs_timezone(h):
    tz = "Pacific/Auckland"
    org = await h.create_org(h.root.org_id, "Kiwi", timezone=tz)
    oid = org["key"]
    today = _today(tz)
    prev_start, _ = _month(today.replace(day=1) - timedelta(days=1))
    rows: dict[tuple[int, str, date], int] = defaultdict(int)
    for day, quantity in (
        (today, 700),
        (today - timedelta(days=3), 300),
        (today - timedelta(days=9), 200),
        (today - timedelta(days=12), 50),
        (prev_start + timedelta(days=14), 5000),
        (today.replace(day=1) - timedelta(days=1), 1000),
        (prev_start - timedelta(days=3), 999_999),  # two months back
    ):
        rows[(oid, "operations", day)] += quantity
    rows[(oid, "credits", today)] += 40
    rows[(oid, "credits", today - timedelta(days=8))] += 10
    await _insert_usage(h, dict(rows))
    limits = {"operations": 500, "credits": 1000}
    await _set_limits(h, {(oid, m): a for m, a in limits.items()})

    report = await _report(h, org["id"])
    if _today(tz) != today:
        pytest.skip("the day turned in Pacific/Auckland during the test")
    start, end = _month(today)
    zone = ZoneInfo(tz)
    assert report["timezone"] == tz
    assert report["days_elapsed"] == today.day
    assert report["days_in_period"] == (end - start).days
    assert datetime.fromisoformat(report["last_reset"]) == datetime(
        start.year, start.month, 1, tzinfo=zone
    )
    assert datetime.fromisoformat(report["next_reset"]) == datetime(
        end.year, end.month, 1, tzinfo=zone
    )
    got = _without_unit(report["entries"][0]["meters"])
    for meter in ("operations", "credits", "transfer"):
        assert got[meter] == _expected(rows, {oid}, meter, limits.get(meter), today), meter

    operations = got["operations"]
    assert operations["consumed"] >= 700
    assert operations["extra"] == operations["consumed"] - 500 > 0
    assert operations["utilization_pct"] > 100
    assert operations["previous_period"] >= 5000
    assert got["credits"]["extra"] == 0
    assert got["transfer"]["limit"] is None

    # A past period: the whole month has elapsed, so the forecast is what was consumed.
    label = f"{prev_start.year:04d}-{prev_start.month:02d}"
    past = await _report(h, org["id"], period=label)
    assert past["period"] == label
    assert past["days_elapsed"] == past["days_in_period"] == (start - prev_start).days
    got = _without_unit(past["entries"][0]["meters"])
    for meter in ("operations", "credits", "transfer"):
        assert got[meter] == _expected(rows, {oid}, meter, limits.get(meter), today, prev_start)
    assert got["operations"]["forecast"] == got["operations"]["consumed"] >= 6000

    # A future period: nothing elapsed, nothing consumed.
    future = end + timedelta(days=40)
    label = f"{future.year:04d}-{future.month:02d}"
    ahead = await _report(h, org["id"], period=label)
    assert ahead["days_elapsed"] == 0
    assert all(m["consumed"] == 0 and m["forecast"] == 0 for m in ahead["entries"][0]["meters"])


async def test_consumption_rollups(h):
    tz = "UTC"
    parent = await h.create_org(h.root.org_id, "Parent", timezone=tz)
    a = await h.create_org(parent["id"], "A", timezone=tz)
    a1 = await h.create_org(a["id"], "A1", timezone=tz)
    a11 = await h.create_org(a1["id"], "A11", timezone=tz)
    b = await h.create_org(parent["id"], "B", timezone=tz)
    c = await h.create_org(parent["id"], "C (no usage)", timezone=tz)
    gone = await h.create_org(parent["id"], "Deleted", timezone=tz)
    stranger = await h.create_org(h.root.org_id, "Stranger", timezone=tz)
    today = _today(tz)
    last_month = today.replace(day=1) - timedelta(days=1)
    rows: dict[tuple[int, str, date], int] = {}
    for n, org in enumerate((parent, a, a1, a11, b, gone, stranger), start=1):
        rows[(org["key"], "operations", today)] = 100 * n
        rows[(org["key"], "operations", last_month)] = 10 * n
        rows[(org["key"], "transfer", today)] = n
    await _insert_usage(h, rows)
    await _set_limits(h, {(parent["key"], "operations"): 1000, (a["key"], "operations"): 50})
    deleted = await h.client.delete(f"/orgs/{gone['id']}", headers=h.auth())
    assert deleted.status_code == 200

    def subtree(*orgs: dict[str, Any]) -> set[int]:
        return {o["key"] for o in orgs}

    own = await _report(h, parent["id"])
    if _today(tz) != today:
        pytest.skip("the day turned during the test")
    got = _without_unit(own["entries"][0]["meters"])
    assert got["operations"] == _expected(rows, subtree(parent), "operations", 1000, today)

    whole = await _report(h, parent["id"], rollup="subtree")
    assert whole["rollup"] == "subtree"
    assert [e["org_id"] for e in whole["entries"]] == [parent["id"]]
    got = _without_unit(whole["entries"][0]["meters"])
    # The subtree counts what was consumed, by deleted orgs too, never a stranger's usage.
    members = subtree(parent, a, a1, a11, b, gone)
    assert got["operations"] == _expected(rows, members, "operations", 1000, today)
    assert got["transfer"] == _expected(rows, members, "transfer", None, today)
    assert got["operations"]["consumed"] == 100 * (1 + 2 + 3 + 4 + 5 + 6)

    mid = await _report(h, a["id"], rollup="subtree")
    got = _without_unit(mid["entries"][0]["meters"])
    assert got["operations"] == _expected(rows, subtree(a, a1, a11), "operations", 50, today)

    with _statements() as statements:
        per_child = await _report(h, parent["id"], rollup="children")
    # One query sums every child's subtree counters, however many children there are.
    assert len([s for s in statements if "usage_subtree_daily" in s]) == 1
    assert per_child["org_id"] == parent["id"]
    assert [(e["org_id"], e["name"]) for e in per_child["entries"]] == [
        (a["id"], "A"),
        (b["id"], "B"),
        (c["id"], "C (no usage)"),
    ]
    by_child = {e["org_id"]: _without_unit(e["meters"]) for e in per_child["entries"]}
    for child, members, limit in (
        (a, subtree(a, a1, a11), 50),
        (b, subtree(b), None),
        (c, subtree(c), None),
    ):
        for meter in ("operations", "transfer", "credits"):
            expected = _expected(
                rows, members, meter, limit if meter == "operations" else None, today
            )
            assert by_child[child["id"]][meter] == expected, (child["name"], meter)
    assert by_child[a["id"]]["operations"]["consumed"] == 200 + 300 + 400
    assert by_child[a["id"]]["operations"]["extra"] == 900 - 50
    assert by_child[c["id"]]["operations"]["consumed"] == 0

    leaf = await _report(h, a11["id"], rollup="children")
    assert leaf["entries"] == []


async def test_consumption_rejects_a_bad_period(h):
    for period in ("2026-13", "abc", "2026-1", "1969-12", "2026-00", "2026-01-01"):
        response = await h.client.get(
            f"/orgs/{h.root.org_id}/consumption", params={"period": period}, headers=h.auth()
        )
        assert response.status_code == 400, period
        assert response.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in response.json()["errors"]] == ["query.period"], period


async def test_consumption_rejects_an_unknown_rollup(h):
    response = await h.client.get(
        f"/orgs/{h.root.org_id}/consumption", params={"rollup": "everything"}, headers=h.auth()
    )
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["query.rollup"]


async def test_consumption_access_matrix(h):
    a = await h.create_org(h.root.org_id, "A")
    b = await h.create_org(h.root.org_id, "B")
    a1 = await h.create_org(a["id"], "A1")
    usage_reader = await h.create_key(a["id"], ["usage:read"])
    usage_writer = await h.create_key(a["id"], ["usage:write"])
    orgs_writer = await h.create_key(a["id"], ["orgs:write"])
    await _insert_usage(h, {(a1["key"], "credits", _today(a1["timezone"])): 7})

    path = f"/orgs/{a1['id']}/consumption"
    assert (await h.client.get(path)).status_code == 401
    bad = {"Authorization": "Bearer opk_forged"}
    assert (await h.client.get(path, headers=bad)).status_code == 401
    for other in (b["id"], h.root.org_id, "org_missing"):
        response = await h.client.get(
            f"/orgs/{other}/consumption", params={"rollup": "subtree"}, headers=h.auth(usage_reader)
        )
        assert response.status_code == 404, other
        assert response.json()["detail"] == f"organization {other!r} not found"
    response = await h.client.get(path, headers=h.auth(orgs_writer))
    assert response.status_code == 403
    assert "usage:read" in response.json()["detail"]

    for key in (usage_reader, usage_writer):  # write implies read
        report = await _report(h, a1["id"], key=key)
        credits = next(m for m in report["entries"][0]["meters"] if m["meter"] == "credits")
        assert credits["consumed"] == 7
    report = await _report(h, a["id"], key=usage_reader, rollup="children")
    assert [e["org_id"] for e in report["entries"]] == [a1["id"]]
