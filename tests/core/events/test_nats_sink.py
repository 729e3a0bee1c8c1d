"""The NATS JetStream sink against the real NATS server, on SQLite and PostgreSQL: every event on
its subject with its payload and Nats-Msg-Id, a republish after a crash dropped by JetStream, an
outage survived, and the sink in `orgplane worker`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from orgplane.core import events
from orgplane.core.events.jetstream import CONSUMER, NatsSink, redacted
from orgplane.models import audit_log, event_positions, orgs
from support.cli import free_port, start_serve
from support.harness import Harness, start_harness, stop_harness
from support.nats import Stream


@pytest.fixture
async def hn(db_url: str, nats_stream: Stream) -> AsyncIterator[Harness]:
    """The harness pointed at the test's own stream and subject prefix."""
    harness = await start_harness(
        db_url, webhook_delivery="off", events_nats_backoff_max_seconds=0.2,
        **nats_stream.settings(),
    )  # fmt: skip
    try:
        yield harness
    finally:
        await stop_harness(harness)


async def make_events(h: Harness) -> str:
    """An org created below the root and credits allocated to it; the child's id."""
    root = h.root.org_id
    limit = await h.client.put(
        f"/orgs/{root}/limits/credits", json={"amount": 1000}, headers=h.auth()
    )
    assert limit.status_code == 200, limit.text
    child: str = (await h.create_org(root, "Child"))["id"]
    allocated = await h.client.put(
        f"/orgs/{root}/children/{child}/allocations/credits",
        json={"amount": 300},
        headers=h.auth(),
    )
    assert allocated.status_code == 200, allocated.text
    return child


async def expected_events(h: Harness) -> list[tuple[str, dict[str, Any]]]:
    """(subject, payload) of every entry of the root's tenant, in order, straight from the
    audit log and the events contract."""
    async with h.services.db.read() as conn:
        root = (await conn.execute(sa.select(orgs).where(orgs.c.public_id == h.root.org_id))).one()
        rows = (
            await conn.execute(
                sa.select(*audit_log.c, orgs.c.public_id.label("org_public_id"))
                .select_from(audit_log.join(orgs, orgs.c.id == audit_log.c.org_id))
                .where(audit_log.c.root_id == root.id)
                .order_by(audit_log.c.seq)
            )
        ).all()
    prefix = h.services.settings.events_nats_subject_prefix
    return [
        (f"{prefix}.{root.public_id}.{row.action}", events.payload(row, row.org_public_id))
        for row in rows
    ]


async def wait_for(check: Callable[[], Any], within: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_every_event_is_published_on_its_subject_with_its_id(
    hn: Harness, nats_stream: Stream
) -> None:
    child = await make_events(hn)
    sink = NatsSink(hn.services.db, hn.services.settings)
    try:
        published = await sink.publish_pending()
    finally:
        await sink.close()
    expected = await expected_events(hn)
    assert published == len(expected)
    messages = await nats_stream.messages()
    got = [(m.subject, orjson.loads(m.data)) for m in messages]
    assert got == expected  # the whole tenant's view, in the log's order
    for message, (_, payload) in zip(messages, expected, strict=True):
        assert message.headers["Nats-Msg-Id"] == payload["id"]
    root = hn.root.org_id
    prefix = nats_stream.prefix
    by_type = {subject: payload for subject, payload in got}
    created = by_type[f"{prefix}.{root}.org.created"]
    assert created["data"]["org_id"] == child and created["type"] == "org.created"
    allocation = by_type[f"{prefix}.{root}.credits.allocated"]
    assert allocation["data"]["org_id"] == child
    assert allocation["data"]["target_id"] == f"{child}/credits"
    assert allocation["data"]["after"]["limit"] == 300
    assert allocation["data"]["after"]["parent"] == root
    # The subjects' dots separate tokens: a wildcard subscription per type works.
    info = await nats_stream.js.stream_info(nats_stream.name, subjects_filter=f"{prefix}.*.org.>")
    assert sum(info.state.subjects.values()) == sum(
        1 for s, _ in got if s.startswith(f"{prefix}.{root}.org.")
    )
    # The position moved past them: a second pass has nothing to publish.
    sink = NatsSink(hn.services.db, hn.services.settings)
    try:
        assert await sink.publish_pending() == 0
    finally:
        await sink.close()


async def test_a_republish_after_a_crash_is_dropped_by_jetstream(
    hn: Harness, nats_stream: Stream
) -> None:
    await make_events(hn)
    sink = NatsSink(hn.services.db, hn.services.settings)
    try:
        first = await sink.publish_pending()
        assert first > 0 and await nats_stream.count() == first
        # A process that died after JetStream's acks and before its position moved: the
        # position is where it was before the batch.
        async with hn.services.db.engine.begin() as conn:
            await conn.execute(
                sa.update(event_positions)
                .where(event_positions.c.consumer == CONSUMER)
                .values(last_seq=0)
            )
        again = await sink.publish_pending()
    finally:
        await sink.close()
    assert again == first  # everything was sent again...
    assert await nats_stream.count() == first  # ...and JetStream kept each event once
    # New events after the republish go on from there.
    await hn.create_org(hn.root.org_id, "Later")
    sink = NatsSink(hn.services.db, hn.services.settings)
    try:
        assert await sink.publish_pending() == 1
    finally:
        await sink.close()
    assert await nats_stream.count() == first + 1


async def test_two_sinks_share_the_tenants(hn: Harness, nats_stream: Stream) -> None:
    for i in range(5):
        await hn.create_org(hn.root.org_id, f"Org {i}")
    sinks = [NatsSink(hn.services.db, hn.services.settings) for _ in range(2)]
    try:
        counts = await asyncio.gather(*(s.publish_pending() for s in sinks))
    finally:
        for sink in sinks:
            await sink.close()
    expected = await expected_events(hn)
    assert await nats_stream.count() == len(expected)
    if hn.services.db.is_sqlite:
        assert sum(counts) >= len(expected)  # both may publish: JetStream drops the repeats
    else:
        assert sorted(counts) == [0, len(expected)]  # the position row went to one of them


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def nats_on(port: int, target: str) -> AsyncIterator[None]:
    """NATS reachable at 127.0.0.1:``port`` (a TCP relay to the real server)."""
    host, target_port = target.removeprefix("nats://").rsplit(":", 1)
    tasks: set[asyncio.Task[None]] = set()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(target_port))
        for pair in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(_forward(*pair))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(relay, "127.0.0.1", port, reuse_address=True)
    try:
        yield
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await server.wait_closed()


