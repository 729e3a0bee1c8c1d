"""Webhooks end to end on SQLite and PostgreSQL: the API, fan-out and delivery to a real
receiver on 127.0.0.1, every delivery verified with the ``standardwebhooks`` package."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from orgplane.core.webhooks import destinations
from orgplane.core.webhooks.worker import Worker
from orgplane.models import audit_log, webhook_attempts, webhook_deliveries
from support.harness import Harness, start_harness, stop_harness
from support.receiver import Receiver, receiver

LOCAL = "127.0.0.0/8"


@pytest.fixture
async def hk(db_url: str) -> AsyncIterator[Harness]:
    """The harness with the receiver's network allowed and retries without delay."""
    harness = await start_harness(
        db_url,
        webhook_allowed_networks=LOCAL,
        webhook_retry_schedule="0,0",
        webhook_delivery="off",
    )
    try:
        yield harness
    finally:
        await stop_harness(harness)


@pytest.fixture
def rx() -> Any:
    with receiver() as r:
        yield r


async def create_webhook(h: Harness, org: str, url: str, **fields: Any) -> dict[str, Any]:
    body = {"url": url, "event_types": ["*"], **fields}
    response = await h.client.post(f"/orgs/{org}/webhooks", json=body, headers=h.auth())
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def drain(h: Harness, worker: Worker | None = None, *, pause: float = 0.0) -> Worker:
    """Run the worker's passes until it finds nothing to do."""
    worker = worker or Worker(h.services.db, h.services.settings)
    for _ in range(50):
        if await worker.run_once() == 0:
            return worker
        if pause:
            await asyncio.sleep(pause)
    raise AssertionError("the worker never went idle")


async def actions(h: Harness, prefix: str) -> list[Any]:
    async with h.services.db.read() as conn:
        statement = sa.select(audit_log).where(audit_log.c.action.like(prefix + "%"))
        return list((await conn.execute(statement.order_by(audit_log.c.id))).all())


