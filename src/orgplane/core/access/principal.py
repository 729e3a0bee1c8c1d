"""Who is calling, and from where: carried from authentication to the services and the audit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


def path_reaches(org_id: int, path: str) -> bool:
    """True when the org at ``path`` is the org ``org_id`` or one of its descendants."""
    return f"/{org_id}/" in path


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated credential. It may act on its org and that org's descendants only."""

    key_pk: int
    key_id: str
    key_hash: str
    org_id: int
    org_public_id: str
    root_id: int
    scopes: frozenset[str]
    name: str
    user_id: int | None = None
    expires_at: datetime | None = None
    # For a user-bound principal, what the user's roles grant in its org (read per request);
    # None when the principal is not bound to a user (its scopes alone decide).
    capabilities: frozenset[str] | None = None
    # "key", or "session" for a signed-in user (then key_pk/key_id name the session's row).
    kind: str = "key"
    user_public_id: str | None = None
    # A session that may only enrol a second factor: its org requires one, its user has none
    # yet (core/people/mfa.py).
    enrolment_only: bool = False

    @property
    def label(self) -> str:
        if self.kind == "session":
            return f"user:{self.user_public_id}"
        return f"key:{self.key_id}"

    def reaches(self, path: str) -> bool:
        """True when the org at ``path`` is this principal's org or one of its descendants."""
        return path_reaches(self.org_id, path)


@dataclass(frozen=True, slots=True)
class RequestMeta:
    request_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    # The surface a change came through ("api", "datadog", "make", "sumologic", "scim",
    # "console", or "cli" for the command line), as the audit log names it.
    surface: str | None = None


SYSTEM_META = RequestMeta(request_id=None, ip=None, user_agent="orgplane-cli", surface="cli")


@dataclass(frozen=True, slots=True)
class Actor:
    """The principal behind a change plus the request it came in, as the audit log records it."""

    meta: RequestMeta
    principal: Principal | None = None
    label_override: str | None = None

    @property
    def label(self) -> str:
        if self.label_override:
            return self.label_override
        return self.principal.label if self.principal else "system"

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(meta=SYSTEM_META, label_override=label)


@dataclass(frozen=True, slots=True)
class Caller(Actor):
    """An actor that is an authenticated principal: what every API surface hands the core.

    Commands that only an API principal may run take a ``Caller`` and read ``principal``
    without a None check; the operator's CLI acts as a plain ``Actor.system()``."""

    principal: Principal

    @classmethod
    def of(cls, principal: Principal, meta: RequestMeta = SYSTEM_META) -> Caller:
        return cls(meta=meta, principal=principal)


def caller(actor: Actor) -> Principal:
    """The principal behind an API change (a command reached without one is a bug)."""
    if actor.principal is None:
        raise AssertionError("an API change needs a principal")
    return actor.principal
