"""The access-log entries of sign-in and sign-out, shared by the API and the console."""

from __future__ import annotations

from typing import Any

from litestar import Request

from orgplane.api.deps import Services
from orgplane.core.access.principal import RequestMeta


class OrgRef:
    """An org known only by its ids (a session's, before any row is read)."""

    __slots__ = ("id", "root_id")

    def __init__(self, org_id: int, root_id: int | None) -> None:
        self.id = org_id
        self.root_id = root_id


def record_sign_in(
    services: Services,
    request: Request[Any, Any, Any],
    meta: RequestMeta,
    *,
    action: str,
    status: str,
    actor: str,
    orgs: tuple[Any, ...] | list[Any] = (),
    **fields: Any,
) -> None:
    """One entry per org concerned (none known: one entry with no org)."""
    for org in orgs or (None,):
        services.access_log.record(
            actor=actor,
            action=action,
            status=status,
            org_id=org.id if org is not None else None,
            root_id=org.root_id if org is not None else None,
            method=request.method,
            path=request.url.path,
            ip=meta.ip,
            user_agent=meta.user_agent,
            **fields,
        )
