"""Sending one request to an endpoint: to the checked address, with timeouts, a capped read
of the answer, and no redirects followed (the connections: ``connections``)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from orgplane.core.webhooks import connections, destinations
from orgplane.core.webhooks.connections import HTTPFailure
from orgplane.core.webhooks.destinations import Network, Refused

if TYPE_CHECKING:
    from orgplane.config import Settings

# What is read of an endpoint's answer at most, and what the delivery log keeps of it.
MAX_RESPONSE_BYTES = 64 * 1024
EXCERPT_CHARS = 1024


@dataclass(frozen=True)
class Outcome:
    """What one attempt gave: a status (2xx: delivered) or the error that stopped it."""

    status_code: int | None
    error: str | None
    latency_ms: int
    excerpt: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Sender:
    """Sends deliveries to the addresses ``destinations.resolve`` lets through.

    The request goes to the address that passed the check; ``Host`` and TLS (SNI and the
    certificate's name) name the host, and a connection is reused only for the same name at the
    same address, so a TLS connection made for one name never carries another's requests.
    """

    def __init__(
        self,
        networks: Sequence[Network],
        *,
        connect_timeout: float = 5.0,
        total_timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.networks = tuple(networks)
        self.connect_timeout = connect_timeout
        self.total_timeout = total_timeout
        self.pool = connections.Pool(
            connect_timeout=connect_timeout, max_body=MAX_RESPONSE_BYTES, tls=tls
        )

    @classmethod
    def of(cls, settings: Settings) -> Sender:
        """A sender with the installation's allowed networks and timeouts."""
        return cls(
            settings.webhook_networks,
            connect_timeout=settings.webhook_connect_timeout_seconds,
            total_timeout=settings.webhook_timeout_seconds,
        )

    async def close(self) -> None:
        await self.pool.close()

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        """POST ``body`` to ``url`` after checking where it resolves now."""
        started = time.perf_counter()

        def took() -> int:
            return int((time.perf_counter() - started) * 1000)

        try:
            destination = await destinations.resolve(url, self.networks)
        except Refused as exc:
            return Outcome(None, str(exc)[:200], took(), None)
        target = destination.target
        try:
            # Host and SNI carry a name as ASCII (an internationalized one in its IDNA form).
            host = target.host if target.host.isascii() else target.host.encode("idna").decode()
        except UnicodeError as exc:
            return Outcome(None, f"the host name cannot be sent: {exc}"[:200], took(), None)
        host_header = host if ":" not in host else f"[{host}]"
        if target.port != (443 if target.scheme == "https" else 80):
            host_header += f":{target.port}"
        to = connections.Destination(
            host=str(destination.address),
            port=target.port,
            tls_name=host if target.scheme == "https" else None,
        )
        path = "".join(ch if ch.isascii() else quote(ch) for ch in target.path) or "/"
        try:
            async with asyncio.timeout(self.total_timeout):
                answer = await self.pool.post(to, path, {"Host": host_header, **headers}, body)
        except TimeoutError:
            return Outcome(None, f"timed out after {self.total_timeout:g} s", took(), None)
        except ssl.SSLError as exc:
            return Outcome(None, f"TLS: {exc.reason or exc}"[:200], took(), None)
        except (HTTPFailure, OSError) as exc:
            why = str(exc) if isinstance(exc, HTTPFailure) else f"{type(exc).__name__}: {exc}"
            return Outcome(None, why[:200], took(), None)
        excerpt = answer.body[:EXCERPT_CHARS].decode("utf-8", "replace")[:EXCERPT_CHARS]
        status = answer.status
        error = None
        if 300 <= status < 400:
            error = "redirects are not followed"
        elif not 200 <= status < 300:
            error = f"HTTP {status}"
        return Outcome(status, error, took(), excerpt or None)
