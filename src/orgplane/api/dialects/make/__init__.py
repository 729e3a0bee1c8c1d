"""Make's API under ``/make/api/v2``: organizations, MMS child organizations, users' roles and
enums, in Make's shapes, on the core.

Authenticate with a ``make`` key (``POST /orgs/{id}/api_keys`` with ``"kind": "make"``), sent as
``Authorization: Token <uuid>``. Make's ids are the orgs' and users' integer keys; each org is
resolved and reached through ``core.access`` like any native call, so reach, scopes, allocation
rules and audit are the core's. Errors use Make's body ``{"detail", "message", "code"}`` with
the status orgplane decided: 400 IM005, 401 IM102, 403 SC403, 404 SC404, 406 IM004 (deleting an
org in use without ``confirmed=true``), 409 SC409; 429 is Make's plain-text message.

Make's scopes map onto orgplane's (a key holds orgplane scopes; ``GET
/users/me/current-authorization`` reports each Make scope whose orgplane scopes it holds all of):

- ``organizations:read`` → ``orgs:read``: list and get organizations;
- ``organizations:write`` → ``orgs:write``: create, update, delete organizations;
- ``managed-organizations:read`` → ``orgs:read``, ``credits:read``, ``usage:read``: list children
  (``credits:read``), their consumption (``usage:read``); an org's daily usage needs
  ``usage:read``;
- ``managed-organizations:write`` → ``orgs:write``, ``credits:write``: create a child (and
  ``users:write`` when it names its owner), change an allocation (``credits:write``);
- ``user:read`` → ``users:read``: roles, user-organization-roles;
- ``user:write`` → ``users:write``: set a user's role, invite a user.
Enums need a valid token and no scope. For a key bound to a user, the user's capabilities in
its org apply on top, as everywhere in orgplane.

Ids: regions are orgplane's deployments, countries their ISO 3166-1 numeric codes, time zones
the CRC-32 of their IANA names, roles the system roles (11 owner, 12 administrator, 13 standard,
14 read-only); see ``enums`` and ``people``. Operations are the core's ``operations`` meter
(step 10,000), data transfer its ``transfer`` meter (bytes), and centicredits its ``credits``
meter times 100.

Deviations from Make:

- ``POST /organizations`` creates a child of the token's organization (orgplane has no
  organization without a parent); its ``userOrganizationRole`` is null (a key is not a member).
- ``GET /organizations`` lists the token's organization and its descendants (Make: the orgs the
  user belongs to); ``zone`` and ``externalId`` filters are not supported.
- Names follow orgplane's rule (1-100 characters, no control characters), not Make's narrower
  character set.
- Zones: one per deployment, all served by this installation (``domain`` is the request's host);
  ``GET /organizations/{id}`` has no ``features``, ``apiLimit`` or team limits; ``teams`` is
  always empty (orgplane has no teams), so ``teamsId`` on an invitation must be empty; ``note``
  is accepted and not kept.
- ``GET /organizations/{id}/usage`` counts days in the org's time zone whatever
  ``organizationTimezone`` says (usage is counted per day of the org's time zone).
- Custom roles have no Make id (``usersRoleId: null``; only system roles can be set).
  ``user-organization-roles`` lists at most 1,000 members; ``confirmed``/``deleteConnections``
  of a role change and the ownership transfer endpoint are not served.
- A new owner named in an MMS create is a pending user with an invitation (its token is not
  returned: resend it with ``POST /orgs/{id}/invitations/{id}/resend``).
- ``GET /organizations/{id}/managed-organizations`` pages by ``pg[offset]``/``pg[limit]`` in id
  order; ``pg[sortBy]``/``pg[sortDir]`` are not supported there.
"""

from __future__ import annotations

from litestar import Router

from orgplane.api import mounts
from orgplane.api.dialects.make import enums, managed, organizations, people
from orgplane.api.dialects.make.errors import HANDLERS
from orgplane.api.dialects.openapi import MAKE_SECURITY

router = Router(
    path=mounts.MAKE,
    route_handlers=[*managed.HANDLERS, *organizations.HANDLERS, *people.HANDLERS, *enums.HANDLERS],
    tags=["make"],
    security=MAKE_SECURITY,
    exception_handlers=HANDLERS,
)

__all__ = ["router"]
