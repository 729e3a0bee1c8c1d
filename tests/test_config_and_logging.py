"""Settings refuse unsafe production set-ups; logs carry request ids and never a secret."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import ValidationError

from orgplane.config import DEFAULT_SECRET_KEY, Settings
from orgplane.core.idempotency import purge_expired
from orgplane.logging import configure as configure_logging


def test_production_refuses_the_default_secret_key() -> None:
    with pytest.raises(ValidationError, match="ORGPLANE_SECRET_KEY"):
        Settings(environment="production", secret_key=DEFAULT_SECRET_KEY)
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(environment="production", secret_key="short")
    assert Settings(environment="production", secret_key="x" * 40).environment == "production"


def test_unknown_database_driver_is_refused() -> None:
    with pytest.raises(ValidationError, match="database_url"):
        Settings(database_url="mysql://localhost/x")


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORGPLANE_MAX_TREE_DEPTH", "4")
    monkeypatch.setenv("ORGPLANE_LOG_FORMAT", "json")
    settings = Settings()
    assert settings.max_tree_depth == 4
    assert settings.log_format == "json"


async def test_request_logs_carry_the_request_id_and_no_secret(h, caplog, capsys) -> None:
    caplog.set_level(logging.INFO, logger="orgplane")
    configure_logging("info", "json")
    logging.getLogger("orgplane").propagate = True
    try:
        child = await h.create_org(h.root.org_id, "Logged")
        response = await h.client.get(f"/orgs/{child['id']}", headers=h.auth())
        bad = await h.client.get(f"/orgs/{child['id']}", headers=h.auth("opk_" + "A" * 38))
    finally:
        logging.getLogger("orgplane").propagate = False
    assert bad.status_code == 401
    # The per-request lines go straight to stderr as JSON; everything else through logging.
    err = capsys.readouterr().err.splitlines()
    lines = [json.loads(line) for line in err if line.startswith("{")]
    requests = [line for line in lines if line["event"] == "request"]
    assert {line["request_id"] for line in requests} >= {response.headers["x-request-id"]}
    assert {(line["status"], line["route"]) for line in requests} >= {
        (200, "/orgs/{org_id}"),
        (401, "/orgs/{org_id}"),
    }
    text = caplog.text + json.dumps(lines)
    assert h.root.api_key not in text
    assert "opk_" + "A" * 38 not in text


async def test_expired_idempotency_keys_are_purged(h) -> None:
    headers = {**h.auth(), "Idempotency-Key": "purge-me"}
    first = await h.client.post(
        f"/orgs/{h.root.org_id}/children", json={"name": "Once"}, headers=headers
    )
    assert first.status_code == 201
    assert await h.services.db.transaction(purge_expired, 24) == 0
    # With a TTL of zero hours, every record is past it.
    assert await h.services.db.transaction(purge_expired, 0) == 1
