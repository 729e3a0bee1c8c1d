"""The SAML identity provider's metadata, checked and kept in an org's settings.

The settings are one JSON document (``orgs.settings``); the metadata is merged into it under
the org's row lock (``service.update``'s ``merge_settings``), so other keys are never lost.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from orgplane.core.access.principal import Caller
from orgplane.core.access.service import reach
from orgplane.core.orgs import saml
from orgplane.core.orgs import service as org_service
from orgplane.db.engine import Tx


async def store_idp_metadata(
    tx: Tx, *, actor: Caller, org_ref: str, document: bytes, now: datetime
) -> Any:
    """Check the SAML metadata (400 if it is not an identity provider's) and keep what the org's
    SAML sign-in needs under ``settings.saml_idp_metadata``."""
    await reach(tx.conn, actor.principal, org_ref, scope="orgs:write")
    parsed = saml.parse_idp_metadata(document, now=now)
    return await org_service.update(
        tx, actor=actor, org_ref=org_ref, changes={}, merge_settings={saml.SETTINGS_KEY: parsed}
    )
