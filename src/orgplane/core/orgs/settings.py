"""Changes to an org's settings document that merge into what is stored instead of replacing it.

The settings are one JSON document (``orgs.settings``); a surface that changes some of its keys
(Datadog's v1 ``PUT /org`` sends only what the caller set) merges them under the org's row lock,
so two such changes never lose each other's keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from orgplane.core.access.principal import Caller
from orgplane.core.access.service import reach
from orgplane.core.orgs import saml
from orgplane.core.orgs import service as org_service
from orgplane.db.engine import Tx


async def update_merging_settings(
    tx: Tx,
    *,
    actor: Caller,
    org_ref: str | int,
    changes: dict[str, Any],
    settings: dict[str, Any],
) -> Any:
    """Apply ``changes`` to the org, with ``settings``' top-level keys merged into its settings."""
    if settings:
        row = await reach(tx.conn, actor.principal, org_ref, scope="orgs:write", lock="update")
        changes = {**changes, "settings": {**row.settings, **settings}}
    return await org_service.update(tx, actor=actor, org_ref=org_ref, changes=changes)


async def store_idp_metadata(
    tx: Tx, *, actor: Caller, org_ref: str, document: bytes, now: datetime
) -> Any:
    """Check the SAML metadata (400 if it is not an identity provider's) and keep what the org's
    SAML sign-in needs under ``settings.saml_idp_metadata``."""
    await reach(tx.conn, actor.principal, org_ref, scope="orgs:write")
    parsed = saml.parse_idp_metadata(document, now=now)
    return await update_merging_settings(
        tx, actor=actor, org_ref=org_ref, changes={}, settings={saml.SETTINGS_KEY: parsed}
    )
