"""Where a webhook may send: its URL's shape, and the addresses its host may resolve to.

A webhook's URL is chosen by a tenant, and orgplane's workers send requests to it from inside
the installation's network: without a check it would reach the cloud's metadata service, the
database, or an admin port on localhost (server-side request forgery). So:

* at create and update, the URL must be absolute https (or http, only for the networks the
  operator allows), carry no credentials, and name a host and a valid port; an IP literal is
  checked at once, like a resolved address;
* at every delivery, the host is resolved, every address it resolves to must pass the check,
  and the request goes to the address that passed (``Destination.address``), with the name kept
  for the ``Host`` header and TLS (SNI and the certificate's name): DNS rebinding cannot switch
  it between the check and the connection.

The check refuses loopback, private, link-local, multicast, reserved, unspecified, CGNAT
(100.64.0.0/10) and every other address that is not globally routable, IPv4 and IPv6 (an
IPv4-mapped IPv6 address is checked as its IPv4 address), unless the address is inside one of
``ORGPLANE_WEBHOOK_ALLOWED_NETWORKS``. The cloud metadata addresses are refused even then.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from orgplane.core.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2000
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# Instance metadata services (AWS, GCP, Azure, ...: 169.254.169.254; AWS's IPv6 one).
METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


class Refused(Exception):
    """A destination orgplane will not send to; the message says why (the delivery log shows
    it)."""


@dataclass(frozen=True)
class Target:
    """A webhook URL's parts, as checked at create and update."""

    scheme: str
    host: str  # a name, or an IP literal (without brackets)
    port: int
    path: str  # path and query, as given


@dataclass(frozen=True)
class Destination:
    """Where one request goes: the address that passed the check, for ``target``'s host."""

    target: Target
    address: IPAddress


@functools.lru_cache(maxsize=1024)
def parse(url: str) -> Target:
    """The URL's parts, or ``ValueError`` saying what is wrong with it."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValueError("must not contain whitespace or control characters")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ValueError("must be an https:// URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("must not carry credentials (user:password@)")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError("must name a host")
    if parts.fragment:
        raise ValueError("must not have a fragment (#...)")
    if port is None:
        port = 443 if scheme == "https" else 80
    if not 1 <= port <= 65535:
        raise ValueError("port must be between 1 and 65535")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme=scheme, host=host, port=port, path=path)


@functools.lru_cache(maxsize=1024)
def literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _allowed(address: IPAddress, networks: Sequence[Network]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def refusal(address: IPAddress, networks: Sequence[Network]) -> str | None:
    """Why orgplane will not send to ``address`` (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal(address.ipv4_mapped, networks)
    if address in METADATA:
        return f"{address} is a cloud metadata address"
    if _allowed(address, networks):
        return None
    kind = (
        "loopback"
        if address.is_loopback
        else "private"
        if address.is_private
        else "link-local"
        if address.is_link_local
        else "multicast"
        if address.is_multicast
        else "unspecified"
        if address.is_unspecified
        else "reserved"
        if address.is_reserved
        else "shared (CGNAT)"
        if address in _CGNAT
        else "not globally routable"
        if not address.is_global
        else None
    )
    if kind is None:
        return None
    return f"{address} is a {kind} address (ORGPLANE_WEBHOOK_ALLOWED_NETWORKS does not allow it)"


def _is_local_name(host: str) -> bool:
    host = host.lower()
    return host == "localhost" or host.endswith(".localhost")


def check_url(url: str, networks: Sequence[Network], *, field: str = "url") -> Target:
    """A webhook URL checked as far as it can be without DNS (at create and update): a 400
    naming ``field`` otherwise."""
    try:
        target = parse(url)
    except ValueError as exc:
        raise InvalidInput.for_field(field, str(exc)) from None
    address = literal(target.host)
    if address is None and _is_local_name(target.host):
        address = ipaddress.ip_address("127.0.0.1")
    if address is not None and (why := refusal(address, networks)) is not None:
        raise InvalidInput.for_field(field, f"refused destination: {why}")
    if target.scheme == "http":
        if not networks:
            raise InvalidInput.for_field(field, "must be an https:// URL")
        if address is not None and not _allowed(address, networks):
            raise InvalidInput.for_field(
                field, "plain http is allowed only to ORGPLANE_WEBHOOK_ALLOWED_NETWORKS"
            )
    return target


async def resolve(url: str, networks: Sequence[Network]) -> Destination:
    """The address to send to now, after resolving the URL's host: every address it resolves
    to must pass the check (a name that also resolves to a private address is refused), or
    ``Refused``."""
    try:
        target = parse(url)
    except ValueError as exc:
        raise Refused(f"invalid URL: {exc}") from None
    if literal(target.host) is not None:
        # Nothing to resolve: the same URL and networks always give the same answer.
        return _checked_literal(target, tuple(networks))
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise Refused(f"cannot resolve {target.host}: {exc}") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise Refused(f"{target.host} resolves to no address")
    return _checked(target, addresses, networks)


@functools.lru_cache(maxsize=1024)
def _checked_literal(target: Target, networks: tuple[Network, ...]) -> Destination:
    address = literal(target.host)
    assert address is not None
    return _checked(target, [address], networks)


def _checked(
    target: Target, addresses: list[IPAddress], networks: Sequence[Network]
) -> Destination:
    for candidate in addresses:
        if (why := refusal(candidate, networks)) is not None:
            raise Refused(f"refused destination: {why}")
    if target.scheme == "http" and not all(_allowed(a, networks) for a in addresses):
        raise Refused("plain http is allowed only to ORGPLANE_WEBHOOK_ALLOWED_NETWORKS")
    return Destination(target=target, address=addresses[0])
