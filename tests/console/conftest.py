"""Browser fixtures: one Chromium per test process (each pytest-xdist worker has its own), a new
context per test (cookies of its own), on the test's app served by ``live``.

Skipped loudly without Chromium or Playwright (see the report header and the summary), failed
instead with ORGPLANE_REQUIRE_BROWSER=1; support/browser.py says what is looked for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from support.browser import (
    CHROMIUM,
    CONSOLE,
    OWNER,
    SIZES,
    Console,
    make_person,
    screenshot_folder,
    skip_or_fail_without_browser,
)
from support.harness import Harness, LiveServer

if TYPE_CHECKING:
    from playwright.async_api import Browser


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    skip_or_fail_without_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def visitor(
    request: pytest.FixtureRequest, browser: Browser, live: LiveServer, h: Harness
) -> AsyncIterator[Console]:
    """A page of a fresh browser context on the live app, nobody signed in."""
    width, height = SIZES["desktop"]
    context = await browser.new_context(
        base_url=live.url, viewport={"width": width, "height": height}
    )
    page = await context.new_page()
    console = Console(page=page, h=h, folder=screenshot_folder(request.node.name))
    try:
        yield console
        assert not console.errors, "the page reported errors:\n" + "\n".join(console.errors)
    finally:
        await context.close()


@pytest.fixture
async def console(visitor: Console, h: Harness) -> Console:
    """The same page, signed in through the form as an owner of the root org (on its page)."""
    await make_person(h, OWNER, h.root.org_id, ["owner"])
    await visitor.page.goto(CONSOLE)
    await visitor.sign_in(OWNER)
    await visitor.page.wait_for_url(f"**{CONSOLE}/orgs/{h.root.org_id}")
    return visitor