async def test_create_shows_the_secret_once_and_needs_reach(hk: Harness, rx: Receiver) -> None:
    root = hk.root.org_id
    child = (await hk.create_org(root, "Child"))["id"]
    created = await create_webhook(hk, root, rx.url + "/hook", description="provisioning")
    assert created["secret"].startswith("whsec_")
    assert created["include_descendants"] is True and created["enabled"] is True
    hook = created["id"]
    got = await hk.client.get(f"/orgs/{root}/webhooks/{hook}", headers=hk.auth())
    assert got.status_code == 200 and "secret" not in got.json()
    assert got.json()["url"] == rx.url + "/hook"
    listed = await hk.client.get(f"/orgs/{root}/webhooks", headers=hk.auth())
    assert [w["id"] for w in listed.json()["data"]] == [hook]
    assert created["secret"] not in json.dumps(listed.json())
    assert "secret" not in listed.json()["data"][0]
    (entry,) = await actions(hk, "webhook.created")
    assert entry.target_id == hook and created["secret"] not in json.dumps(entry.after)
    # No credentials, a key without the scope, a child's key reaching up: 401, 403, 404.
    assert (await hk.client.get(f"/orgs/{root}/webhooks")).status_code == 401
    reader = await hk.create_key(root, ["orgs:read"])
    assert (
        await hk.client.get(f"/orgs/{root}/webhooks", headers=hk.auth(reader))
    ).status_code == 403
    child_key = await hk.create_key(child, ["webhooks:write"])
    for path in (f"/orgs/{root}/webhooks", f"/orgs/{root}/webhooks/{hook}"):
        assert (await hk.client.get(path, headers=hk.auth(child_key))).status_code == 404
    # The child's key manages the child's webhooks; the root's webhook is not found there.
    response = await hk.client.get(f"/orgs/{child}/webhooks/{hook}", headers=hk.auth(child_key))
    assert response.status_code == 404
    # Bad input names the field.
    bad = await hk.client.post(
        f"/orgs/{root}/webhooks",
        json={"url": rx.url, "event_types": ["Org Created"]},
        headers=hk.auth(),
    )
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "event_types[0]"
    # Update and delete, audited.
    patched = await hk.client.patch(
        f"/orgs/{root}/webhooks/{hook}",
        json={"event_types": ["org.*"], "enabled": False},
        headers=hk.auth(),
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["event_types"] == ["org.*"] and patched.json()["enabled"] is False
    deleted = await hk.client.delete(f"/orgs/{root}/webhooks/{hook}", headers=hk.auth())
    assert deleted.status_code == 204
    assert (
        await hk.client.get(f"/orgs/{root}/webhooks/{hook}", headers=hk.auth())
    ).status_code == 404
    assert [e.action for e in await actions(hk, "webhook.")] == [
        "webhook.created",
        "webhook.updated",
        "webhook.deleted",
    ]


async def test_events_are_delivered_signed_and_logged(hk: Harness, rx: Receiver) -> None:
    root = hk.root.org_id
    created = await create_webhook(
        hk, root, rx.url + "/hook", event_types=["org.created", "credits.allocated"]
    )
    await hk.client.put(f"/orgs/{root}/limits/credits", json={"amount": 1000}, headers=hk.auth())
    child = (await hk.create_org(root, "Child"))["id"]
    allocated = await hk.client.put(
        f"/orgs/{root}/children/{child}/allocations/credits",
        json={"amount": 300},
        headers=hk.auth(),
    )
    assert allocated.status_code == 200, allocated.text
    await drain(hk)
    received = sorted(rx.at("/hook"), key=lambda r: json.loads(r.body)["data"]["sequence"])
    payloads = [r.verifies_with(created["secret"]) for r in received]
    assert [p["type"] for p in payloads] == ["org.created", "credits.allocated"]
    assert payloads[0]["data"]["org_id"] == child
    assert all(r.headers["webhook-id"] == p["id"] for r, p in zip(received, payloads, strict=True))
    assert received[0].headers["user-agent"].startswith("orgplane-webhooks/")
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 44).verify(received[0].body, received[0].headers)
    log = await hk.client.get(
        f"/orgs/{root}/webhooks/{created['id']}/deliveries", headers=hk.auth()
    )
    attempts = log.json()["data"]
    # Sent side by side: logged in the order they were answered.
    assert sorted((a["event_type"], a["attempt"], a["status_code"]) for a in attempts) == [
        ("credits.allocated", 1, 200),
        ("org.created", 1, 200),
    ]
    assert {a["event_id"] for a in attempts} == {p["id"] for p in payloads}
    assert attempts[0]["response_excerpt"] == '{"ok": true}' and attempts[0]["latency_ms"] >= 0
    # Nothing twice: another pass sends nothing.
    await drain(hk)
    assert len(rx.at("/hook")) == 2


async def test_type_filters_and_descendants(hk: Harness, rx: Receiver) -> None:
    root = hk.root.org_id
    child = (await hk.create_org(root, "Child"))["id"]
    await create_webhook(hk, root, rx.url + "/subtree", event_types=["org.*"])
    await create_webhook(hk, root, rx.url + "/own", include_descendants=False)
    await create_webhook(
        hk,
        child,
        rx.url + "/child-updates",
        event_types=["org.updated"],
        include_descendants=False,
    )
    grandchild = (await hk.create_org(child, "Grandchild"))["id"]
    updated = await hk.client.patch(
        f"/orgs/{child}", json={"description": "changed"}, headers=hk.auth()
    )
    assert updated.status_code == 200, updated.text
    await hk.create_key(child, ["orgs:read"])
    await drain(hk)

    def seen(path: str) -> list[tuple[str, str]]:
        # Deliveries go side by side: in the order of the events' sequence.
        sent = sorted(
            (json.loads(r.body) for r in rx.at(path)), key=lambda p: p["data"]["sequence"]
        )
        return [(p["type"], p["data"]["org_id"]) for p in sent]

    assert seen("/subtree") == [("org.created", grandchild), ("org.updated", child)]
    # The root's own events only: its webhook's creation, nothing of the child's.
    assert seen("/own") == [("webhook.created", root)]
    assert seen("/child-updates") == [("org.updated", child)]


async def test_a_child_webhook_sees_no_org_out_of_its_reach(hk: Harness, rx: Receiver) -> None:
    root = hk.root.org_id
    child = (await hk.create_org(root, "Child"))["id"]
    sibling = (await hk.create_org(root, "Sibling"))["id"]
    await create_webhook(hk, child, rx.url + "/child", event_types=["org.*"])
    moved = await hk.client.post(
        f"/orgs/{sibling}/move", json={"parent_id": child}, headers=hk.auth()
    )
    assert moved.status_code == 200, moved.text
    await drain(hk)
    (payload,) = [json.loads(r.body) for r in rx.at("/child")]
    assert payload["type"] == "org.moved" and payload["data"]["org_id"] == sibling
    # The root is out of the child's reach: its id is null, as the child's key would see it.
    assert payload["data"]["before"] == {"parent_id": None}
    assert payload["data"]["after"] == {"parent_id": child}


