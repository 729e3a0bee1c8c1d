"""The console over real HTTP through the app: sign-in, the pages, the forms and their refusals.

Browser tests (tests/console/test_browser.py) walk the same flows in Chromium; these check
what HTTP alone can: cookies, CSRF, status codes, and what each page shows and hides.
"""

from __future__ import annotations

import html
import re

import httpx

from orgplane.core.bootstrap import create_root_with_admin_key
from support import mfa as mfa_support
from support.harness import Harness
from support.people import PASSWORD, make_user

CONSOLE = "/console"


def _etag(page: httpx.Response) -> str:
    found = re.search(r'name="etag" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return html.unescape(found.group(1))


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


async def _signed_in(h: Harness, email: str = "owner@example.com", org: str | None = None,
                     roles: list[str] | None = None) -> httpx.AsyncClient:  # fmt: skip
    """A client of its own (its own cookies) signed in as a new member of ``org``."""
    await make_user(h, org or h.root.org_id, email, roles or ["owner"])
    client = httpx.AsyncClient(transport=h.client._transport, base_url=str(h.client.base_url))
    form = await client.get(f"{CONSOLE}/sign-in")
    response = await client.post(
        f"{CONSOLE}/sign-in",
        data={"email": email, "password": PASSWORD, "next": "", "_csrf_token": _csrf(form)},
    )
    assert response.status_code == 303, response.text
    return client


async def test_the_front_door_leads_to_the_sign_in_page(h: Harness) -> None:
    response = await h.client.get("/")
    assert response.status_code in (301, 302, 307, 308)
    assert response.headers["location"] == CONSOLE
    response = await h.client.get(CONSOLE)
    assert response.status_code in (302, 303, 307)
    assert response.headers["location"].startswith(f"{CONSOLE}/sign-in?next=")
    page = await h.client.get(f"{CONSOLE}/sign-in")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert '<label for="email">' in page.text


async def test_signing_in_sets_an_httponly_lax_cookie_and_shows_the_org(h: Harness) -> None:
    client = await _signed_in(h)
    cookie = next(c for c in client.cookies.jar if c.name == "orgplane_session")
    assert cookie.path == CONSOLE
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite", "").lower() == "lax"
    assert not cookie.secure
    home = await client.get(CONSOLE)
    assert home.headers["location"] == f"{CONSOLE}/orgs/{h.root.org_id}"
    page = await client.get(home.headers["location"])
    assert page.status_code == 200, page.text
    assert "<h1>Root</h1>" in page.text


async def test_a_wrong_password_is_refused_on_the_form(h: Harness) -> None:
    await make_user(h, h.root.org_id, "owner@example.com", ["owner"])
    form = await h.client.get(f"{CONSOLE}/sign-in")
    response = await h.client.post(
        f"{CONSOLE}/sign-in",
        data={"email": "owner@example.com", "password": "wrong", "_csrf_token": _csrf(form)},
    )
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert "not right" in response.text
    assert "orgplane_session" not in response.cookies


async def test_a_form_without_its_csrf_token_is_refused(h: Harness) -> None:
    client = await _signed_in(h)
    response = await client.post(
        f"{CONSOLE}/orgs/{h.root.org_id}", data={"name": "Forged", "etag": ""}
    )
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "This form was not sent from a page of this console" in response.text
    org = await h.client.get(f"/orgs/{h.root.org_id}", headers=h.auth())
    assert org.json()["name"] == "Root"
    missing = await client.get(f"{CONSOLE}/no/such/page")
    assert missing.status_code == 404
    assert "There is no such page in the console" in missing.text


async def test_a_concurrent_edit_gets_the_conflict_message(h: Harness) -> None:
    client = await _signed_in(h)
    page = await client.get(f"{CONSOLE}/orgs/{h.root.org_id}")
    # Someone else changes the org through the API in the meantime.
    changed = await h.client.patch(
        f"/orgs/{h.root.org_id}", json={"description": "theirs"}, headers=h.auth()
    )
    assert changed.status_code == 200
    response = await client.post(
        f"{CONSOLE}/orgs/{h.root.org_id}",
        data={"name": "Mine", "description": "", "tags": "", "etag": _etag(page),
              "_csrf_token": _csrf(page)},
    )  # fmt: skip
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "Someone changed this organization" in response.text
    assert ">theirs</textarea>" in response.text  # their version, as the message says
    org = await h.client.get(f"/orgs/{h.root.org_id}", headers=h.auth())
    assert org.json()["name"] == "Root"
    assert org.json()["description"] == "theirs"


async def _pool(h: Harness, amount: int = 1_000_000) -> dict[str, str]:
    """A root limit of ``amount`` operations and two children: their ids."""
    response = await h.client.put(
        f"/orgs/{h.root.org_id}/limits/operations", json={"amount": amount}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    eu = await h.create_org(h.root.org_id, "Acme EU", tags=["region:eu"])
    us = await h.create_org(h.root.org_id, "Acme US")
    return {"eu": eu["id"], "us": us["id"]}


async def test_an_allocation_changes_the_pool_and_a_refusal_names_the_rule(h: Harness) -> None:
    children = await _pool(h)
    client = await _signed_in(h)
    url = f"{CONSOLE}/orgs/{h.root.org_id}/allocations"
    page = await client.get(url)
    assert page.status_code == 200, page.text
    assert 'data-available="operations">1,000,000<' in page.text
    assert "multiples of <strong>10,000</strong>" in page.text
    form = {"child": children["eu"], "meter": "operations", "_csrf_token": _csrf(page)}
    done = await client.post(url, data={**form, "amount": "200,000"})
    assert done.status_code == 303, done.text
    page = await client.get(done.headers["location"])
    assert 'data-available="operations">800,000<' in page.text
    refused = await client.post(url, data={**form, "amount": "12345"})
    assert refused.status_code == 400, refused.text
    assert "is not a multiple of the &#39;operations&#39; meter&#39;s step (10000)" in refused.text
    too_much = await client.post(url, data={**form, "amount": "5000000"})
    assert too_much.status_code in (409, 422), too_much.text
    assert 'role="alert"' in too_much.text
    credits = await h.client.get(f"/orgs/{children['eu']}/credits", headers=h.auth())
    eu = next(m for m in credits.json()["meters"] if m["meter"] == "operations")
    assert eu["limit"] == 200_000


async def test_a_key_is_shown_once_and_revoked(h: Harness) -> None:
    client = await _signed_in(h)
    url = f"{CONSOLE}/orgs/{h.root.org_id}/keys"
    page = await client.get(url)
    created = await client.post(
        url, data={"name": "ci", "scopes": ["orgs:read"], "_csrf_token": _csrf(page)}
    )
    assert created.status_code == 201, created.text
    secret = re.search(r'value="(opk_[0-9A-Za-z]+)" data-secret', created.text)
    assert secret, created.text
    works = await h.client.get(f"/orgs/{h.root.org_id}", headers=h.auth(secret.group(1)))
    assert works.status_code == 200
    listed = await client.get(url)
    assert secret.group(1) not in listed.text
    row = next(r for r in listed.text.split("<tr>") if '<th scope="row">ci</th>' in r)
    key_id = re.search(r"/keys/(key_[0-9a-z]+)/revoke", row)
    assert key_id, listed.text
    revoked = await client.post(
        f"{url}/{key_id.group(1)}/revoke", data={"_csrf_token": _csrf(listed)}
    )
    assert revoked.status_code == 303, revoked.text
    refused = await h.client.get(f"/orgs/{h.root.org_id}", headers=h.auth(secret.group(1)))
    assert refused.status_code == 401


async def test_the_audit_trail_shows_a_console_change(h: Harness) -> None:
    client = await _signed_in(h)
    page = await client.get(f"{CONSOLE}/orgs/{h.root.org_id}")
    saved = await client.post(
        f"{CONSOLE}/orgs/{h.root.org_id}",
        data={"name": "Root", "description": "edited in the console", "tags": "tier:gold",
              "etag": _etag(page), "_csrf_token": _csrf(page)},
    )  # fmt: skip
    assert saved.status_code == 303, saved.text
    audit = await client.get(
        f"{CONSOLE}/orgs/{h.root.org_id}/audit", params={"action": "org.updated"}
    )
    assert audit.status_code == 200, audit.text
    assert "edited in the console" in audit.text
    assert "<td>console</td>" in audit.text
    # The API shows the same entry, named as the console's.
    (entry,) = (
        await h.client.get(
            f"/orgs/{h.root.org_id}/audit", params={"action": "org.updated"}, headers=h.auth()
        )
    ).json()["data"]
    assert (entry["surface"], entry["after"]["description"]) == ("console", "edited in the console")
    exported = await client.get(
        f"{CONSOLE}/orgs/{h.root.org_id}/audit/export", params={"action": "org.updated"}
    )
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert "edited in the console" in exported.text


async def test_a_member_of_a_child_sees_only_its_subtree(h: Harness) -> None:
    children = await _pool(h)
    client = await _signed_in(h, "eu@example.com", org=children["eu"], roles=["administrator"])
    home = await client.get(CONSOLE)
    assert home.headers["location"] == f"{CONSOLE}/orgs/{children['eu']}"
    page = await client.get(home.headers["location"])
    assert page.status_code == 200
    assert "Root" not in page.text  # no breadcrumb above its own org
    for url in (f"{CONSOLE}/orgs/{h.root.org_id}", f"{CONSOLE}/orgs/{children['us']}"):
        hidden = await client.get(url)
        assert hidden.status_code == 404, hidden.text
    tree = await client.get(f"{CONSOLE}/tree")
    assert "Acme US" not in tree.text


async def test_the_tree_loads_a_level_at_a_time_and_search_finds_by_name(h: Harness) -> None:
    children = await _pool(h)
    await h.create_org(children["eu"], "Acme EU Berlin")
    client = await _signed_in(h)
    tree = await client.get(f"{CONSOLE}/tree")
    assert "Acme EU" in tree.text and "Acme EU Berlin" not in tree.text
    level = await client.get(f"{CONSOLE}/orgs/{children['eu']}/children")
    assert "Acme EU Berlin" in level.text
    found = await client.get(f"{CONSOLE}/orgs/{h.root.org_id}", params={"q": "us"})
    assert "Acme US" in found.text and "Acme EU<" not in found.text


async def test_consumption_draws_the_month_as_svg(h: Harness) -> None:
    children = await _pool(h)
    await h.client.put(
        f"/orgs/{h.root.org_id}/children/{children['eu']}/allocations/operations",
        json={"amount": 100_000},
        headers=h.auth(),
    )
    from datetime import UTC, datetime

    now = datetime.now(UTC).isoformat()
    usage = await h.client.post(
        f"/orgs/{children['eu']}/usage",
        json={"events": [{"meter": "operations", "quantity": 4200, "timestamp": now,
                          "idempotency_key": "e1"}]},
        headers=h.auth(),
    )  # fmt: skip
    assert usage.status_code in (200, 201, 202), usage.text
    client = await _signed_in(h)
    page = await client.get(f"{CONSOLE}/orgs/{h.root.org_id}/consumption")
    assert page.status_code == 200, page.text
    assert '<svg class="chart"' in page.text
    assert "4,200 consumed so far this month" in page.text
    assert "Acme EU" in page.text
    eu = await client.get(f"{CONSOLE}/orgs/{children['eu']}/consumption")
    assert "of an allocation of 100,000" in eu.text


async def test_an_invited_person_sets_a_password_signs_in_and_sees_their_subtree(
    h: Harness,
) -> None:
    children = await _pool(h)
    client = await _signed_in(h)
    url = f"{CONSOLE}/orgs/{children['eu']}/people"
    page = await client.get(url)
    invited = await client.post(
        url,
        data={"email": "new@example.com", "roles": ["administrator"], "_csrf_token": _csrf(page)},
    )
    assert invited.status_code == 201, invited.text
    link = re.search(r'value="http://[^"]+(/console/invitations/[^"]+)" data-secret', invited.text)
    assert link, invited.text
    guest = httpx.AsyncClient(transport=h.client._transport, base_url=str(h.client.base_url))
    form = await guest.get(link.group(1))
    assert form.status_code == 200
    accepted = await guest.post(
        link.group(1), data={"password": PASSWORD, "_csrf_token": _csrf(form)}
    )
    assert accepted.status_code == 303, accepted.text
    again = await guest.post(link.group(1), data={"password": PASSWORD, "_csrf_token": _csrf(form)})
    assert again.status_code == 409, again.text
    sign_in = await guest.get(accepted.headers["location"])
    assert "Your invitation is accepted" in sign_in.text
    signed = await guest.post(
        f"{CONSOLE}/sign-in",
        data={"email": "new@example.com", "password": PASSWORD, "_csrf_token": _csrf(sign_in)},
    )
    assert signed.status_code == 303
    home = await guest.get(CONSOLE)
    assert home.headers["location"] == f"{CONSOLE}/orgs/{children['eu']}"
    assert (await guest.get(f"{CONSOLE}/orgs/{children['us']}")).status_code == 404


async def test_roles_change_and_a_member_is_disabled(h: Harness) -> None:
    children = await _pool(h)
    member = await make_user(h, children["eu"], "member@example.com", ["standard"])
    client = await _signed_in(h)
    url = f"{CONSOLE}/orgs/{children['eu']}/people"
    page = await client.get(url)
    changed = await client.post(
        f"{url}/{member}",
        data={"roles": ["read-only"], "action": "roles", "_csrf_token": _csrf(page)},
    )
    assert changed.status_code == 303, changed.text
    user = await h.client.get(f"/orgs/{children['eu']}/users/{member}", headers=h.auth())
    assert user.json()["roles"] == ["read-only"]
    disabled = await client.post(
        f"{url}/{member}", data={"action": "disable", "_csrf_token": _csrf(page)}
    )
    assert disabled.status_code == 303
    user = await h.client.get(f"/orgs/{children['eu']}/users/{member}", headers=h.auth())
    assert user.json()["status"] == "disabled"


async def test_a_move_refusal_is_shown_and_delete_spells_out_the_cascade(h: Harness) -> None:
    children = await _pool(h)
    berlin = await h.create_org(children["eu"], "Acme EU Berlin")
    client = await _signed_in(h)
    page = await client.get(f"{CONSOLE}/orgs/{children['eu']}")
    cycle = await client.post(
        f"{CONSOLE}/orgs/{children['eu']}/move",
        data={"parent": berlin["id"], "_csrf_token": _csrf(page)},
    )
    assert cycle.status_code in (409, 422), cycle.text
    assert cycle.headers["content-type"].startswith("text/html")
    assert 'role="alert"' in cycle.text
    moved = await client.post(
        f"{CONSOLE}/orgs/{berlin['id']}/move",
        data={"parent": children["us"], "_csrf_token": _csrf(page)},
    )
    assert moved.status_code == 303, moved.text
    org = await h.client.get(f"/orgs/{berlin['id']}", headers=h.auth())
    assert org.json()["parent_id"] == children["us"]
    confirm = await client.get(f"{CONSOLE}/orgs/{children['us']}/delete")
    assert "Acme EU Berlin" in confirm.text and "restored" in confirm.text
    deleted = await client.post(
        f"{CONSOLE}/orgs/{children['us']}/delete", data={"_csrf_token": _csrf(confirm)}
    )
    assert deleted.status_code == 303, deleted.text
    listing = await client.get(deleted.headers["location"])
    assert "Acme US" in listing.text and "Restore" in listing.text
    gone = await h.client.get(f"/orgs/{berlin['id']}", headers=h.auth())
    assert gone.status_code == 404
    restored = await client.post(
        f"{CONSOLE}/orgs/{children['us']}/restore", data={"_csrf_token": _csrf(listing)}
    )
    assert restored.status_code == 303, restored.text
    back = await h.client.get(f"/orgs/{berlin['id']}", headers=h.auth())
    assert back.status_code == 200


async def test_the_bootstrapped_owner_signs_in_from_the_printed_link(h: Harness) -> None:
    done = await h.services.db.transaction(
        create_root_with_admin_key, name="Second", owner_email="first@example.com"
    )
    assert done.owner_token is not None
    client = httpx.AsyncClient(transport=h.client._transport, base_url=str(h.client.base_url))
    link = f"{CONSOLE}/invitations/{done.owner_token}"
    form = await client.get(link)
    accepted = await client.post(link, data={"password": PASSWORD, "_csrf_token": _csrf(form)})
    assert accepted.status_code == 303, accepted.text
    sign_in = await client.get(accepted.headers["location"])
    signed = await client.post(
        f"{CONSOLE}/sign-in",
        data={"email": "first@example.com", "password": PASSWORD, "_csrf_token": _csrf(sign_in)},
    )
    assert signed.status_code == 303
    page = await client.get((await client.get(CONSOLE)).headers["location"])
    assert "<h1>Second</h1>" in page.text
    # An owner sees every control of the root.
    for tab in ("Consumption", "Allocations", "People", "API keys", "Audit trail"):
        assert f">{tab}</a>" in page.text


async def _console_sign_in(client: httpx.AsyncClient, email: str, code: str = "") -> httpx.Response:
    form = await client.get(f"{CONSOLE}/sign-in")
    return await client.post(
        f"{CONSOLE}/sign-in",
        data={"email": email, "password": PASSWORD, "code": code, "_csrf_token": _csrf(form)},
    )


async def test_a_second_factor_is_asked_for_and_a_used_code_refused(h: Harness) -> None:
    await make_user(h, h.root.org_id, "owner@example.com", ["owner"])
    secret, _ = await mfa_support.enrol(h, await mfa_support.session(h, "owner@example.com"))
    client = httpx.AsyncClient(transport=h.client._transport, base_url=str(h.client.base_url))
    missing = await _console_sign_in(client, "owner@example.com")
    assert missing.status_code == 401
    assert "Enter the current code from your authenticator app" in missing.text
    assert "orgplane_session" not in missing.cookies
    wrong = await _console_sign_in(client, "owner@example.com", "000000")
    assert wrong.status_code == 401 and "That code is not right" in wrong.text
    # A code of the next time step: the one the enrolment used is spent.
    code = mfa_support.code_at(secret, 1)
    signed = await _console_sign_in(client, "owner@example.com", code)
    assert signed.status_code == 303, signed.text
    again = httpx.AsyncClient(transport=h.client._transport, base_url=str(h.client.base_url))
    replayed = await _console_sign_in(again, "owner@example.com", code)
    assert replayed.status_code == 401 and "used already" in replayed.text


async def test_a_member_who_must_enrol_first_sees_only_the_rule(h: Harness) -> None:
    required = await h.client.patch(
        f"/orgs/{h.root.org_id}", json={"mfa_required": True}, headers=h.auth()
    )
    assert required.status_code == 200, required.text
    client = await _signed_in(h, "member@example.com", roles=["standard"])
    page = await client.get(f"{CONSOLE}/orgs/{h.root.org_id}")
    assert page.status_code == 403
    assert "requires two-factor sign-in of its members" in page.text


async def test_enrolling_in_the_console_then_signing_in_with_a_code(h: Harness) -> None:
    client = await _signed_in(h)
    account = await client.get(f"{CONSOLE}/account")
    assert "Set up two-factor sign-in" in account.text
    begun = await client.post(f"{CONSOLE}/account/mfa/enrol", data={"_csrf_token": _csrf(account)})
    assert begun.status_code == 200, begun.text
    assert "<svg" in begun.text
    secret = re.search(r"<code data-totp-secret>([A-Z2-7]+)</code>", begun.text)
    assert secret, begun.text
    confirmed = await client.post(
        f"{CONSOLE}/account/mfa/confirm",
        data={"code": mfa_support.code_now(secret.group(1)), "_csrf_token": _csrf(begun)},
    )
    assert confirmed.status_code == 200, confirmed.text
    recovery = re.findall(r"<li><code>([0-9a-z]{5}-[0-9a-z]{5})</code></li>", confirmed.text)
    assert len(recovery) == 10, confirmed.text
    signed_out = await client.post(f"{CONSOLE}/sign-out", data={"_csrf_token": _csrf(confirmed)})
    assert signed_out.status_code == 303
    fresh = httpx.AsyncClient(transport=h.client._transport, base_url=str(h.client.base_url))
    assert (await _console_sign_in(fresh, "owner@example.com")).status_code == 401
    assert (await _console_sign_in(fresh, "owner@example.com", "000000")).status_code == 401
    with_recovery = await _console_sign_in(fresh, "owner@example.com", recovery[0])
    assert with_recovery.status_code == 303, with_recovery.text
    again = httpx.AsyncClient(transport=h.client._transport, base_url=str(h.client.base_url))
    assert (await _console_sign_in(again, "owner@example.com", recovery[0])).status_code == 401
    code = mfa_support.code_at(secret.group(1), 1)
    assert (await _console_sign_in(again, "owner@example.com", code)).status_code == 303


async def test_a_member_who_must_enrol_does_so_from_the_account_page(h: Harness) -> None:
    required = await h.client.patch(
        f"/orgs/{h.root.org_id}", json={"mfa_required": True}, headers=h.auth()
    )
    assert required.status_code == 200, required.text
    client = await _signed_in(h, "member@example.com", roles=["standard"])
    account = await client.get(f"{CONSOLE}/account")
    assert account.status_code == 200
    assert "Your organization requires two-factor sign-in" in account.text
    begun = await client.post(f"{CONSOLE}/account/mfa/enrol", data={"_csrf_token": _csrf(account)})
    secret = re.search(r"<code data-totp-secret>([A-Z2-7]+)</code>", begun.text)
    assert secret, begun.text
    confirmed = await client.post(
        f"{CONSOLE}/account/mfa/confirm",
        data={"code": mfa_support.code_now(secret.group(1)), "_csrf_token": _csrf(begun)},
    )
    assert confirmed.status_code == 200, confirmed.text
    page = await client.get(f"{CONSOLE}/orgs/{h.root.org_id}")
    assert page.status_code == 200, page.text
