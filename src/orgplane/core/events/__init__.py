"""Events: every audited change, as the systems around orgplane receive it.

The audit log is the event log (DESIGN.md, "Events"): an entry committed is an event, with the
entry's action as its type, so no change happens without its event, and nothing is written twice.
Within a tenant tree, entries are numbered by ``seq`` in commit order (appends take the tenant's
chain head under a lock), which is what consumers resume from: polling (``GET /orgs/{id}/events``),
Server-Sent Events, webhooks and the NATS sink all read the log in ``seq`` order, each from a
position of its own.

This module is what they share: an event's id, its payload, and the matching of a type against
the patterns a consumer subscribed to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any

# What a subscription may name: a type (``org.created``), or a pattern with ``*`` standing for any
# run of characters (``org.*``, ``*.deleted``, ``*``).
TYPE_PATTERN = re.compile(r"^[a-z0-9_.*]{1,64}$")


def event_id(entry_hash: str) -> str:
    """An event's id: stable (the same on every retry, endpoint and sink), unique (it is the
    entry's chain hash), and it names no other tenant's position or volume."""
    return "evt_" + entry_hash[:32]


def payload(entry: Any, org_public_id: str) -> dict[str, Any]:
    """The event of an audit entry (as ``audit.queries.as_seen_by`` shows it to the consumer:
    orgs out of its reach are null), in the Standard Webhooks shape: ``type``, ``timestamp``
    and ``data``."""
    at: datetime = entry.at
    return {
        "id": event_id(entry.hash),
        "type": entry.action,
        "timestamp": at.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "data": {
            "org_id": org_public_id,
            "sequence": entry.seq,
            "actor": entry.actor,
            "actor_key_id": entry.actor_key_id,
            "surface": entry.surface,
            "target_type": entry.target_type,
            "target_id": entry.target_id,
            "before": entry.before,
            "after": entry.after,
            "request_id": entry.request_id,
        },
    }


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$")


def matches(patterns: Iterable[str], event_type: str) -> bool:
    """True when ``event_type`` is one of ``patterns`` or matches one of their wildcards."""
    return any(_compiled(pattern).match(event_type) for pattern in patterns)