async def test_failing_receiver_is_retried_with_the_same_id(hk: Harness, rx: Receiver) -> None:
    root = hk.root.org_id
    rx.answers["/down"] = (500, {})
    created = await create_webhook(hk, root, rx.url + "/down", event_types=["org.created"])
    await hk.create_org(root, "Child")
    await drain(hk)
    received = rx.at("/down")
    assert len(received) == 3  # the first attempt and the schedule's two retries
    assert len({r.headers["webhook-id"] for r in received}) == 1
    for r in received:
        r.verifies_with(created["secret"])
    log = await hk.client.get(
        f"/orgs/{root}/webhooks/{created['id']}/deliveries", headers=hk.auth()
    )
    attempts = log.json()["data"]
    assert [(a["attempt"], a["status_code"], a["error"]) for a in attempts] == [
        (3, 500, "HTTP 500"),
        (2, 500, "HTTP 500"),
        (1, 500, "HTTP 500"),
    ]
    assert attempts[0]["response_excerpt"] == "receiver says no"
    async with hk.services.db.read() as conn:
        (status,) = (await conn.execute(sa.select(webhook_deliveries.c.status))).scalars().all()
    assert status == "failed"
    # A page of one, then the next.
    first = await hk.client.get(
        f"/orgs/{root}/webhooks/{created['id']}/deliveries?limit=1", headers=hk.auth()
    )
    after = await hk.client.get(
        f"/orgs/{root}/webhooks/{created['id']}/deliveries?limit=2&cursor={first.json()['next_cursor']}",
        headers=hk.auth(),
    )
    assert [a["attempt"] for a in after.json()["data"]] == [2, 1]


async def test_rotation_signs_with_both_secrets(hk: Harness, rx: Receiver) -> None:
    root = hk.root.org_id
    created = await create_webhook(hk, root, rx.url + "/hook", event_types=["org.created"])
    rotated = await hk.client.post(
        f"/orgs/{root}/webhooks/{created['id']}/rotate_secret",
        json={"overlap_seconds": 3600},
        headers=hk.auth(),
    )
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != created["secret"] and rotated.json()["previous_secret_expires_at"]
    await hk.create_org(root, "Child")
    await drain(hk)
    (received,) = rx.at("/hook")
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    received.verifies_with(created["secret"])
    received.verifies_with(new_secret)
    # Ending the overlap: only the new secret signs.
    await hk.client.post(
        f"/orgs/{root}/webhooks/{created['id']}/rotate_secret",
        json={"overlap_seconds": 0},
        headers=hk.auth(),
    )
    got = await hk.client.get(f"/orgs/{root}/webhooks/{created['id']}", headers=hk.auth())
    assert got.json()["previous_secret_expires_at"] is None
    assert [e.action for e in await actions(hk, "webhook.secret")] == ["webhook.secret_rotated"] * 2


async def test_an_endpoint_failing_for_the_period_is_disabled(db_url: str, rx: Receiver) -> None:
    h = await start_harness(
        db_url,
        webhook_allowed_networks=LOCAL,
        webhook_retry_schedule="0,0,0,0",
        webhook_disable_after_days=0.2 / 86400,
        webhook_delivery="off",
    )
    try:
        root = h.root.org_id
        rx.answers["/down"] = (503, {})
        created = await create_webhook(h, root, rx.url + "/down", event_types=["org.created"])
        await h.create_org(root, "Child")
        await drain(h, pause=0.15)
        got = await h.client.get(f"/orgs/{root}/webhooks/{created['id']}", headers=h.auth())
        assert got.json()["enabled"] is False
        assert "failed" in got.json()["disabled_reason"]
        (entry,) = await actions(h, "webhook.disabled")
        assert entry.actor == "system" and entry.target_id == created["id"]
        # Disabled: nothing more is sent.
        sent = len(rx.at("/down"))
        await h.create_org(root, "Another")
        await drain(h)
        assert len(rx.at("/down")) == sent < 5
    finally:
        await stop_harness(h)


