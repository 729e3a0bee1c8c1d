"""The deliveries' HTTP/1.1 connections against real servers on 127.0.0.1 that answer as
scripted: keep-alive, answers of every framing, a server that closes, a slow one, a broken one,
TLS. Each test runs on asyncio's loop and on uvloop (what `orgplane serve` and `orgplane worker`
run)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orgplane.core.webhooks.connections import Destination, HTTPFailure, Pool
from orgplane.core.webhooks.sender import Sender

RUNNERS = {"asyncio": asyncio.run, "uvloop": uvloop.run}
LOCAL = [ipaddress.ip_network("127.0.0.0/8")]

# What a scripted server writes for one request: bytes, or a callable that writes and may close.
Script = Callable[[asyncio.StreamWriter, bytes], Awaitable[None]]


@dataclass
class Scripted:
    """A server answering its n-th request (counted over all connections) with scripts[n]."""

    scripts: list[Script]
    port: int = 0
    connections: int = 0
    closed: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                await self.scripts[len(self.requests) - 1](writer, request)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed += 1
        finally:
            writer.close()


def answer(raw: bytes, *, close: bool = False, delay: float = 0.0) -> Script:
    async def script(writer: asyncio.StreamWriter, _: bytes) -> None:
        if delay:
            await asyncio.sleep(delay)
        writer.write(raw)
        await writer.drain()
        if close:
            writer.close()

    return script


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def run(test: Callable[[Scripted], Awaitable[Any]], scripts: list[Script], runner: str) -> Any:
    async def main() -> Any:
        server = Scripted(scripts)
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        server.port = listening.sockets[0].getsockname()[1]
        try:
            return await test(server)
        finally:
            listening.close()

    return RUNNERS[runner](main())


def sender() -> Sender:
    return Sender(LOCAL, connect_timeout=2, total_timeout=1)


def two_sends(scripts: list[Script], runner: str) -> tuple[Any, Any, int]:
    """Two deliveries one after the other to a server answering with ``scripts``: their
    outcomes and the connections the server accepted."""

    async def test(server: Scripted) -> Any:
        s = sender()
        first = await s.send(f"http://127.0.0.1:{server.port}/", {}, b"{}")
        second = await s.send(f"http://127.0.0.1:{server.port}/", {}, b"{}")
        await s.close()
        return first, second, server.connections

    return run(test, scripts, runner)  # type: ignore[no-any-return]


@pytest.fixture(params=sorted(RUNNERS))
def runner(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_kept_alive_connection_carries_request_after_request(runner: str) -> None:
    async def test(server: Scripted) -> list[Any]:
        s = sender()
        url = f"http://127.0.0.1:{server.port}/in?token=a%2Fb"
        outcomes = [await s.send(url, {"webhook-id": f"evt_{i}"}, b"{}") for i in range(5)]
        await s.close()
        return outcomes

    server_box: list[Scripted] = []

    async def recording(server: Scripted) -> list[Any]:
        server_box.append(server)
        return await test(server)

    outcomes = run(recording, [answer(OK)] * 5, runner)
    (server,) = server_box
    assert [(o.status_code, o.excerpt, o.error) for o in outcomes] == [(200, "ok", None)] * 5
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /in?token=a%2Fb HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in first
    assert b"webhook-id: evt_0\r\n" in first and first.endswith(b"\r\n\r\n{}")


@pytest.mark.parametrize(
    ("raw", "status", "excerpt"),
    [
        (
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            201,
            "abc",
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, None),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 200, "x"),
        (
            b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n",
            302,
            None,
        ),
        (b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy", 503, "busy"),
    ],
)
def test_answers_of_every_framing(
    runner: str, raw: bytes, status: int, excerpt: str | None
) -> None:
    first, again, connections = two_sends([answer(raw), answer(OK)], runner)
    assert (first.status_code, first.excerpt) == (status, excerpt)
    assert first.delivered is (200 <= status < 300)
    if status == 302:
        assert first.error == "redirects are not followed"
    assert again.status_code == 200 and connections == 1  # still kept alive


def test_an_answer_ended_by_the_close_of_its_connection(runner: str) -> None:
    no_length = answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", close=True)
    first, second, connections = two_sends([no_length, no_length], runner)
    assert (first.status_code, first.excerpt) == (200, "until the end")
    assert second.status_code == 200 and connections == 2


def test_a_long_answer_is_read_up_to_the_cap_and_its_connection_dropped(runner: str) -> None:
    body = b"x" * (200 * 1024)
    long = answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    first, second, connections = two_sends([long, answer(OK)], runner)
    assert first.status_code == 200 and first.excerpt == "x" * 1024
    assert second.status_code == 200 and connections == 2


def test_a_connection_the_server_closed_while_idle_is_replaced(runner: str) -> None:
    async def test(server: Scripted) -> Any:
        s = sender()
        first = await s.send(f"http://127.0.0.1:{server.port}/", {}, b"{}")
        await asyncio.sleep(0.1)  # the server has closed it by now
        second = await s.send(f"http://127.0.0.1:{server.port}/", {}, b"{}")
        await s.close()
        return first, second, server.connections, len(server.requests)

    closes_after = answer(OK, close=True)
    first, second, connections, requests = run(test, [closes_after, answer(OK)], runner)
    assert first.status_code == second.status_code == 200
    assert connections == 2 and requests == 2


def test_a_request_reaching_a_server_that_dies_mid_answer_is_not_sent_again(runner: str) -> None:
    async def test(server: Scripted) -> Any:
        s = sender()
        outcome = await s.send(f"http://127.0.0.1:{server.port}/", {}, b"{}")
        await s.close()
        return outcome, len(server.requests)

    cut = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close=True)
    outcome, requests = run(test, [cut, answer(OK)], runner)
    assert outcome.status_code is None and requests == 1
    assert outcome.error == "the connection closed before the answer ended"


def test_a_broken_answer_a_slow_one_and_no_server(runner: str) -> None:
    async def test(server: Scripted) -> Any:
        s = sender()
        broken = await s.send(f"http://127.0.0.1:{server.port}/", {}, b"{}")
        slow = await s.send(f"http://127.0.0.1:{server.port}/", {}, b"{}")
        # Port 9 (discard) is closed on 127.0.0.1 here: refused at once.
        refused = await s.send("http://127.0.0.1:9/", {}, b"{}")
        await s.close()
        return broken, slow, refused

    scripts = [answer(b"SMTP ready\r\n\r\n"), answer(OK, delay=3)]
    broken, slow, refused = run(test, scripts, runner)
    assert broken.status_code is None and broken.error.startswith("invalid HTTP answer")
    assert slow.status_code is None and slow.error == "timed out after 1 s"
    assert refused.status_code is None and "ConnectionRefusedError" in refused.error


def test_a_header_holding_a_line_break_is_never_written() -> None:
    async def test(server: Scripted) -> Any:
        pool = Pool(connect_timeout=1)
        try:
            await pool.post(
                Destination("127.0.0.1", server.port, None), "/", {"x": "a\r\nInjected: 1"}, b""
            )
        finally:
            await pool.close()

    with pytest.raises(HTTPFailure, match="line break"):
        run(test, [answer(OK)], "asyncio")


def _certificate(tmp: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_checks_the_name_and_sends_it(runner: str, tmp_path: Path) -> None:
    """TLS to the checked address: the certificate must be valid for the webhook's host (sent in
    SNI), not for the address."""
    cert, key = _certificate(tmp_path, "hooks.example")
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    names: list[str | None] = []
    served.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,misc,return-value]
    trusting = ssl.create_default_context(cafile=str(cert))

    async def main() -> Any:
        server = Scripted([answer(OK)] * 3)
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=served)
        port = listening.sockets[0].getsockname()[1]
        pool = Pool(connect_timeout=2, tls=trusting)
        try:
            good = await pool.post(
                Destination("127.0.0.1", port, "hooks.example"), "/", {"Host": "hooks.example"}, b""
            )
            with pytest.raises(ssl.SSLCertVerificationError):
                await pool.post(Destination("127.0.0.1", port, "other.example"), "/", {}, b"")
            return good
        finally:
            await pool.close()
            listening.close()

    good = RUNNERS[runner](main())
    assert good.status == 200
    assert names[0] == "hooks.example"


def test_idle_connections_are_closed_after_their_time(runner: str) -> None:
    async def test(server: Scripted) -> Any:
        pool = Pool(connect_timeout=1, idle_seconds=0.05)
        to = Destination("127.0.0.1", server.port, None)
        try:
            await pool.post(to, "/", {}, b"")
            await asyncio.sleep(0.1)
            await pool.post(to, "/", {}, b"")  # the idle one is too old: a new connection
            await asyncio.sleep(0.1)
            await pool.post(Destination("localhost", server.port, None), "/", {}, b"")
            await asyncio.sleep(0.05)
            # The sweep on that request closed the second connection, idle for too long.
            return server.connections, server.closed
        finally:
            await pool.close()

    connections, closed = run(test, [answer(OK)] * 3, runner)
    assert connections == 3 and closed >= 2
