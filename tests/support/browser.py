"""The console in a real browser: whether Chromium and Playwright are here, a signed-in page, and
looking at a page as people do (a screenshot at each size, axe's accessibility check at each).

Browser tests drive Debian's Chromium (/usr/bin/chromium, or ORGPLANE_TEST_CHROMIUM) through
Playwright for Python; Playwright's own browser downloads are never used. Without them the tests
are skipped loudly, unless ORGPLANE_REQUIRE_BROWSER=1 (CI), which makes them fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from orgplane.core.people.auth import hash_password
from support.auth import PASSWORD, insert_user
from support.harness import Harness

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Page

CHROMIUM = Path(os.environ.get("ORGPLANE_TEST_CHROMIUM", "/usr/bin/chromium"))
REQUIRE_BROWSER = os.environ.get("ORGPLANE_REQUIRE_BROWSER") == "1"
# Git-ignored: every page a browser test visits, at each size.
SCREENSHOTS = Path(__file__).resolve().parents[1] / ".artifacts" / "screenshots"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
# axe's impacts that fail a test; "moderate" and "minor" are reported by axe but tolerated.
FAILING_IMPACTS = ("serious", "critical")
CONSOLE = "/console"
OWNER = "owner@example.com"  # who the ``console`` fixture signs in


def browser_missing() -> str | None:
    """None when the browser tests can run, else what is missing."""
    missing = [
        f"the Python package {package}"
        for package, module in (
            ("playwright", "playwright"),
            ("axe-playwright-python", "axe_playwright_python"),
        )
        if importlib.util.find_spec(module) is None
    ]
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"Chromium at {CHROMIUM} (Debian's packages chromium and chromium-driver)")
    return "; ".join(missing) or None


def skip_or_fail_without_browser() -> None:
    """Skip the calling test or module when the browser tests cannot run, or fail it with
    ORGPLANE_REQUIRE_BROWSER=1; a module calls it before it imports Playwright."""
    missing = browser_missing()
    if missing is None:
        return
    if REQUIRE_BROWSER:
        pytest.fail(
            f"browser tests are required (ORGPLANE_REQUIRE_BROWSER=1) but need {missing}",
            pytrace=False,
        )
    pytest.skip(f"browser tests need {missing}", allow_module_level=True)


@cache
def _password_hash() -> str:
    """PASSWORD hashed as the console hashes it (so signing in does not hash it again), once per
    test process: every argon2 hash costs the suite time."""
    return hash_password(PASSWORD)


async def make_person(h: Harness, email: str, org: str, roles: list[str]) -> None:
    """An active member of ``org`` with ``roles`` who signs in with PASSWORD."""
    await insert_user(h, email, {org: roles}, password_hash=_password_hash())


def violations(response: dict[str, Any]) -> list[str]:
    """axe's serious and critical violations in a run's results, one line per element."""
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {', '.join(map(str, node['target']))}"
        for v in response["violations"]
        if v["impact"] in FAILING_IMPACTS
        for node in v["nodes"]
    ]


@dataclass
class Console:
    """A browser page on the live app, the harness behind it, and where its screenshots go."""

    page: Page
    h: Harness
    folder: Path
    errors: list[str] = field(default_factory=list)
    looked: int = 0

    def __post_init__(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        self.page.on("console", self._console_message)

    def _console_message(self, message: ConsoleMessage) -> None:
        # A page refused by the server also logs "Failed to load resource"; that one is expected.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    async def sign_in(self, email: str, password: str = PASSWORD) -> None:
        """Sign in through the console's form (the page must show it)."""
        await self.page.get_by_label("Email").fill(email)
        await self.page.get_by_label("Password").fill(password)
        await self.page.get_by_role("button", name="Sign in").click()

    async def look(self, name: str) -> None:
        """A screenshot of the page at each size, and axe's check at each: no serious or
        critical violation, and nothing wider than the window (no sideways scrolling)."""
        from axe_playwright_python.async_playwright import Axe

        self.looked += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        found = []
        for size, (width, height) in SIZES.items():
            await self.page.set_viewport_size({"width": width, "height": height})
            await self.page.screenshot(
                path=self.folder / f"{self.looked:02d}-{name}-{size}.png", full_page=True
            )
            results = await Axe().run(self.page)
            found += [f"{size}: {line}" for line in violations(results.response)]
            wide = await self.page.evaluate("document.documentElement.scrollWidth")
            if wide > width:
                found.append(f"{size}: the page is {wide} px wide, wider than the window's {width}")
        width, height = SIZES["desktop"]
        await self.page.set_viewport_size({"width": width, "height": height})
        assert not found, f"axe on {name} ({self.page.url}):\n" + "\n".join(found)


def screenshot_folder(node_name: str) -> Path:
    """A test's own folder (its name with its database), so parallel workers never share one."""
    return SCREENSHOTS / re.sub(r"[^A-Za-z0-9_.-]+", "-", node_name).strip("-")
