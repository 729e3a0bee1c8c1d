"""Datadog's organization-management API under ``/datadog``: shapes only, on the core.

Point the official client at it with ``Configuration(host="http://HOST:PORT/datadog")`` and a
``datadog`` key (``POST /orgs/{id}/api_keys`` with ``"kind": "datadog"``): its 32-hex API key is
``DD-API-KEY``, its 40-hex application key ``DD-APPLICATION-KEY``. The key belongs to one org and
acts on that org and its descendants, with the orgplane scopes it holds; reach, scopes, name
rules, allocations and audit are the core's.

**Ids.** v1 ``public_id`` is the org's public id (the native id); v2 org ids are ``orgs.uuid``.
User ids are the users' public ids (``usr_...``); role ids are the system roles' keys
(``owner``, ``administrator``, ``standard``, ``read-only``) or a custom role's public id
(``rol_...``); invitation ids are the invitations' public ids (``inv_...``). Permissions are
orgplane's capabilities, with Datadog-style names and stable uuid5 ids (``permissions.py`` holds
the one table).

**Scopes needed** (the key's; a key bound to a user also needs the user's capabilities):

- ``GET /api/v1/org``, ``GET /api/v1/org/{public_id}``, ``GET /api/v2/org``: ``orgs:read``;
- ``POST /api/v1/org``: ``orgs:write`` (and ``createOrganizations``) on the key's org and
  ``keys:write`` for the new org's key; a key bound to a user also needs ``users:write``, as
  that user becomes an administrator of the new org;
- ``PUT /api/v1/org/{public_id}``, ``POST .../idp_metadata``: ``orgs:write``;
  ``POST .../downgrade``: ``orgs:write`` and ``deactivateOrganizations``;
- users, invitations, roles, role permissions and role users: ``users:read`` to read,
  ``users:write`` to change (all in the key's own org); ``GET /api/v2/permissions``: any key.

**What is stored where.** Datadog's org settings are kept under their Datadog names in the org's
settings document (``orgs.settings``): ``private_widget_share``, ``saml``,
``saml_autocreate_access_role``, ``saml_autocreate_users_domains``,
``saml_idp_initiated_login``, ``saml_strict_mode``; the v1 ``billing`` type is
``settings.billing``; the uploaded IdP metadata is reduced to its entity id, SSO URL and
certificates in ``settings.saml_idp_metadata`` (from which ``saml_idp_metadata_uploaded``,
``saml_can_be_enabled``, ``saml_idp_endpoint`` and ``saml_login_url`` are derived). The v1
``subscription`` type is the org's plan (``trial``, ``free``, ``pro``, ``enterprise``), and
``trial`` is ``plan == "trial"``. A user's Datadog ``name`` is orgplane's first and last name
(split at the last space); a user's status is ``Active``/``Pending``/``Disabled``.

**Deviations from Datadog.**

- ``POST /api/v1/org/{public_id}/downgrade``: Datadog moves the child out of the parent's
  management onto a trial; orgplane keeps its tree, so the child's plan becomes ``trial`` and it
  is deactivated (unused allocations return to the parent, its keys stop working).
- ``POST /api/v1/org``: the new org gets a ``datadog`` key with the caller's scopes (and expiry);
  ``user`` is only in the response when the caller's key is bound to a user (who is made an
  administrator of the new org), since an unbound key has no user behind it.
- v1 org names are at most 32 characters in Datadog; an orgplane name longer than that (set
  through another surface) is shown cut to 32 characters in v1 responses (v2 shows it whole).
- ``POST /api/v2/user_invitations``: orgplane sends no email; each invitation's one-time
  ``token`` is an extra attribute of this response. ``PATCH /api/v2/users/{id}`` cannot change
  the email (orgplane confirms a new address by token; a different email is a 400).
- ``DELETE /api/v2/users/{id}`` disables the identity (it is one person across orgs).
- Roles: no default permission set is attached on create; ``receives_permissions_from`` is
  ignored; system roles cannot be changed or deleted (409).
- ``GET /api/v1/org`` lists at most 10,000 orgs, ``GET /api/v2/org`` at most 1,000 managed orgs
  (all descendants of the key's org, ``filter[name]`` a case-insensitive substring).

**Errors** are Datadog's ``{"errors": ["..."]}``: bad or missing keys ``403 ["Forbidden"]``,
over the rate limit ``429 ["Too many requests"]`` (``X-RateLimit-*`` headers on every
response), and otherwise orgplane's status (400, 403, 404, 409; 422 when ids in URL and body
differ) with its message naming the field.
"""

from litestar import Router

from orgplane.api import mounts
from orgplane.api.dialects.datadog import v1, v2_roles, v2_users
from orgplane.api.dialects.datadog.errors import EXCEPTION_HANDLERS
from orgplane.api.dialects.openapi import DATADOG_SECURITY

router = Router(
    path=mounts.DATADOG,
    route_handlers=[*v1.HANDLERS, *v2_users.HANDLERS, *v2_roles.HANDLERS],
    tags=["datadog"],
    security=DATADOG_SECURITY,
    exception_handlers=EXCEPTION_HANDLERS,
)
