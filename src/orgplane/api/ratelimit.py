"""Rate limits per credential and per org, in memory (one process) or Redis (several)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.storage import storage_from_string


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


class LocalWindows:
    """Fixed windows counted in this process's memory, for a single worker.

    The ``limits`` package's memory storages are made for occasional checks: the synchronous one
    starts a timer thread (and waits for it to start) every 10 ms of traffic, the asynchronous one
    schedules an expiry task on every increment; on a request path that costs more than the
    request's own database read. The event loop runs one ``hit`` at a time, so a dict is enough;
    windows past their end are dropped in one sweep at most every ``SWEEP_SECONDS``.
    """

    SWEEP_SECONDS = 10.0

    def __init__(self) -> None:
        self._windows: dict[str, list[float]] = {}  # key -> [count, end (monotonic)]
        self._next_sweep = time.monotonic() + self.SWEEP_SECONDS

    def hit(self, key: str, window: int) -> tuple[int, float]:
        """Count one hit on ``key``; its count in the current window and seconds to the end."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
            self._next_sweep = now + self.SWEEP_SECONDS
        entry = self._windows.get(key)
        if entry is None or entry[1] <= now:
            entry = self._windows[key] = [0, now + window]
        entry[0] += 1
        return int(entry[0]), entry[1] - now


class RateLimiter:
    def __init__(
        self, per_key: str, per_org: str, redis_url: str | None, sign_in_per_ip: str = ""
    ) -> None:
        self.storage: Storage | None = None
        self.memory: LocalWindows | None = None
        if redis_url:
            uri = redis_url if redis_url.startswith("async+") else "async+" + redis_url
            self.storage = storage_from_string(uri)  # type: ignore[assignment]
        else:
            self.memory = LocalWindows()
        self.per_key: RateLimitItem | None = parse(per_key) if per_key else None
        self.per_org: RateLimitItem | None = parse(per_org) if per_org else None
        self.sign_in_per_ip: RateLimitItem | None = (
            parse(sign_in_per_ip) if sign_in_per_ip else None
        )
        self._extra: dict[str, RateLimitItem] = {}

    async def check(self, key_id: str, org_id: int) -> Verdict | None:
        """Count one request against both limits; the verdict of the tighter one, or None."""
        verdicts = []
        for name, item, ident in (
            ("key", self.per_key, key_id),
            ("org", self.per_org, str(org_id)),
        ):
            if item is None:
                continue
            verdicts.append(await self._hit(name, item, ident))
        if not verdicts:
            return None
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
        return await self._hit(name, item, ident)

    async def check_sign_in(self, ip: str | None) -> Verdict | None:
        """Count one unauthenticated password or token attempt from ``ip``."""
        if self.sign_in_per_ip is None:
            return None
        return await self._hit("sign-in", self.sign_in_per_ip, ip or "unknown")

    async def _hit(self, name: str, item: RateLimitItem, ident: str) -> Verdict:
        """A fixed window counted on the storage directly: one increment and one expiry read
        (the strategy's ``hit`` plus ``get_window_stats`` would be three storage calls)."""
        key = item.key_for(name, ident)
        if self.memory is not None:
            count, reset_after = self.memory.hit(key, item.get_expiry())
        else:
            assert self.storage is not None
            count = await self.storage.incr(key, item.get_expiry(), amount=1)
            reset_after = await self.storage.get_expiry(key) - time.time()
        return Verdict(
            allowed=count <= item.amount,
            limit=item.amount,
            remaining=max(0, item.amount - count),
            reset_after=max(0, math.ceil(reset_after)),
            window=item.get_expiry(),
            name=name,
        )


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