async def test_ssrf_without_the_allow_list(h: Harness, rx: Receiver) -> None:
    root = h.root.org_id
    # Without the allow-list: no loopback, by address or by name, no plain http.
    for url in (rx.url, "https://127.0.0.1/hook", "https://localhost/hook", "http://example.com/"):
        response = await h.client.post(
            f"/orgs/{root}/webhooks", json={"url": url, "event_types": ["*"]}, headers=h.auth()
        )
        assert response.status_code == 400, url
        assert response.json()["errors"][0]["field"] == "url"


async def test_ssrf_with_the_allow_list(hk: Harness, rx: Receiver) -> None:
    # Even with 127.0.0.0/8 allowed: metadata, private, CGNAT, mapped, credentials.
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "https://10.1.2.3/",
        "https://100.64.0.1/",
        "https://[::ffff:10.0.0.1]/",
        "https://[fd00:ec2::254]/",
        "https://user:pw@example.com/",
        "ftp://example.com/",
        "https://example.com:0/",
    ):
        response = await hk.client.post(
            f"/orgs/{hk.root.org_id}/webhooks",
            json={"url": url, "event_types": ["*"]},
            headers=hk.auth(),
        )
        assert response.status_code == 400, url
    # At delivery the address is checked again: a worker without the allow-list refuses the
    # receiver that was allowed when the webhook was created.
    created = await create_webhook(
        hk, hk.root.org_id, rx.url.replace("127.0.0.1", "localhost") + "/hook"
    )
    await hk.create_org(hk.root.org_id, "Child")
    strict = hk.services.settings.model_copy(update={"webhook_allowed_networks": ""})
    await drain(hk, Worker(hk.services.db, strict))
    assert rx.at("/hook") == []
    log = await hk.client.get(
        f"/orgs/{hk.root.org_id}/webhooks/{created['id']}/deliveries", headers=hk.auth()
    )
    errors = {a["error"] for a in log.json()["data"]}
    assert errors and all("loopback" in e for e in errors)


async def test_addresses_refused_after_resolution() -> None:
    allowed = (destinations.ipaddress.ip_network(LOCAL),)
    for url in (
        "http://10.0.0.1/",
        "https://169.254.169.254/",
        "https://[::1]/",
        "http://0.0.0.0/",
    ):
        with pytest.raises(destinations.Refused):
            await destinations.resolve(url, allowed)
    with pytest.raises(destinations.Refused, match="loopback"):
        await destinations.resolve("https://localhost/", ())
    resolved = await destinations.resolve("http://localhost:8080/x", allowed)
    assert resolved.address.is_loopback and resolved.target.host == "localhost"


async def test_redirects_are_not_followed(hk: Harness, rx: Receiver) -> None:
    rx.answers["/moved"] = (302, {"location": rx.url + "/landing"})
    created = await create_webhook(
        hk, hk.root.org_id, rx.url + "/moved", event_types=["org.created"]
    )
    tested = await hk.client.post(
        f"/orgs/{hk.root.org_id}/webhooks/{created['id']}/test", headers=hk.auth()
    )
    assert tested.status_code == 200, tested.text
    result = tested.json()
    assert result["delivered"] is False and result["status_code"] == 302
    assert result["error"] == "redirects are not followed"
    assert len(rx.at("/moved")) == 1 and rx.at("/landing") == []
    (test_request,) = rx.at("/moved")
    sent = test_request.verifies_with(created["secret"])
    assert sent["type"] == "webhook.test"
    # The test event is shaped as every event is, and the answer shows it as sent.
    assert set(sent) == {"id", "type", "timestamp", "data"}
    assert sent["data"]["target_type"] == "webhook" and sent["data"]["target_id"] == created["id"]
    assert sent["data"]["org_id"] == hk.root.org_id and sent["data"]["sequence"] == 0
    assert result["event"] == sent and result["event_id"] == sent["id"]


