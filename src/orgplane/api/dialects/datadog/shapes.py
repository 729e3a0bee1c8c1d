"""Rendering orgplane's rows in Datadog's shapes (v1 objects and v2 JSON:API resources)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from orgplane.api.dialects.datadog import permissions
from orgplane.core.orgs.saml import SETTINGS_KEY as IDP_KEY
from orgplane.core.people.roles import RoleView
from orgplane.core.people.users import Member

V1_NAME_MAX = 32
STATUS = {"active": "Active", "pending": "Pending", "disabled": "Disabled"}
STATUS_IN = {v: k for k, v in STATUS.items()}
# Datadog's v1 access roles and the system roles they stand for.
ACCESS_ROLES = {"adm": "administrator", "st": "standard", "ro": "read-only"}
DEFAULT_BILLING = "parent_billing"


def timestamp(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- v1 organizations ----------------------------------------------------------------------------


def _enabled(settings: dict[str, Any], key: str) -> dict[str, bool]:
    value = settings.get(key)
    return {"enabled": bool(value.get("enabled")) if isinstance(value, dict) else False}


def v1_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Datadog's ``OrganizationSettings`` from the org's settings document (defaults filled)."""
    idp = settings.get(IDP_KEY) if isinstance(settings.get(IDP_KEY), dict) else None
    domains = settings.get("saml_autocreate_users_domains")
    domains = domains if isinstance(domains, dict) else {}
    role = settings.get("saml_autocreate_access_role")
    return {
        "private_widget_share": bool(settings.get("private_widget_share", False)),
        "saml": _enabled(settings, "saml"),
        "saml_autocreate_access_role": role if role in ACCESS_ROLES else "st",
        "saml_autocreate_users_domains": {
            "domains": [d for d in domains.get("domains", []) if isinstance(d, str)],
            "enabled": bool(domains.get("enabled", False)),
        },
        "saml_can_be_enabled": idp is not None,
        "saml_idp_endpoint": idp["sso_url"] if idp else None,
        "saml_idp_initiated_login": _enabled(settings, "saml_idp_initiated_login"),
        "saml_idp_metadata_uploaded": idp is not None,
        "saml_login_url": idp["sso_url"] if idp else None,
        "saml_strict_mode": _enabled(settings, "saml_strict_mode"),
    }


def v1_org(row: Any) -> dict[str, Any]:
    """Datadog's v1 ``Organization``. Its name is at most 32 characters in Datadog's schema (the
    client rejects longer ones), so a longer orgplane name is cut to 32 here."""
    settings = row.settings or {}
    billing = settings.get("billing")
    billing_type = billing.get("type") if isinstance(billing, dict) else None
    return {
        "public_id": row.public_id,
        "name": row.name[:V1_NAME_MAX],
        "description": row.description,
        "created": row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        "billing": {"type": billing_type or DEFAULT_BILLING},
        "subscription": {"type": row.plan},
        "trial": row.plan == "trial",
        "settings": v1_settings(settings),
    }


def v1_user(member: Member) -> dict[str, Any]:
    row = member.row
    access = next((k for k, v in ACCESS_ROLES.items() if v in member.roles), None)
    if access is None and "owner" in member.roles:
        access = "adm"
    return {
        "email": row.email,
        "handle": row.email,
        "name": display_name(row),
        "access_role": access or "st",
        "disabled": row.status == "disabled",
        "verified": row.status == "active",
        "icon": icon(row.email),
    }


# --- v2 organizations ----------------------------------------------------------------------------


def v2_org(row: Any, base_url: str) -> dict[str, Any]:
    """A JSON:API ``orgs`` resource (every attribute the client's ``OrgData`` requires)."""
    settings = row.settings or {}
    return {
        "id": row.uuid,
        "type": "orgs",
        "attributes": {
            "name": row.name,
            "public_id": row.public_id,
            "description": row.description,
            "disabled": row.status != "active",
            "sharing": "Open" if settings.get("private_widget_share") else "none",
            "url": f"{base_url}/api/v1/org/{row.public_id}",
            "created_at": timestamp(row.created_at),
            "modified_at": timestamp(row.modified_at),
        },
    }


def org_ref(row: Any) -> dict[str, str]:
    return {"id": row.uuid, "type": "orgs"}


# --- v2 users ------------------------------------------------------------------------------------


def display_name(row: Any) -> str | None:
    name = f"{row.first_name} {row.last_name}".strip()
    return name or None


def icon(email: str) -> str:
    digest = hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()
    return f"https://secure.gravatar.com/avatar/{digest}?s=48&d=retro"


def user(member: Member, org_uuid: str) -> dict[str, Any]:
    row = member.row
    return {
        "type": "users",
        "id": row.public_id,
        "attributes": {
            "uuid": row.public_id,
            "email": row.email,
            "handle": row.email,
            "name": display_name(row),
            "title": row.title or None,
            "status": STATUS[row.status],
            "disabled": row.status == "disabled",
            "verified": row.status == "active",
            "service_account": False,
            "mfa_enabled": bool(row.mfa_enabled),
            "icon": icon(row.email),
            "created_at": timestamp(row.created_at),
            "modified_at": timestamp(row.modified_at),
            "last_login_time": timestamp(row.last_login_at),
        },
        "relationships": {
            "roles": {"data": [{"type": "roles", "id": r} for r in member.roles]},
            "org": {"data": {"type": "orgs", "id": org_uuid}},
        },
    }


# --- v2 roles ------------------------------------------------------------------------------------


def role(view: RoleView) -> dict[str, Any]:
    return {
        "type": "roles",
        "id": view.id,
        "attributes": {
            "name": view.name,
            "created_at": timestamp(view.created_at),
            "modified_at": timestamp(view.modified_at),
            "user_count": view.users,
        },
        "relationships": {"permissions": {"data": permissions.refs(view.capabilities)}},
    }


def role_reference(view: RoleView) -> dict[str, Any]:
    """A role for a user's ``included`` list (no permissions relationship to resolve)."""
    return {"type": "roles", "id": view.id, "attributes": {"name": view.name}}


def invitation(row: Any, token: str | None = None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "uuid": row.public_id,
        "invite_type": "basic_invite",
        "login_method": None,
        "created_at": timestamp(row.created_at),
        "expires_at": timestamp(row.expires_at),
    }
    if token is not None:
        # Shown once: orgplane sends no email, so the caller hands the token to the person.
        attributes["token"] = token
    return {
        "type": "user_invitations",
        "id": row.public_id,
        "attributes": attributes,
        "relationships": {"user": {"data": {"type": "users", "id": row.user_public_id}}},
    }
