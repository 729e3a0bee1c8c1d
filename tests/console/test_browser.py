"""The console in Chromium, on SQLite and on PostgreSQL: what a person sees and does.

Each test signs in through the form (the ``console`` fixture) or starts signed out
(``visitor``), finds things by their role and accessible name, and looks at every page it visits:
a screenshot at 1280x800 and at 390x844 (tests/.artifacts/screenshots/), and axe's check at both
sizes, which fails on any serious or critical violation. The HTTP-level details (cookies,
status codes, CSRF tokens) are in test_pages.py.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from support.auth import PASSWORD
from support.browser import CONSOLE, OWNER, Console, make_person, skip_or_fail_without_browser
from support.harness import Harness
from support.mfa import code_at, code_now

skip_or_fail_without_browser()

from playwright.async_api import Dialog, Page, Request, expect  # noqa: E402


async def _family(h: Harness, limit: int = 1_000_000) -> dict[str, str]:
    """Root with a pool of ``limit`` operations, Acme EU (with Acme EU Berlin) and Acme US."""
    response = await h.client.put(
        f"/orgs/{h.root.org_id}/limits/operations", json={"amount": limit}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    eu = await h.create_org(h.root.org_id, "Acme EU", plan="pro", deployment="eu")
    berlin = await h.create_org(eu["id"], "Acme EU Berlin")
    us = await h.create_org(h.root.org_id, "Acme US")
    return {"eu": eu["id"], "berlin": berlin["id"], "us": us["id"]}


async def _use(h: Harness, org: str, quantity: int) -> None:
    """``quantity`` operations consumed by ``org`` now."""
    event = {"meter": "operations", "quantity": quantity, "idempotency_key": f"use-{org}",
             "timestamp": datetime.now(UTC).isoformat()}  # fmt: skip
    response = await h.client.post(f"/orgs/{org}/usage", json={"events": [event]}, headers=h.auth())
    assert response.status_code in (200, 201, 202), response.text


async def _org(h: Harness, org: str) -> dict[str, Any]:
    response = await h.client.get(f"/orgs/{org}", headers=h.auth())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _tab(page: Page, name: str) -> Any:
    return page.get_by_role("navigation", name="Organization").get_by_role("link", name=name)


async def test_signing_in_and_out(visitor: Console, h: Harness) -> None:
    page = visitor.page
    await make_person(h, OWNER, h.root.org_id, ["owner"])
    await page.goto("/")
    await expect(page).to_have_url(re.compile(rf"{CONSOLE}/sign-in\?next="))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    await visitor.look("sign-in")

    await visitor.sign_in(OWNER, "not the password")
    await expect(page.get_by_role("alert")).to_have_text(
        "The email or password is not right, or the account is locked."
    )
    await expect(page.get_by_label("Email")).to_have_value(OWNER)
    await expect(page.get_by_label("Password")).to_have_value("")
    await visitor.look("sign-in-refused")

    await visitor.sign_in(OWNER)
    await expect(page).to_have_url(re.compile(rf"{CONSOLE}/orgs/{h.root.org_id}$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Root")
    await expect(page.get_by_role("navigation", name="Breadcrumb")).to_have_text("Root")
    await expect(_tab(page, "Overview")).to_have_attribute("aria-current", "page")
    for tab in ("Consumption", "Allocations", "API keys", "Audit trail", "Access log"):
        await expect(_tab(page, tab)).to_be_visible()
    await visitor.look("overview")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(rf"{CONSOLE}/sign-in$"))
    await page.goto(f"{CONSOLE}/tree")
    await expect(page).to_have_url(re.compile(rf"{CONSOLE}/sign-in\?next={CONSOLE}/tree$"))
    await visitor.sign_in(OWNER)
    await expect(page).to_have_url(re.compile(rf"{CONSOLE}/tree$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Tree")


async def test_the_tree_loads_a_level_when_it_is_opened(console: Console, h: Harness) -> None:
    ids = await _family(h)
    page = console.page
    levels: list[str] = []

    def record(request: Request) -> None:
        if request.url.endswith("/children"):
            levels.append(request.url.rsplit("/", 2)[-2])

    page.on("request", record)
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Tree").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Tree")
    await expect(page.get_by_role("link", name="Acme EU", exact=True)).to_be_visible()
    await expect(page.get_by_role("link", name="Acme US")).to_be_visible()
    # The next level is not on the page until its parent is opened.
    await expect(page.get_by_role("link", name="Acme EU Berlin")).to_have_count(0)
    assert levels == []

    eu = page.get_by_text("Children of Acme EU", exact=True)
    await eu.focus()
    await page.keyboard.press("Enter")  # the keyboard opens a level
    berlin = page.get_by_role("link", name="Acme EU Berlin")
    await expect(berlin).to_be_visible()
    assert levels == [ids["eu"]]
    await console.look("tree-opened")

    await page.get_by_text("Children of Acme EU Berlin", exact=True).click()
    in_berlin = page.get_by_role("listitem").filter(has=berlin).last
    await expect(in_berlin.get_by_role("listitem")).to_have_text("No children.")
    assert levels == [ids["eu"], ids["berlin"]]
    # Closed and opened again, a level is not loaded twice.
    await eu.click()
    await expect(berlin).to_be_hidden()
    await eu.click()
    await expect(berlin).to_be_visible()
    assert levels == [ids["eu"], ids["berlin"]]

    await berlin.click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Acme EU Berlin")
    trail = page.get_by_role("navigation", name="Breadcrumb")
    await expect(trail.get_by_role("listitem")).to_have_text(["Root", "Acme EU", "Acme EU Berlin"])
    await console.look("berlin")


async def test_a_long_level_shows_more_children_on_request(console: Console, h: Harness) -> None:
    for n in range(53):
        await h.create_org(h.root.org_id, f"Branch {n:02d}")
    page = console.page
    await page.goto(f"{CONSOLE}/tree")
    branches = page.get_by_role("link", name=re.compile(r"^Branch \d\d$"))
    await expect(branches).to_have_count(50)  # a level is loaded 50 at a time
    more = page.get_by_role("link", name="More…")
    await more.focus()
    await page.keyboard.press("Enter")
    await expect(branches).to_have_count(53)
    await expect(more).to_have_count(0)
    await expect(page).to_have_url(re.compile(rf"{CONSOLE}/tree$"))  # loaded in place
    names = await branches.all_inner_texts()
    assert names == [f"Branch {n:02d}" for n in range(53)]
    await console.look("tree-more")


async def test_search_finds_children_by_name(console: Console, h: Harness) -> None:
    await _family(h)
    page = console.page
    await page.reload()
    children = page.get_by_role("table", name="Children of Root")
    await expect(children.get_by_role("row")).to_have_count(3)  # the header and two children

    search = page.get_by_role("search")
    await search.get_by_label("Search by name").fill("us")
    await search.get_by_role("button", name="Search").click()
    await expect(page).to_have_url(re.compile(r"\?q=us$"))
    await expect(children.get_by_role("rowheader")).to_have_text(["Acme US"])
    await expect(search.get_by_label("Search by name")).to_have_value("us")
    await console.look("search-found")

    await search.get_by_label("Search by name").fill("nowhere")
    await search.get_by_role("button", name="Search").click()
    await expect(page.get_by_text("No child's name contains “nowhere”.")).to_be_visible()
    await expect(children).to_have_count(0)


async def test_an_allocation_changes_the_pool_and_the_chart(console: Console, h: Harness) -> None:
    ids = await _family(h)
    await _use(h, ids["eu"], 4_200)
    page = console.page
    await page.goto(f"{CONSOLE}/orgs/{ids['eu']}/consumption")
    chart = page.get_by_role("img", name=re.compile("consumed so far"))
    await expect(chart).to_have_accessible_name(
        re.compile(r"^4,200 consumed so far this month; at this pace")
    )
    await expect(chart.locator("line.limit")).to_have_count(0)
    await console.look("consumption-before")

    await page.goto(f"{CONSOLE}/orgs/{h.root.org_id}")
    await _tab(page, "Allocations").click()
    pool = page.get_by_role("region", name="operations")
    await expect(pool.get_by_text(re.compile("^Pool:"))).to_have_text(
        "Pool: 1,000,000 operations · handed to children 0 · available 1,000,000"
        " · allocations are multiples of 10,000"
    )
    await pool.get_by_label("New operations allocation for Acme EU").fill("200,000")
    row = pool.get_by_role("row", name=re.compile("^Acme EU"))
    await row.get_by_role("button", name="Set").click()
    await expect(page.get_by_role("status")).to_have_text("Allocation changed.")
    await expect(pool.get_by_text(re.compile("^Pool:"))).to_have_text(
        "Pool: 1,000,000 operations · handed to children 200,000 · available 800,000"
        " · allocations are multiples of 10,000"
    )
    await expect(row.get_by_role("cell").first).to_have_text("200,000")
    await expect(pool.get_by_label("New operations allocation for Acme EU")).to_have_value("200000")
    await console.look("allocations-changed")

    await row.get_by_role("link", name="Acme EU").click()
    await _tab(page, "Consumption").click()
    await expect(chart).to_have_accessible_name(
        re.compile(r"^4,200 consumed so far this month of an allocation of 200,000;")
    )
    await expect(chart.locator("line.limit")).to_have_count(1)
    await console.look("consumption-after")


async def test_a_refused_allocation_shows_the_rule(console: Console, h: Harness) -> None:
    await _family(h)
    page = console.page
    await page.goto(f"{CONSOLE}/orgs/{h.root.org_id}/allocations")
    pool = page.get_by_role("region", name="operations")
    field = pool.get_by_label("New operations allocation for Acme US")
    await field.fill("12345")
    await pool.get_by_role("row", name=re.compile("^Acme US")).get_by_role("button").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "amount: 12345 is not a multiple of the 'operations' meter's step (10000)"
    )
    await expect(field).to_have_value("12345")  # the person's entry stays to be corrected
    await expect(pool.get_by_text(re.compile("available"))).to_contain_text("available 1,000,000")
    await console.look("allocation-refused-step")

    await field.fill("5,000,000")
    await pool.get_by_role("row", name=re.compile("^Acme US")).get_by_role("button").click()
    await expect(page.get_by_role("alert")).to_have_text(
        f"organization '{h.root.org_id}' has 1000000 operations available; "
        "this allocation needs 5000000 more"
    )
    await console.look("allocation-refused-pool")
    credits = await h.client.get(f"/orgs/{h.root.org_id}/credits", headers=h.auth())
    root = next(m for m in credits.json()["meters"] if m["meter"] == "operations")
    assert root["allocated"] == 0


async def test_a_key_is_shown_once_then_revoked(console: Console, h: Harness) -> None:
    page = console.page
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await _tab(page, "API keys").click()
    keys = page.get_by_role("table").get_by_role("rowheader")
    await expect(keys).to_have_text(["admin"])  # the key bootstrap made
    await console.look("keys")
    await page.get_by_label("Name").fill("ci deploy")
    await page.get_by_role("checkbox", name=re.compile("^orgs:read")).check()
    await page.get_by_role("button", name="Create key").click()

    shown = page.get_by_role("region", name="Key “ci deploy” created")
    await expect(shown).to_contain_text("it is shown this once")
    secret = await shown.get_by_label("Secret").input_value()
    assert re.fullmatch(r"opk_[0-9A-Za-z]+", secret)
    await shown.get_by_role("button", name="Copy").click()
    await expect(shown.get_by_role("button", name="Copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == secret
    await console.look("key-created")
    works = await h.client.get(f"/orgs/{h.root.org_id}", headers=h.auth(secret))
    assert works.status_code == 200

    await _tab(page, "API keys").click()
    await expect(page.get_by_role("region", name=re.compile("created"))).to_have_count(0)
    assert secret not in await page.content()
    row = page.get_by_role("row", name=re.compile("^ci deploy"))
    await expect(row.get_by_role("cell").nth(2)).to_have_text("orgs:read")
    await expect(row.get_by_role("cell").first).to_have_text(re.compile(r"^key_[0-9a-z]+$"))
    key_id = await row.get_by_role("cell").first.text_content()
    await console.look("keys-listed")

    asked: list[str] = []

    async def answer(dialog: Dialog, accept: bool) -> None:
        asked.append(dialog.message)
        await (dialog.accept() if accept else dialog.dismiss())

    page.once("dialog", lambda dialog: answer(dialog, accept=False))
    await row.get_by_role("button", name="Revoke ci deploy").click()
    await expect(row).to_be_visible()
    assert asked == ["Revoke the key “ci deploy”? Anything using it stops working at once."]
    page.once("dialog", lambda dialog: answer(dialog, accept=True))
    await row.get_by_role("button", name="Revoke ci deploy").click()
    await expect(page.get_by_role("status")).to_have_text(f"Key {key_id} revoked.")
    await expect(page.get_by_role("row", name=re.compile("^ci deploy"))).to_have_count(0)
    await console.look("key-revoked")
    refused = await h.client.get(f"/orgs/{h.root.org_id}", headers=h.auth(secret))
    assert refused.status_code == 401


async def test_a_change_is_found_in_the_audit_trail(console: Console, h: Harness) -> None:
    page = console.page
    edit = page.get_by_role("region", name="Edit")
    await edit.get_by_label("Description").fill("Edited in the browser")
    await edit.get_by_label("Tags").fill("tier:gold, region:eu")
    await edit.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("Saved.")
    details = page.get_by_role("region", name="Details")
    await expect(details.locator(".tag")).to_have_text(["region:eu", "tier:gold"])
    await console.look("overview-saved")

    await _tab(page, "Audit trail").click()
    await page.get_by_label("Action").fill("org.updated")
    await page.get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(re.compile(r"action=org.updated"))
    rows = page.get_by_role("row").filter(has=page.get_by_role("cell", name="org.updated"))
    await expect(rows).to_have_count(1)
    await expect(rows.get_by_role("cell").nth(1)).to_have_text(re.compile(r"^user:"))
    await expect(rows.get_by_role("cell").nth(3)).to_have_text("console")  # the surface
    await expect(rows.get_by_role("cell").nth(5)).to_contain_text("Edited in the browser")
    await console.look("audit-filtered")

    async with page.expect_download() as download:
        await page.get_by_role("link", name="Export CSV").click()
    exported = (await (await download.value).path()).read_text()
    assert "org.updated" in exported and "Edited in the browser" in exported

    await _tab(page, "Access log").click()
    await page.get_by_label("Status").select_option("SUCCESS")
    await page.get_by_role("button", name="Filter").click()
    logins = page.get_by_role("row").filter(has=page.get_by_role("cell", name="LOGIN"))
    await expect(logins.first.get_by_role("cell").nth(3)).to_have_text("SUCCESS")
    await console.look("access-log")


async def test_a_concurrent_edit_gets_the_conflict_message(console: Console, h: Harness) -> None:
    page = console.page
    edit = page.get_by_role("region", name="Edit")
    await edit.get_by_label("Name").fill("Mine")
    # Someone else changes the org through the API while the form is open.
    theirs = await h.client.patch(
        f"/orgs/{h.root.org_id}", json={"description": "Theirs"}, headers=h.auth()
    )
    assert theirs.status_code == 200, theirs.text
    await edit.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "Someone changed this organization while you were editing it. The page now shows their "
        "version: apply your change to it again."
    )
    await expect(edit.get_by_label("Name")).to_have_value("Root")
    await expect(edit.get_by_label("Description")).to_have_value("Theirs")
    await console.look("edit-conflict")
    org = await _org(h, h.root.org_id)
    assert (org["name"], org["description"]) == ("Root", "Theirs")

    # Applied again to their version, the change goes through.
    await edit.get_by_label("Name").fill("Mine")
    await edit.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("Saved.")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Mine")
    org = await _org(h, h.root.org_id)
    assert (org["name"], org["description"]) == ("Mine", "Theirs")


async def test_a_form_without_its_csrf_token_is_refused(console: Console, h: Harness) -> None:
    page = console.page
    edit = page.get_by_role("region", name="Edit")
    await edit.get_by_label("Name").fill("Forged")
    await edit.locator("input[name=_csrf_token]").evaluate("field => field.remove()")
    async with page.expect_response(lambda r: r.request.method == "POST") as posted:
        await edit.get_by_role("button", name="Save").click()
    assert (await posted.value).status == 403
    await expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    await expect(page.get_by_role("alert")).to_have_text(
        "This form was not sent from a page of this console, or the page is out of date. "
        "Go back, reload the page and try again."
    )
    await console.look("csrf-refused")
    assert (await _org(h, h.root.org_id))["name"] == "Root"


async def test_an_org_out_of_reach_shows_not_found(console: Console, h: Harness) -> None:
    page = console.page
    response = await page.goto(f"{CONSOLE}/orgs/nowhere1234")
    assert response is not None and response.status == 404
    await expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    await expect(page.get_by_role("alert")).to_have_text("organization 'nowhere1234' not found")
    await console.look("not-found")
    await page.get_by_role("link", name="Back to the console").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Root")


async def test_an_invited_person_accepts_signs_in_and_sees_only_their_subtree(
    console: Console, h: Harness
) -> None:
    ids = await _family(h)
    page = console.page
    await page.goto(f"{CONSOLE}/orgs/{ids['eu']}")
    await _tab(page, "People").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Acme EU")
    await expect(page.get_by_text("No members.")).to_be_visible()
    await console.look("people")
    invite = page.get_by_role("region", name="Invite someone")
    await invite.get_by_label("Email").fill("new@example.com")
    await expect(invite.get_by_role("checkbox", name=re.compile("^Standard"))).to_be_checked()
    await invite.get_by_role("button", name="Invite").click()
    invited = page.get_by_role("region", name="new@example.com is invited")
    link = await invited.get_by_label("Invitation link").input_value()
    assert re.fullmatch(rf"{re.escape(page.url.split(CONSOLE)[0])}{CONSOLE}/invitations/\S+", link)
    await console.look("invited")

    await page.get_by_role("button", name="Sign out").click()
    await page.goto(link)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Welcome to orgplane")
    await page.get_by_label("Password").fill("too short")
    await page.get_by_role("button", name="Accept and set password").click()
    # The browser itself refuses a password shorter than the form's 12 characters.
    assert await page.get_by_label("Password").evaluate("field => field.validity.tooShort")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Welcome to orgplane")
    await console.look("accept")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Accept and set password").click()
    await expect(page.get_by_role("status")).to_have_text(
        "Your invitation is accepted: sign in with your email and new password."
    )
    await console.look("accepted")

    # The invitee lands on the org they were invited to, and sees nothing above or beside it.
    await console.sign_in("new@example.com")
    await expect(page).to_have_url(re.compile(rf"{CONSOLE}/orgs/{ids['eu']}$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Acme EU")
    trail = page.get_by_role("navigation", name="Breadcrumb")
    await expect(trail.get_by_role("listitem")).to_have_text(["Acme EU"])
    await expect(page.get_by_role("table", name="Children of Acme EU").get_by_role("rowheader"))\
        .to_have_text(["Acme EU Berlin"])  # fmt: skip
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Tree").click()
    await expect(page.get_by_role("link", name="Acme EU", exact=True)).to_be_visible()
    await expect(page.get_by_role("link", name="Root")).to_have_count(0)
    await expect(page.get_by_role("link", name="Acme US")).to_have_count(0)
    await console.look("invitee-tree")
    for hidden in (h.root.org_id, ids["us"]):
        response = await page.goto(f"{CONSOLE}/orgs/{hidden}")
        assert response is not None and response.status == 404
        await expect(page.get_by_role("heading", level=1)).to_have_text("Not found")


async def test_moving_deleting_and_restoring_an_org(console: Console, h: Harness) -> None:
    ids = await _family(h)
    page = console.page
    await page.goto(f"{CONSOLE}/orgs/{ids['eu']}")
    move = page.get_by_label("New parent's id")
    await move.fill(ids["berlin"])
    await page.get_by_role("button", name="Move").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "an organization cannot be moved under itself or one of its descendants"
    )
    await expect(page.get_by_label("New parent's id")).to_have_value(ids["berlin"])
    await console.look("move-refused")

    await page.goto(f"{CONSOLE}/orgs/{ids['berlin']}")
    await page.get_by_label("New parent's id").fill(ids["us"])
    await page.get_by_role("button", name="Move").click()
    await expect(page.get_by_role("status")).to_have_text("Moved.")
    trail = page.get_by_role("navigation", name="Breadcrumb")
    await expect(trail.get_by_role("listitem")).to_have_text(["Root", "Acme US", "Acme EU Berlin"])

    await trail.get_by_role("link", name="Acme US").click()
    await page.get_by_role("link", name="Delete Acme US…").click()
    await expect(page.get_by_role("heading", name="Delete Acme US?")).to_be_visible()
    await expect(page.get_by_role("main")).to_contain_text("deletes its 1 descendant organization")
    await expect(page.get_by_role("main")).to_contain_text("Acme EU Berlin")
    await console.look("delete")
    await page.get_by_role("button", name="Delete Acme US and its descendants").click()
    await expect(page.get_by_role("status")).to_have_text("Deleted. It can be restored below.")
    await expect(page.get_by_role("heading", name="Deleted children")).to_be_visible()
    await console.look("deleted-children")
    await page.get_by_role("button", name="Restore Acme US").click()
    await expect(page.get_by_role("status")).to_have_text("Restored.")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Acme US")
    assert (await _org(h, ids["berlin"]))["status"] == "active"


async def test_two_factor_sign_in_is_set_up_on_the_account_page(
    console: Console, h: Harness
) -> None:
    page = console.page
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Account").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your account")
    await console.look("account")
    await page.get_by_role("button", name="Set up two-factor sign-in").click()
    key = page.get_by_role("figure", name=re.compile(r"^Key: "))
    await expect(key.locator("svg")).to_be_visible()  # the QR code, drawn on the server
    found = re.search(r"Key: (\S+)", await key.inner_text())
    assert found, await key.inner_text()
    await console.look("account-enrol")
    await page.get_by_label("Code from your app").fill(code_now(found.group(1)))
    await page.get_by_role("button", name="Turn on").click()
    await expect(page.get_by_role("status")).to_contain_text("Two-factor sign-in is on.")
    codes = (
        await page.get_by_role("region", name="Two-factor sign-in")
        .get_by_role("listitem")
        .all_inner_texts()
    )
    assert len(codes) == 10
    await console.look("account-recovery-codes")

    secret = found.group(1)
    await page.get_by_role("button", name="Sign out").click()
    await console.sign_in(OWNER)
    await expect(page.get_by_role("alert")).to_contain_text("Enter the current code")
    await expect(page.get_by_label("Code")).to_be_focused()
    await console.look("sign-in-code")
    # A wrong code is refused; the next time step's code (the enrolment spent the current one)
    # signs in, and the same code a second time is refused as used.
    await _sign_in_with_code(console, "000000")
    await expect(page.get_by_role("alert")).to_contain_text("That code is not right")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    code = code_at(secret, 1)
    await _sign_in_with_code(console, code)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Root")
    await page.get_by_role("button", name="Sign out").click()
    await console.sign_in(OWNER)
    await _sign_in_with_code(console, code)
    await expect(page.get_by_role("alert")).to_contain_text("used already")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    await console.look("sign-in-code-used")
    # A recovery code stands in for the app, once.
    await _sign_in_with_code(console, codes[0])
    await expect(page.get_by_role("heading", level=1)).to_have_text("Root")

    await page.goto(f"{CONSOLE}/account")
    await expect(page.get_by_role("main")).to_contain_text("9 recovery codes left")
    await page.get_by_label("A current code or a recovery code").fill(codes[1])
    await page.get_by_role("button", name="Turn off").click()
    await expect(page.get_by_role("status")).to_have_text("Two-factor sign-in is off.")


async def _sign_in_with_code(console: Console, code: str) -> None:
    """The sign-in form filled again, as the page asks after a missing or refused code."""
    page = console.page
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("Code").fill(code)
    await page.get_by_role("button", name="Sign in").click()
