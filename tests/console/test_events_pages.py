"""The console's webhooks and alerts tabs over real HTTP through the app, on SQLite and
PostgreSQL: a webhook's secret shown once, refusals on the form, test sends and events to a real
receiver on 127.0.0.1 in the delivery log, redelivery; alerts set, refused, deleted; and what a
member without the capability sees."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from orgplane.console import webhooks as console_webhooks
from orgplane.core.webhooks.worker import Worker
from support.harness import Harness, start_harness, stop_harness
from support.people import PASSWORD, make_user
from support.receiver import Receiver, receiver

CONSOLE = "/console"


@pytest.fixture
async def h(db_url: str) -> AsyncIterator[Harness]:
    """The harness with the receiver's network allowed; deliveries are run by the test."""
    harness = await start_harness(
        db_url,
        webhook_allowed_networks="127.0.0.0/8",
        webhook_retry_schedule="0,0",
        webhook_delivery="off",
    )
    try:
        yield harness
    finally:
        await stop_harness(harness)


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


async def _signed_in(h: Harness, email: str = "owner@example.com",
                     roles: list[str] | None = None) -> httpx.AsyncClient:  # fmt: skip
    await make_user(h, h.root.org_id, email, roles or ["owner"])
    client = httpx.AsyncClient(transport=h.client._transport, base_url=str(h.client.base_url))
    form = await client.get(f"{CONSOLE}/sign-in")
    response = await client.post(
        f"{CONSOLE}/sign-in",
        data={"email": email, "password": PASSWORD, "next": "", "_csrf_token": _csrf(form)},
    )
    assert response.status_code == 303, response.text
    return client


async def _drain(h: Harness) -> None:
    """Run the delivery worker until it has nothing left to do."""
    worker = Worker(h.services.db, h.services.settings)
    for _ in range(50):
        if await worker.run_once() == 0:
            return
    raise AssertionError("the worker never went idle")


async def _create(client: httpx.AsyncClient, org: str, url: str, **fields: str) -> httpx.Response:
    listing = await client.get(f"{CONSOLE}/orgs/{org}/webhooks")
    assert listing.status_code == 200, listing.text
    form = {"url": url, "event_types": "org.*", "include_descendants": "1",
            "description": "", "_csrf_token": _csrf(listing), **fields}  # fmt: skip
    return await client.post(f"{CONSOLE}/orgs/{org}/webhooks", data=form)


def _webhook_id(page: httpx.Response) -> str:
    found = re.search(r"/webhooks/(whk_[0-9A-Za-z]+)", page.text)
    assert found, page.text
    return found.group(1)


async def test_a_webhook_shows_its_secret_once(h: Harness, rx: Receiver) -> None:
    client = await _signed_in(h)
    root = h.root.org_id
    created = await _create(client, root, rx.url + "/hook", description="provisioning")
    assert created.status_code == 201, created.text
    secret = re.search(r'value="(whsec_[^"]+)" data-secret', created.text)
    assert secret, created.text
    hook = _webhook_id(created)
    listing = await client.get(f"{CONSOLE}/orgs/{root}/webhooks")
    assert hook in listing.text and "provisioning" in listing.text
    assert secret.group(1) not in listing.text and "data-secret" not in listing.text
    assert "none yet" in listing.text  # no delivery so far
    page = await client.get(f"{CONSOLE}/orgs/{root}/webhooks/{hook}")
    assert secret.group(1) not in page.text
    # The API sees the same webhook, created by the console.
    audit = await h.client.get(
        f"/orgs/{root}/audit", params={"action": "webhook.created"}, headers=h.auth()
    )
    (entry,) = audit.json()["data"]
    assert (entry["surface"], entry["target_id"]) == ("console", hook)
    # The secret signs: an event delivered to the receiver verifies with it.
    await h.create_org(root, "Child")
    await _drain(h)
    (delivery,) = rx.at("/hook")
    assert delivery.verifies_with(html.unescape(secret.group(1)))["type"] == "org.created"
    listing = await client.get(f"{CONSOLE}/orgs/{root}/webhooks")
    assert ">200</span>" in listing.text  # the last delivery's status


async def test_refusals_are_shown_on_the_form_with_what_was_typed(h: Harness) -> None:
    client = await _signed_in(h)
    root = h.root.org_id
    refused = await _create(client, root, "http://10.1.2.3/hook", description="kept")
    assert refused.status_code == 400, refused.text
    assert 'id="create-error"' in refused.text
    assert "url: refused destination" in refused.text
    assert 'value="http://10.1.2.3/hook"' in refused.text and 'value="kept"' in refused.text
    bad_types = await _create(client, root, "https://example.com/hook", event_types="org.*\nOrg X")
    assert bad_types.status_code == 400
    assert "event_types[1]: must be 1-64 of a-z" in bad_types.text
    assert ">org.*\nOrg X</textarea>" in bad_types.text
    listed = await h.client.get(f"/orgs/{root}/webhooks", headers=h.auth())
    assert listed.json()["data"] == []


