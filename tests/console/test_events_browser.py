"""The console's webhooks and alerts tabs in Chromium, on SQLite and on PostgreSQL: a webhook
created, its secret shown once, a test send and an event in its delivery log, a redelivery; an
alert set and a bad threshold refused. Every page visited is looked at (screenshots at both
sizes, axe's check); the HTTP-level details are in test_events_pages.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import pytest

from orgplane.core.webhooks.worker import Worker
from support.browser import Console, skip_or_fail_without_browser
from support.harness import Harness, start_harness, stop_harness
from support.receiver import Receiver, receiver

skip_or_fail_without_browser()

from playwright.async_api import Locator, Page, expect  # noqa: E402


@pytest.fixture
async def h(db_url: str) -> AsyncIterator[Harness]:
    """The harness with the receiver's network allowed; deliveries are run by the test."""
    harness = await start_harness(
        db_url, webhook_allowed_networks="127.0.0.0/8", webhook_delivery="off"
    )
    try:
        yield harness
    finally:
        await stop_harness(harness)


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def _tab(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Organization").get_by_role("link", name=name)


async def _drain(h: Harness) -> None:
    worker = Worker(h.services.db, h.services.settings)
    for _ in range(50):
        if await worker.run_once() == 0:
            return
    raise AssertionError("the worker never went idle")


async def test_a_webhook_from_creation_to_redelivery(
    console: Console, h: Harness, rx: Receiver
) -> None:
    page = console.page
    await _tab(page, "Webhooks").click()
    await expect(page.get_by_role("heading", name="Create a webhook")).to_be_visible()
    await console.look("webhooks")
    await page.get_by_label("URL").fill(rx.url + "/hook")
    await page.get_by_label("Event types").fill("org.*\nwebhook.test")
    await page.get_by_label("Description").fill("provisioning")
    await page.get_by_role("button", name="Create webhook").click()
    secret = page.get_by_label("Signing secret")
    await expect(secret).to_have_value(re.compile(r"^whsec_"))
    await expect(page.get_by_role("button", name="Copy")).to_be_visible()
    await console.look("webhook-created")
    # Shown once: the list, loaded again, has no secret.
    await page.goto(page.url)
    await expect(page.get_by_role("link", name=rx.url + "/hook")).to_be_visible()
    await expect(page.get_by_label("Signing secret")).to_have_count(0)
    await page.get_by_role("link", name=rx.url + "/hook").click()
    await expect(page.get_by_role("heading", name=re.compile("^Webhook whk_"))).to_be_visible()
    hook_page = page.url
    await page.get_by_role("button", name="Send a test event").click()
    await expect(page.get_by_role("heading", name="Test event delivered")).to_be_visible()
    log = page.get_by_role("region", name="Delivery log")
    await expect(log.get_by_role("row").filter(has_text="webhook.test")).to_have_count(1)
    await console.look("webhook-tested")
    # An event of the org, delivered by the worker, appears in the log; redeliver it.
    await h.create_org(h.root.org_id, "Acme EU")
    await _drain(h)
    event = rx.at("/hook")[-1].headers["webhook-id"]
    await page.goto(hook_page)
    row = log.get_by_role("row").filter(has_text="org.created")
    await expect(row).to_have_count(1)
    await row.get_by_role("button", name=f"Redeliver {event}").click()
    await expect(page.get_by_role("status")).to_have_text("1 event queued for delivery again.")
    await console.look("webhook-redelivered")
    await _drain(h)
    assert [r.headers["webhook-id"] for r in rx.at("/hook")][-2:] == [event, event]
    await page.goto(hook_page)
    await expect(log.get_by_role("row").filter(has_text="org.created")).to_have_count(2)


async def test_alert_thresholds_are_set_and_a_bad_one_refused(console: Console) -> None:
    page = console.page
    await _tab(page, "Alerts").click()
    meter = page.get_by_role("region", name=re.compile(r"^operations\b"))
    thresholds = meter.get_by_label("Thresholds (%)")
    await expect(thresholds).to_have_value("50, 80, 100")
    await console.look("alerts")
    await thresholds.fill("90, 50")
    await meter.get_by_label("Measured on").select_option("subtree")
    await meter.get_by_role("button", name="Set the alert on operations").click()
    await expect(page.get_by_role("status")).to_have_text("Alert on operations saved.")
    await expect(meter.get_by_text("50%: armed")).to_be_visible()
    await expect(meter.get_by_text("90%: armed")).to_be_visible()
    await expect(meter.get_by_label("Measured on")).to_have_value("subtree")
    await meter.get_by_label("Thresholds (%)").fill("50, 2000")
    await meter.get_by_role("button", name="Save on operations").click()
    await expect(meter.get_by_role("alert")).to_have_text("thresholds[1]: must be from 1 to 1000")
    await expect(meter.get_by_label("Thresholds (%)")).to_have_value("50, 2000")
    await console.look("alert-refused")
