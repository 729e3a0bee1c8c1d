"""Rate limits per credential and per org, in memory (one process) or Redis (several).

The limits are parsed, and their counters named, by the ``limits`` package; the counting is
orgplane's: fixed windows, every limit of a request counted in one step (one Redis round trip
for both the key's and the org's), because the package's storages take one or two storage
calls per limit and, in memory, a timer thread or an expiry task per increment.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from limits import RateLimitItem, parse


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # whole seconds until the window resets
    window: int
    name: str

    def headers(self, style: str = "ietf") -> dict[str, str]:
        """``ietf``: the RateLimit-* fields of the IETF draft, with Retry-After on a refusal;
        ``datadog``: Datadog's X-RateLimit-* (Reset in whole seconds, which its client waits)."""
        if style == "datadog":
            return {
                "X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Period": str(self.window),
                "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(
                    self.reset_after if self.allowed else max(1, self.reset_after)
                ),
                "X-RateLimit-Name": self.name,
            }
        values = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
            "RateLimit-Policy": f'{self.limit};w={self.window};name="{self.name}"',
        }
        if not self.allowed:
            values["Retry-After"] = str(max(1, self.reset_after))
        return values


# What counters answer for each limit hit: its count in the current window, seconds to its end.
Hits = list[tuple[int, float]]


class LocalWindows:
    """Fixed windows counted in this process's memory, for a single worker.

    The event loop runs one ``hit`` at a time, so a dict is enough; windows past their end are
    dropped in one sweep at most every ``SWEEP_SECONDS``.
    """

    SWEEP_SECONDS = 10.0

    def __init__(self) -> None:
        self._windows: dict[str, list[float]] = {}  # key -> [count, end (monotonic)]
        self._next_sweep = time.monotonic() + self.SWEEP_SECONDS

    async def hit(self, keys: list[tuple[str, int]]) -> Hits:
        """Count one hit on each ``(key, window seconds)``."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
            self._next_sweep = now + self.SWEEP_SECONDS
        hits = []
        for key, window in keys:
            entry = self._windows.get(key)
            if entry is None or entry[1] <= now:
                entry = self._windows[key] = [0, now + window]
            entry[0] += 1
            hits.append((int(entry[0]), entry[1] - now))
        return hits

    async def close(self) -> None:
        self._windows.clear()


class RedisWindows:
    """Fixed windows in Redis, shared by every worker and host.

    One MULTI/EXEC per request whatever the number of limits: for each, INCR, then EXPIRE NX
    (the first hit of a window starts its clock; Redis 7) and PTTL.
    """

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    async def hit(self, keys: list[tuple[str, int]]) -> Hits:
        pipe = self.client.pipeline(transaction=True)
        for key, window in keys:
            pipe.incr(key)
            pipe.expire(key, window, nx=True)
            pipe.pttl(key)
        replies = await pipe.execute()
        return [(int(replies[i]), max(0, replies[i + 2]) / 1000) for i in range(0, len(replies), 3)]

    async def close(self) -> None:
        await self.client.aclose()


class RateLimiter:
    def __init__(
        self,
        per_key: str,
        per_org: str,
        redis_url: str | None,
        sign_in_per_ip: str = "",
        auth_failures_per_ip: str = "",
    ) -> None:
        self.counters: LocalWindows | RedisWindows = (
            RedisWindows(redis_url) if redis_url else LocalWindows()
        )
        self.per_key: RateLimitItem | None = parse(per_key) if per_key else None
        self.per_org: RateLimitItem | None = parse(per_org) if per_org else None
        self.sign_in_per_ip: RateLimitItem | None = (
            parse(sign_in_per_ip) if sign_in_per_ip else None
        )
        self.auth_failures_per_ip: RateLimitItem | None = (
            parse(auth_failures_per_ip) if auth_failures_per_ip else None
        )
        self._extra: dict[str, RateLimitItem] = {}

    async def check(self, key_id: str, org_id: int) -> Verdict | None:
        """Count one request against both limits; the verdict of the tighter one, or None."""
        limits = [
            (name, item, ident)
            for name, item, ident in (
                ("key", self.per_key, key_id),
                ("org", self.per_org, str(org_id)),
            )
            if item is not None
        ]
        if not limits:
            return None
        verdicts = await self._hit(limits)
        refused = [v for v in verdicts if not v.allowed]
        if refused:
            return max(refused, key=lambda v: v.reset_after)
        return min(verdicts, key=lambda v: v.remaining)

    async def check_extra(self, name: str, limit: str, ident: str) -> Verdict:
        """Count one request against a surface's own limit, e.g. Sumo Logic's ``4/second`` per
        access key; ``name`` keeps its counters apart from the others'."""
        item = self._extra.get(limit)
        if item is None:
            item = self._extra[limit] = parse(limit)
        return (await self._hit([(name, item, ident)]))[0]

    async def check_sign_in(self, ip: str | None) -> Verdict | None:
        """Count one unauthenticated password or token attempt from ``ip``."""
        if self.sign_in_per_ip is None:
            return None
        return (await self._hit([("sign-in", self.sign_in_per_ip, ip or "unknown")]))[0]

    async def count_auth_failure(self, ip: str | None) -> Verdict | None:
        """Count one failed authentication from ``ip``. Only failures are counted: a valid key
        is never refused by this limit, from this address or any other."""
        if self.auth_failures_per_ip is None:
            return None
        return (await self._hit([("auth-failure", self.auth_failures_per_ip, ip or "unknown")]))[0]

    async def close(self) -> None:
        await self.counters.close()

    async def _hit(self, limits: list[tuple[str, RateLimitItem, str]]) -> list[Verdict]:
        hits = await self.counters.hit(
            [(item.key_for(name, ident), item.get_expiry()) for name, item, ident in limits]
        )
        return [
            Verdict(
                allowed=count <= item.amount,
                limit=item.amount,
                remaining=max(0, item.amount - count),
                # (now + window) - now can come out a hair above the window in floating point.
                reset_after=min(item.get_expiry(), max(0, math.ceil(reset_after))),
                window=item.get_expiry(),
                name=name,
            )
            for (name, item, _), (count, reset_after) in zip(limits, hits, strict=True)
        ]


DATADOG_PREFIX = "/datadog/"


async def add_rate_limit_headers(message: Any, scope: Any) -> None:
    """Litestar before-send hook: every response to a rate-limited request carries the limit's
    headers, RateLimit-* (Datadog's X-RateLimit-* under ``/datadog``).

    ``provide_principal`` leaves the verdict in the request state; headers a response already
    has (a 429 carries its own) are kept.
    """
    if message["type"] != "http.response.start":
        return
    verdict = scope.get("state", {}).get("rate_limit")
    if not isinstance(verdict, Verdict):
        return
    style = "datadog" if scope.get("path", "").startswith(DATADOG_PREFIX) else "ietf"
    headers = list(message.get("headers") or ())
    present = {name.lower() for name, _ in headers}
    headers.extend(
        (name, value.encode())
        for name, value in ((k.lower().encode(), v) for k, v in verdict.headers(style).items())
        if name not in present
    )
    message["headers"] = headers
