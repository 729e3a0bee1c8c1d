"""Sending one request to an endpoint: to the checked address, with timeouts, a capped read
of the answer, and no redirects followed."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from orgplane.core.webhooks import destinations
from orgplane.core.webhooks.destinations import Destination, Network, Refused

if TYPE_CHECKING:
    from orgplane.config import Settings

# What is read of an endpoint's answer at most, and what the delivery log keeps of it.
MAX_RESPONSE_BYTES = 64 * 1024
EXCERPT_CHARS = 1024
_CLIENTS = 256
# httpx logs every request's URL at INFO; a webhook URL may carry the receiver's token.
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)


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
    """Sends deliveries, keeping connections open per (host name, address, port, scheme).

    Requests go to the address that passed the check (the URL names the address; ``Host``
    and TLS's SNI and certificate check name the host), so a connection is reused only for the
    same name at the same address: a TLS connection made for one name never carries another's
    requests.
    """

    def __init__(
        self,
        networks: Sequence[Network],
        *,
        connect_timeout: float = 5.0,
        total_timeout: float = 10.0,
    ) -> None:
        self.networks = tuple(networks)
        self.total_timeout = total_timeout
        self._timeout = httpx.Timeout(total_timeout, connect=connect_timeout)
        self._clients: OrderedDict[tuple[str, str, int, str], httpx.AsyncClient] = OrderedDict()

    def _client(self, destination: Destination) -> httpx.AsyncClient:
        target = destination.target
        key = (target.host, str(destination.address), target.port, target.scheme)
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                timeout=self._timeout,
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
            )
            self._clients[key] = client
            while len(self._clients) > _CLIENTS:
                _, old = self._clients.popitem(last=False)
                asyncio.get_running_loop().create_task(old.aclose())
        else:
            self._clients.move_to_end(key)
        return client

    @classmethod
    def of(cls, settings: Settings) -> Sender:
        """A sender with the installation's allowed networks and timeouts."""
        return cls(
            settings.webhook_networks,
            connect_timeout=settings.webhook_connect_timeout_seconds,
            total_timeout=settings.webhook_timeout_seconds,
        )

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            await client.aclose()

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
        address = destination.address
        host_in_url = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
        request_url = f"{target.scheme}://{host_in_url}:{target.port}{target.path}"
        default_port = 443 if target.scheme == "https" else 80
        host_header = target.host if ":" not in target.host else f"[{target.host}]"
        if target.port != default_port:
            host_header += f":{target.port}"
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        client = self._client(destination)
        try:
            async with asyncio.timeout(self.total_timeout):
                request = client.build_request(
                    "POST",
                    request_url,
                    content=body,
                    headers={**headers, "host": host_header},
                    extensions=extensions,
                )
                response = await client.send(request, stream=True)
                try:
                    read = bytearray()
                    async for chunk in response.aiter_raw():
                        read += chunk
                        if len(read) >= MAX_RESPONSE_BYTES:
                            break
                finally:
                    await response.aclose()
        except TimeoutError:
            return Outcome(None, f"timed out after {self.total_timeout:g} s", took(), None)
        except httpx.TimeoutException as exc:
            return Outcome(None, f"timed out ({type(exc).__name__})", took(), None)
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:200], took(), None)
        excerpt = bytes(read[:EXCERPT_CHARS]).decode("utf-8", "replace")[:EXCERPT_CHARS]
        error = None
        if 300 <= response.status_code < 400:
            error = "redirects are not followed"
        elif not 200 <= response.status_code < 300:
            error = f"HTTP {response.status_code}"
        return Outcome(response.status_code, error, took(), excerpt or None)