async def test_redelivery_by_event_and_by_range(hk: Harness, rx: Receiver) -> None:
    root = hk.root.org_id
    created = await create_webhook(hk, root, rx.url + "/hook", event_types=["org.created"])
    hook = created["id"]
    await hk.create_org(root, "A")
    await hk.create_org(root, "B")
    await drain(hk)
    first, second = rx.at("/hook")
    path = f"/orgs/{root}/webhooks/{hook}/redeliver"
    again = await hk.client.post(
        path, json={"event_id": first.headers["webhook-id"]}, headers=hk.auth()
    )
    assert again.status_code == 202 and again.json() == {"queued": 1}
    await drain(hk)
    assert rx.at("/hook")[-1].headers["webhook-id"] == first.headers["webhook-id"]
    rx.at("/hook")[-1].verifies_with(created["secret"])
    now = datetime.now(UTC)
    ranged = await hk.client.post(
        path,
        json={
            "since": (now - timedelta(hours=1)).isoformat(),
            "until": (now + timedelta(minutes=1)).isoformat(),
        },
        headers=hk.auth(),
    )
    assert ranged.json() == {"queued": 2}
    await drain(hk)
    ids = [r.headers["webhook-id"] for r in rx.at("/hook")]
    assert sorted(ids[3:]) == sorted([first.headers["webhook-id"], second.headers["webhook-id"]])
    missing = await hk.client.post(path, json={"event_id": "evt_nope"}, headers=hk.auth())
    assert missing.status_code == 404
    neither = await hk.client.post(path, json={}, headers=hk.auth())
    assert neither.status_code == 400
    assert len(await actions(hk, "webhook.redelivery_requested")) == 2


async def _received(rx: Receiver, path: str) -> None:
    for _ in range(200):
        if rx.at(path):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing reached {path}")


async def attempts_logged(h: Harness) -> int:
    async with h.services.db.read() as conn:
        statement = sa.select(sa.func.count()).select_from(webhook_attempts)
        return int((await conn.execute(statement)).scalar_one())


async def test_a_webhook_deleted_while_its_test_is_sent(hk: Harness, rx: Receiver) -> None:
    """The receiver holds the test's request while the webhook is deleted: the test answers 404
    with what happened, and no attempt is recorded for the webhook that is gone."""
    root = hk.root.org_id
    rx.delays["/slow"] = 1.0
    created = await create_webhook(hk, root, rx.url + "/slow")
    path = f"/orgs/{root}/webhooks/{created['id']}"
    testing = asyncio.create_task(hk.client.post(f"{path}/test", headers=hk.auth()))
    await _received(rx, "/slow")
    assert not testing.done()
    deleted = await hk.client.delete(path, headers=hk.auth())
    assert deleted.status_code == 204
    tested = await testing
    assert tested.status_code == 404, tested.text
    assert tested.headers["content-type"].startswith("application/problem+json")
    assert "deleted while its test event was being sent" in tested.json()["detail"]
    assert await attempts_logged(hk) == 0
    # The deletion is audited as usual; the next test of a live webhook is recorded.
    assert [e.action for e in await actions(hk, "webhook.")] == [
        "webhook.created",
        "webhook.deleted",
    ]
    other = await create_webhook(hk, root, rx.url + "/fast")
    ok = await hk.client.post(f"/orgs/{root}/webhooks/{other['id']}/test", headers=hk.auth())
    assert ok.status_code == 200 and ok.json()["delivered"] is True
    assert await attempts_logged(hk) == 1


async def test_a_webhook_deleted_while_a_delivery_is_sent(hk: Harness, rx: Receiver) -> None:
    """A delivery in flight when its webhook is deleted ends without an error: its attempt and
    the delivery go with the webhook."""
    root = hk.root.org_id
    rx.delays["/slow"] = 1.0
    created = await create_webhook(hk, root, rx.url + "/slow", event_types=["org.created"])
    await hk.create_org(root, "Child")
    worker = Worker(hk.services.db, hk.services.settings)
    try:
        delivering = asyncio.create_task(worker.run_once())
        await _received(rx, "/slow")
        deleted = await hk.client.delete(
            f"/orgs/{root}/webhooks/{created['id']}", headers=hk.auth()
        )
        assert deleted.status_code == 204
        # Two entries read (the webhook's creation, the org's), one delivery sent: no error.
        assert await delivering == 3
    finally:
        await worker.close()
    assert len(rx.at("/slow")) == 1
    assert await attempts_logged(hk) == 0
    assert await deliveries_left(hk) == 0


async def deliveries_left(h: Harness) -> int:
    async with h.services.db.read() as conn:
        statement = sa.select(sa.func.count()).select_from(webhook_deliveries)
        return int((await conn.execute(statement)).scalar_one())