async def test_the_sink_survives_an_outage_and_picks_up_where_it_left_off(
    hn: Harness, nats_stream: Stream, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings = hn.services.settings.model_copy(
        update={"events_nats_url": f"nats://orgplane:s3cret@127.0.0.1:{port}"}
    )
    assert redacted(settings.events_nats_url) == f"nats://127.0.0.1:{port}"
    sink = NatsSink(hn.services.db, settings)
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="orgplane.events.nats")
    running = asyncio.create_task(sink.run(stop))
    try:
        await make_events(hn)
        # Nothing listens: the sink retries (backoff up to 0.2 s here) and logs the outage once.
        await asyncio.sleep(1.5)
        assert not running.done()
        outage = [r for r in caplog.records if "cannot publish" in r.getMessage()]
        assert len(outage) == 1, [r.getMessage() for r in caplog.records]
        assert f"nats://127.0.0.1:{port}" in outage[0].getMessage()
        assert "s3cret" not in caplog.text and "orgplane:" not in outage[0].getMessage()
        assert await nats_stream.count() == 0
        # NATS comes back on that address: everything that waited is published, in order.
        async with nats_on(port, nats_stream.settings()["events_nats_url"]):
            expected = await expected_events(hn)

            async def all_there() -> bool:
                return await nats_stream.count() == len(expected)

            await wait_for(all_there)
            got = [(m.subject, orjson.loads(m.data)) for m in await nats_stream.messages()]
            assert got == expected
            assert any("again after" in r.getMessage() for r in caplog.records)
            # New events go on being published.
            await hn.create_org(hn.root.org_id, "After the outage")

            async def one_more() -> bool:
                return await nats_stream.count() == len(expected) + 1

            await wait_for(one_more)
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
    assert "s3cret" not in caplog.text


async def test_orgplane_worker_publishes_events(
    hn: Harness, nats_stream: Stream, db_url: str
) -> None:
    await make_events(hn)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORGPLANE_")}
    settings = nats_stream.settings()
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orgplane.cli", "worker",
        env={
            **clean,
            "ORGPLANE_DATABASE_URL": db_url,
            "ORGPLANE_ENVIRONMENT": "test",
            "ORGPLANE_LOG_LEVEL": "warning",
            "ORGPLANE_EVENTS_NATS_URL": settings["events_nats_url"],
            "ORGPLANE_EVENTS_NATS_STREAM": settings["events_nats_stream"],
            "ORGPLANE_EVENTS_NATS_SUBJECT_PREFIX": settings["events_nats_subject_prefix"],
            "ORGPLANE_EVENTS_NATS_POLL_SECONDS": "0.05",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        expected = await expected_events(hn)

        async def all_there() -> bool:
            return await nats_stream.count() == len(expected)

        await wait_for(all_there)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(worker.communicate(), 30)
    assert worker.returncode == 0, (out, err)
    assert b"publishing events to NATS at nats://" in err
    got = [(m.subject, orjson.loads(m.data)) for m in await nats_stream.messages()]
    assert got == expected


async def test_orgplane_serve_publishes_events(
    hn: Harness, nats_stream: Stream, db_url: str
) -> None:
    settings = nats_stream.settings()
    server, base = await start_serve(
        db_url,
        ORGPLANE_EVENTS_NATS_URL=settings["events_nats_url"],
        ORGPLANE_EVENTS_NATS_STREAM=settings["events_nats_stream"],
        ORGPLANE_EVENTS_NATS_SUBJECT_PREFIX=settings["events_nats_subject_prefix"],
        ORGPLANE_EVENTS_NATS_POLL_SECONDS="0.05",
    )
    try:
        async with httpx.AsyncClient(base_url=base, headers=hn.auth()) as client:
            made = await client.post(f"/orgs/{hn.root.org_id}/children", json={"name": "Child"})
            assert made.status_code == 201, made.text
        expected = await expected_events(hn)

        async def all_there() -> bool:
            return await nats_stream.count() == len(expected)

        await wait_for(all_there)
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(server.communicate(), 60)
    assert server.returncode == 0, (out, err)
    got = [(m.subject, orjson.loads(m.data)) for m in await nats_stream.messages()]
    assert got == expected
    assert got[-1][0] == f"{nats_stream.prefix}.{hn.root.org_id}.org.created"
    assert got[-1][1]["data"]["org_id"] == made.json()["id"]