async def test_test_send_delivery_log_and_redelivery(
    h: Harness, rx: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await _signed_in(h)
    root = h.root.org_id
    hook = _webhook_id(await _create(client, root, rx.url + "/hook"))
    url = f"{CONSOLE}/orgs/{root}/webhooks/{hook}"
    page = await client.get(url)
    tested = await client.post(f"{url}/test", data={"_csrf_token": _csrf(page)})
    assert tested.status_code == 200, tested.text
    assert "Test event delivered" in tested.text and "HTTP 200" in tested.text
    (sent,) = rx.at("/hook")
    test_id = sent.headers["webhook-id"]
    log = await client.get(url)
    assert f"<code>{test_id}</code>" in log.text and "webhook.test" in log.text
    assert "test, not queued" in log.text  # a test event has no redelivery
    # A real event, delivered by the worker, then redelivered from its log row.
    await h.create_org(root, "Child")
    await _drain(h)
    event = rx.at("/hook")[-1].headers["webhook-id"]
    log = await client.get(url)
    assert "org.created" in log.text and f'name="event_id" value="{event}"' in log.text
    again = await client.post(
        f"{url}/redeliver", data={"event_id": event, "_csrf_token": _csrf(log)}
    )
    assert again.status_code == 303, again.text
    assert again.headers["location"] == f"{url}?queued=1"
    assert "1 event queued for delivery again" in (await client.get(again.headers["location"])).text
    await _drain(h)
    assert [r.headers["webhook-id"] for r in rx.at("/hook")][-2:] == [event, event]
    # A time range (UTC, as the form's datetime-local fields give it), and a refused one.
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    ranged = await client.post(
        f"{url}/redeliver", data={"since": since, "until": "", "_csrf_token": _csrf(log)}
    )
    assert ranged.headers["location"] == f"{url}?queued=1"
    bad = await client.post(
        f"{url}/redeliver", data={"since": "yesterday", "until": "", "_csrf_token": _csrf(log)}
    )
    assert bad.status_code == 400
    assert "since: must be a date and time" in bad.text and 'value="yesterday"' in bad.text
    # Three attempts now, newest first; at two a page, the test send is a keyset page away.
    monkeypatch.setattr(console_webhooks, "LOG_PAGE", 2)
    log = await client.get(url)
    assert log.text.count('name="event_id"') == 2 and test_id not in log.text
    older = re.search(r'href="\?cursor=([^"]+)">Older<', log.text)
    assert older, log.text
    rest = await client.get(url, params={"cursor": html.unescape(older.group(1))})
    assert f"<code>{test_id}</code>" in rest.text and ">Older<" not in rest.text


async def test_edit_disable_rotate_and_delete(h: Harness, rx: Receiver) -> None:
    client = await _signed_in(h)
    root = h.root.org_id
    hook = _webhook_id(await _create(client, root, rx.url + "/hook"))
    url = f"{CONSOLE}/orgs/{root}/webhooks/{hook}"
    page = await client.get(url)
    token = _csrf(page)
    form = {"url": rx.url + "/other", "event_types": "credits.*, org.created",
            "description": "billing", "_csrf_token": token}  # fmt: skip
    refused = await client.post(url, data={**form, "event_types": "credits.*, Bad"})
    assert refused.status_code == 400 and "event_types[1]" in refused.text
    assert ">credits.*, Bad</textarea>" in refused.text
    saved = await client.post(url, data=form)
    assert saved.status_code == 303, saved.text
    got = (await h.client.get(f"/orgs/{root}/webhooks/{hook}", headers=h.auth())).json()
    assert got["event_types"] == ["credits.*", "org.created"]
    assert (got["url"], got["include_descendants"], got["description"]) == (
        rx.url + "/other", False, "billing",
    )  # fmt: skip
    disabled = await client.post(f"{url}/enabled", data={"enabled": "0", "_csrf_token": token})
    assert disabled.status_code == 303
    page = await client.get(disabled.headers["location"])
    assert "status-disabled" in page.text and "disabled by" in page.text
    rotated = await client.post(f"{url}/rotate", data={"overlap": "3600", "_csrf_token": token})
    assert rotated.status_code == 200, rotated.text
    assert re.search(r'value="whsec_[^"]+" data-secret', rotated.text)
    assert "keeps signing too" in rotated.text and "UTC</strong>" in rotated.text
    assert "data-secret" not in (await client.get(url)).text
    deleted = await client.post(f"{url}/delete", data={"_csrf_token": token})
    assert deleted.status_code == 303
    assert deleted.headers["location"] == f"{CONSOLE}/orgs/{root}/webhooks?deleted={hook}"
    assert (await client.get(url)).status_code == 404
    actions = await h.client.get(
        f"/orgs/{root}/audit", params={"target_id": hook}, headers=h.auth()
    )
    assert {e["action"] for e in actions.json()["data"]} >= {
        "webhook.created", "webhook.updated", "webhook.secret_rotated", "webhook.deleted",
    }  # fmt: skip


async def test_alerts_are_set_refused_and_deleted(h: Harness) -> None:
    root = h.root.org_id
    limit = await h.client.put(
        f"/orgs/{root}/limits/operations", json={"amount": 100_000}, headers=h.auth()
    )
    assert limit.status_code == 200, limit.text
    event = {"meter": "operations", "quantity": 60_000, "idempotency_key": "u1",
             "timestamp": datetime.now(UTC).isoformat()}  # fmt: skip
    used = await h.client.post(f"/orgs/{root}/usage", json={"events": [event]}, headers=h.auth())
    assert used.status_code in (200, 201, 202), used.text
    client = await _signed_in(h)
    url = f"{CONSOLE}/orgs/{root}/alerts"
    page = await client.get(url)
    assert page.status_code == 200, page.text
    assert (
        'id="thresholds-operations" name="thresholds" inputmode="numeric" value="50, 80, 100"'
        in (page.text)
    )
    assert "<strong>60,000</strong> of an allocation of 100,000 (60.0%)" in page.text
    token = _csrf(page)
    saved = await client.post(
        f"{url}/operations", data={"thresholds": "90, 50", "scope": "subtree", "_csrf_token": token}
    )
    assert saved.status_code == 303, saved.text
    page = await client.get(saved.headers["location"])
    # Usage is past 50% already: that threshold fired when the alert was set.
    period = datetime.now(UTC).strftime("%Y-%m")
    assert f"50%: fired in {period}" in page.text and "90%: armed" in page.text
    assert '<option value="subtree" selected>' in page.text
    alert = await h.client.get(f"/orgs/{root}/alerts/operations", headers=h.auth())
    assert alert.json()["scope"] == "subtree"
    assert [t["threshold"] for t in alert.json()["thresholds"]] == [50, 90]
    refused = await client.post(
        f"{url}/operations", data={"thresholds": "50, 8o", "scope": "org", "_csrf_token": token}
    )
    assert refused.status_code == 400
    assert 'id="error-operations"' in refused.text
    assert "thresholds[1]: must be a whole number" in refused.text
    assert 'value="50, 8o"' in refused.text
    deleted = await client.post(f"{url}/operations/delete", data={"_csrf_token": token})
    assert deleted.status_code == 303
    assert (
        await h.client.get(f"/orgs/{root}/alerts/operations", headers=h.auth())
    ).status_code == 404
    audit = await h.client.get(f"/orgs/{root}/audit", params={"action": "alert.deleted"},
                               headers=h.auth())  # fmt: skip
    assert audit.json()["data"][0]["surface"] == "console"


async def test_a_member_without_the_capability_sees_no_forms(h: Harness) -> None:
    root = h.root.org_id
    set_by_api = await h.client.put(
        f"/orgs/{root}/alerts/operations", json={"thresholds": [75]}, headers=h.auth()
    )
    assert set_by_api.status_code == 200, set_by_api.text
    client = await _signed_in(h, "member@example.com", roles=["standard"])
    overview = await client.get(f"{CONSOLE}/orgs/{root}")
    assert ">Alerts</a>" in overview.text and ">Webhooks</a>" not in overview.text
    hidden = await client.get(f"{CONSOLE}/orgs/{root}/webhooks")
    assert hidden.status_code == 403
    page = await client.get(f"{CONSOLE}/orgs/{root}/alerts")
    assert page.status_code == 200 and "75%: armed" in page.text
    assert f'action="{CONSOLE}/orgs/{root}/alerts/operations' not in page.text
    refused = await client.post(
        f"{CONSOLE}/orgs/{root}/alerts/operations",
        data={"thresholds": "10", "scope": "org", "_csrf_token": _csrf(page)},
    )
    assert refused.status_code == 403
