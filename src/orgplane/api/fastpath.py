"""The hottest reads, ``GET /orgs/{id}`` and ``GET /orgs/{id}/children`` with an API key,
served outside the framework.

Polling an org and paging its children are most of a control plane's traffic, and Litestar's
request machinery (routing, the dependency graph, the response object, the before-send hooks)
costs more than everything orgplane itself does for an org. This ASGI layer answers these
requests when everything goes right, with the same steps in the same order as the routed
endpoints: authenticate (the key cache), write the attempt to the access log, count the rate
limits, read through ``reach`` (and ``list_children``), and send the same bytes with the same
headers.

Anything else goes on to Litestar, which answers it as it answers every request: no or an
unknown credential, a user-bound key or a session (their roles are read per request), a path
or query the router would refuse or that filters the page, an org out of reach or deleted, a
missing scope, a bad cursor, a rate-limit refusal, a database error. Once the attempt is logged
and counted, the fast path leaves its principal and verdict in the scope (``SETTLED``) so that
Litestar neither logs nor counts it again.
``ORGPLANE_FAST_READS=false`` turns the layer off.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from orgplane.api.deps import SETTLED, Services, record_attempt
from orgplane.api.native.schemas import org_out, org_page_out
from orgplane.core.access.principal import RequestMeta
from orgplane.core.access.service import authenticate, parse_authorization, reach
from orgplane.core.orgs import queries as org_queries
from orgplane.core.orgs.service import etag
from orgplane.core.pagination import DEFAULT_LIMIT, MAX_LIMIT

ORG_PREFIX = "/orgs/"
# The route templates Litestar writes into the scope for these endpoints: the metrics' labels.
ORG_ROUTE = "/orgs/{org_id}"
CHILDREN_ROUTE = "/orgs/{org_id}/children"
# The endpoints' own bounds on their parameters; anything else gets the router's 400.
MAX_ORG_REF = 64
MAX_CURSOR = 512
_LIMIT = re.compile(rb"[1-9][0-9]{0,3}")
_CURSOR = re.compile(rb"[A-Za-z0-9_-]{1,%d}" % MAX_CURSOR)
_encoder = msgspec.json.Encoder()


class FastReads:
    def __init__(self, app: Any, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(ORG_PREFIX) and await self._serve(scope, send, path):
                return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Any, send: Any, path: str) -> bool:
        """Answer an org or its children page and return True, or return False to hand on."""
        org_ref, slash, rest = path[len(ORG_PREFIX) :].partition("/")
        if not org_ref or len(org_ref) > MAX_ORG_REF or "\x00" in path:
            return False
        query: bytes = scope.get("query_string", b"")
        if not slash:
            if query and (b"%00" in query or b"\x00" in query):
                return False
            page = None
        elif rest == "children":
            page = _page_query(query)
            if page is None:
                return False
        else:
            return False

        authorization = user_agent = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is not None:
                    return False
                authorization = value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = value.decode("latin-1") if user_agent is None else user_agent
            elif name in (b"dd-api-key", b"dd-application-key"):
                return False
        secret = parse_authorization(authorization)
        if secret is None:
            return False
        services = self.services
        try:
            result = await authenticate(services.db.read, services.keys, secret)
        except Exception:
            # A database error: the routed endpoint meets it again and reports it.
            return False
        principal = result.principal
        if principal is None or principal.user_id is not None:
            return False

        client = scope.get("client")
        state = scope.setdefault("state", {})
        ip = client[0] if client else None
        meta = RequestMeta(state.get("request_id"), ip, user_agent, surface="api")
        record_attempt(services, result, "GET", path, meta)
        verdict = await services.limiter.check(principal.key_id, principal.org_id)
        state[SETTLED] = (principal, verdict)
        if verdict is not None and not verdict.allowed:
            return False
        headers: list[tuple[bytes, bytes]] = []
        try:
            async with services.db.read() as conn:
                if page is None:
                    row = await reach(conn, principal, org_ref, scope="orgs:read")
                    body = _encoder.encode(org_out(row, show_parent=row.id != principal.org_id))
                    headers.append((b"etag", etag(row).encode()))
                    scope["path_template"] = ORG_ROUTE
                else:
                    limit, cursor = page
                    children = await org_queries.list_children(
                        conn, principal, org_ref, limit=limit, cursor=cursor
                    )
                    body = _encoder.encode(org_page_out(children))
                    scope["path_template"] = CHILDREN_ROUTE
        except Exception:
            # Not found, forbidden, a bad cursor, a database error: the routed endpoint answers.
            scope.pop("path_template", None)
            return False

        headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(body)).encode()))
        if verdict is not None:
            headers.extend((k.lower().encode(), v.encode()) for k, v in verdict.headers().items())
        del state[SETTLED]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True


def _page_query(query: bytes) -> tuple[int, str | None] | None:
    """``limit`` and ``cursor`` of a children page when the query holds nothing else, each at
    most once and well-formed; None hands the request on (filters, odd or bad values)."""
    limit, cursor = DEFAULT_LIMIT, None
    seen: set[bytes] = set()
    for part in query.split(b"&") if query else ():
        name, _, value = part.partition(b"=")
        if name in seen:
            return None
        seen.add(name)
        if name == b"limit" and _LIMIT.fullmatch(value) and int(value) <= MAX_LIMIT:
            limit = int(value)
        elif name == b"cursor" and _CURSOR.fullmatch(value):
            cursor = value.decode()
        else:
            return None
    return limit, cursor
