"""credentials.mint and credentials.revoke as every surface reaches them: a key minted without
an expiry or scopes takes its creator's, wherever it is minted (native, Sumo Logic's
``accessKey`` through the real sumologic-sdk, Datadog's child org through the real
datadog-api-client); a revoked key is refused at once however long the key cache lasts; the
CLI's key changes write the same audit entries as the API's.

Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from datadog_api_client.v1.api.organizations_api import OrganizationsApi as OrgsV1
from datadog_api_client.v1.model.organization_create_body import OrganizationCreateBody
from sumologic import SumoLogic

from orgplane.core.access import scopes as scope_catalog
from orgplane.core.ids import hash_secret, sumo_org_id
from orgplane.models import audit_log, orgs
from support.cli import run_cli
from support.datadog import dd
from support.harness import Harness, LiveServer, start_harness, stop_harness
from support.sumologic import BASE


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _key(h: Harness, org: str, key: str | None = None, **fields: Any) -> dict[str, Any]:
    response = await h.client.post(
        f"/orgs/{org}/api_keys", json={"name": "k", **fields}, headers=h.auth(key)
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _keys_of(h: Harness, org: str) -> list[dict[str, Any]]:
    response = await h.client.get(f"/orgs/{org}/api_keys", headers=h.auth())
    assert response.status_code == 200, response.text
    keys: list[dict[str, Any]] = response.json()["data"]
    return keys


async def _sumo_id(h: Harness, public_id: str) -> str:
    async with h.services.db.read() as conn:
        row = (
            await conn.execute(
                sa.select(orgs.c.id, orgs.c.deployment).where(orgs.c.public_id == public_id)
            )
        ).one()
    return sumo_org_id(row.deployment, row.id)


async def _audit(h: Harness, action: str, target_id: str) -> Any:
    async with h.services.db.read() as conn:
        (row,) = (
            await conn.execute(
                sa.select(audit_log).where(
                    audit_log.c.action == action, audit_log.c.target_id == target_id
                )
            )
        ).all()
    return row


# --- defaults from the creator ------------------------------------------------------------


# A creator whose own key expires in an hour, with these scopes; it holds them as authentication
# expands them (write implies read), and that is what a key minted without scopes receives.
SCOPES = ["keys:write", "orgs:write", "users:read"]
HELD = sorted(scope_catalog.expand(SCOPES))


def _expiry() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


async def test_a_natively_minted_key_without_expiry_takes_its_creators(h: Harness) -> None:
    """Drift fixed: left out, ``expires_at`` was never, which the core refused (403) for a
    creator whose own key expires."""
    root = h.root.org_id
    expiry = _expiry()
    creator = await _key(h, root, scopes=SCOPES, expires_at=_iso(expiry))
    made = await _key(h, root, key=creator["api_key"], scopes=["orgs:read"])
    assert _parse(made["expires_at"]) == expiry
    # Named explicitly, it still cannot outlive the creator, nor never expire.
    for later in (_iso(expiry + timedelta(minutes=1)), None):
        response = await h.client.post(
            f"/orgs/{root}/api_keys",
            json={"name": "k", "scopes": ["orgs:read"], "expires_at": later},
            headers=h.auth(creator["api_key"]),
        )
        assert response.status_code == 403 and "outlive" in response.json()["detail"]


async def test_a_sumo_logic_access_key_takes_its_creators_expiry_and_scopes(
    h: Harness, live: LiveServer, relaxed: None
) -> None:
    """Drift fixed: Sumo Logic's ``accessKey`` minted ``expires_at=None``, which the core
    refused (403) when the calling key expires."""
    root = h.root.org_id
    expiry = _expiry()
    child = (await h.create_org(root, "Sumo child"))["id"]
    creator = await _key(h, root, scopes=SCOPES, kind="sumologic", expires_at=_iso(expiry))
    sumo = SumoLogic(creator["access_id"], creator["access_key"], endpoint=f"{live.url}{BASE}")
    response = await live.call(
        sumo.post,
        f"/organizations/{await _sumo_id(h, child)}/accessKey",
        {"label": "from sumo"},
        headers={"parentDeploymentId": "us1"},
    )
    access = response.json()
    assert access["scopes"] == HELD
    (minted,) = await _keys_of(h, child)
    assert (minted["name"], minted["kind"]) == ("from sumo", "sumologic")
    assert _parse(minted["expires_at"]) == expiry and minted["scopes"] == HELD
    by_new_key = SumoLogic(access["id"], access["key"], endpoint=f"{live.url}{BASE}")
    assert (await live.call(by_new_key.get, "/users")).status_code == 200

    # The same key minted natively is audited alike; only the actor says which surface it was.
    twin = await _key(
        h, child, scopes=HELD, kind="sumologic", name="from sumo", expires_at=_iso(expiry)
    )
    via_sumo = await _audit(h, "key.created", minted["id"])
    via_native = await _audit(h, "key.created", twin["id"])
    assert via_sumo.after == via_native.after
    assert via_sumo.actor == f"key:{creator['id']}"


async def test_a_datadog_child_orgs_key_takes_its_creators_expiry_and_scopes(
    h: Harness, live: LiveServer
) -> None:
    """What Datadog already did, now through the same command as the others."""
    expiry = _expiry()
    creator = await _key(h, h.root.org_id, scopes=SCOPES, kind="datadog", expires_at=_iso(expiry))
    with dd(live, (creator["api_key"], creator["application_key"])) as client:
        created = await live.call(
            OrgsV1(client).create_child_org, OrganizationCreateBody(name="Datadog child")
        )
    (minted,) = await _keys_of(h, created.org.public_id)
    assert minted["kind"] == "datadog" and minted["scopes"] == HELD
    assert _parse(minted["expires_at"]) == expiry


async def test_a_creator_that_never_expires_mints_keys_that_never_expire(h: Harness) -> None:
    root = h.root.org_id
    made = await _key(h, root, scopes=["orgs:read"])
    assert made["expires_at"] is None


# --- revocation ---------------------------------------------------------------------------


async def test_a_revoked_key_is_refused_at_once_with_a_long_key_cache(db_url: str) -> None:
    """The revoke command registers the cache's invalidation on its transaction
    (``tx.forget_keys``): the next request is refused though the cache would keep the key an
    hour."""
    h = await start_harness(db_url, key_cache_seconds=3600)
    try:
        root = h.root.org_id
        made = await _key(h, root, scopes=["orgs:read"])
        secret = made["api_key"]
        assert (await h.client.get(f"/orgs/{root}", headers=h.auth(secret))).status_code == 200
        assert h.services.keys.get(hash_secret(secret)) is not None  # cached for an hour

        response = await h.client.delete(f"/orgs/{root}/api_keys/{made['id']}", headers=h.auth())
        assert response.status_code == 204
        assert h.services.keys.get(hash_secret(secret)) is None
        response = await h.client.get(f"/orgs/{root}", headers=h.auth(secret))
        assert response.status_code == 401
        # Revoking it again changes nothing and is not an error.
        response = await h.client.delete(f"/orgs/{root}/api_keys/{made['id']}", headers=h.auth())
        assert response.status_code == 204
    finally:
        await stop_harness(h)


async def test_concurrent_revocations_write_one_audit_entry(h: Harness) -> None:
    root = h.root.org_id
    for _ in range(5):
        made = await _key(h, root, scopes=["orgs:read"])
        responses = await asyncio.gather(
            *(
                h.client.delete(f"/orgs/{root}/api_keys/{made['id']}", headers=h.auth())
                for _ in range(4)
            )
        )
        assert [r.status_code for r in responses] == [204] * 4
        async with h.services.db.read() as conn:
            entries = (
                await conn.execute(
                    sa.select(audit_log.c.id).where(
                        audit_log.c.action == "key.revoked", audit_log.c.target_id == made["id"]
                    )
                )
            ).all()
        assert len(entries) == 1


# --- the CLI and the API ------------------------------------------------------------------


async def test_the_cli_and_the_api_audit_a_key_alike(h: Harness, tmp_path: Any) -> None:
    """Drift fixed: the CLI wrote its own SQL and audited ``{"name", "scopes"}`` on creation and
    ``{"name"}`` on revocation; now it calls the same commands, so only the actor differs."""
    child = (await h.create_org(h.root.org_id, "Child"))["id"]
    expiry = datetime(2099, 1, 1, tzinfo=UTC)
    db = ["--database-url", str(h.services.settings.database_url)]

    api = await _key(
        h, child, name="deploy", scopes=["orgs:read", "usage:write"], expires_at=_iso(expiry)
    )
    result = await run_cli(
        "keys", "create", child, "--name", "deploy", "--scope", "orgs:read",
        "--scope", "usage:write", "--expires", "2099-01-01T00:00:00", "--json", *db,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cli_key = json.loads(result.stdout)["key_id"]

    response = await h.client.delete(f"/orgs/{child}/api_keys/{api['id']}", headers=h.auth())
    assert response.status_code == 204
    result = await run_cli("keys", "revoke", cli_key, *db, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"revoked {cli_key}"
    again = await run_cli("keys", "revoke", cli_key, *db, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == f"{cli_key} was already revoked"
    missing = await run_cli("keys", "revoke", "key_doesnotexist", *db, cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: API key 'key_doesnotexist' not found"

    for action in ("key.created", "key.revoked"):
        by_api = await _audit(h, action, api["id"])
        by_cli = await _audit(h, action, cli_key)
        assert by_cli.actor == "cli" and by_api.actor == f"key:{h.root.key_id}"
        assert (
            (by_cli.org_id, by_cli.target_type)
            == (by_api.org_id, by_api.target_type)
            == (
                by_api.org_id,
                "key",
            )
        )
        assert by_cli.before == by_api.before
        assert by_cli.after == by_api.after
    created = await _audit(h, "key.created", cli_key)
    assert created.after == {
        "name": "deploy",
        "kind": "native",
        "scopes": ["orgs:read", "usage:write"],
        "expires_at": expiry.isoformat(),
        "user_id": None,
    }
    assert (await _audit(h, "key.revoked", cli_key)).before == created.after


async def test_the_bootstrap_key_is_audited_like_any_key(h: Harness) -> None:
    """Bootstrap and ``orgs create-root`` mint their admin key through the same command."""
    entry = await _audit(h, "key.created", h.root.key_id)
    assert entry.actor == "bootstrap"
    assert entry.after == {
        "name": "admin",
        "kind": "native",
        "scopes": ["*"],
        "expires_at": None,
        "user_id": None,
    }
