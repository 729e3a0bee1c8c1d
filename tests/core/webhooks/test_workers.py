"""The webhooks' workers under concurrency, on SQLite and PostgreSQL: the fan-out reads every
committed entry once while others commit, `orgplane worker` processes never send one attempt
twice, a worker killed mid-delivery loses nothing, and `orgplane serve` delivers in process and
stops cleanly with a delivery in flight."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from orgplane.core.webhooks import dispatch
from orgplane.core.webhooks.worker import Worker
from orgplane.models import audit_log, webhook_attempts, webhook_deliveries, webhooks
from support.cli import start_serve
from support.harness import Harness, start_harness, stop_harness
from support.receiver import Receiver, receiver

LOCAL = "127.0.0.0/8"


@pytest.fixture
async def hk(db_url: str) -> AsyncIterator[Harness]:
    harness = await start_harness(
        db_url, webhook_allowed_networks=LOCAL, webhook_retry_schedule="0,0",
        webhook_delivery="off",
    )  # fmt: skip
    try:
        yield harness
    finally:
        await stop_harness(harness)


@pytest.fixture
def rx() -> Any:
    with receiver() as r:
        yield r


async def create_webhook(h: Harness, url: str, **fields: Any) -> dict[str, Any]:
    body = {"url": url, "event_types": ["org.created"], **fields}
    response = await h.client.post(f"/orgs/{h.root.org_id}/webhooks", json=body, headers=h.auth())
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def wait_for(check: Callable[[], Any], within: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def deliveries(h: Harness) -> list[Any]:
    async with h.services.db.read() as conn:
        return list((await conn.execute(sa.select(webhook_deliveries))).all())


async def start_worker(db_url: str, **env: str) -> asyncio.subprocess.Process:
    """`orgplane worker` in a subprocess, on the test's database."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORGPLANE_")}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orgplane.cli", "worker",
        env={
            **clean,
            "ORGPLANE_DATABASE_URL": db_url,
            "ORGPLANE_ENVIRONMENT": "test",
            "ORGPLANE_LOG_LEVEL": "warning",
            "ORGPLANE_WEBHOOK_ALLOWED_NETWORKS": LOCAL,
            "ORGPLANE_WEBHOOK_POLL_SECONDS": "0.05",
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_fan_out_reads_every_entry_once_while_others_commit(
    hk: Harness, rx: Receiver
) -> None:
    await create_webhook(hk, rx.url + "/hook")
    done = asyncio.Event()

    async def create_orgs() -> None:
        try:
            for batch in range(8):
                await asyncio.gather(
                    *(hk.create_org(hk.root.org_id, f"Org {batch}-{i}") for i in range(6))
                )
        finally:
            done.set()

    async def dispatch_meanwhile() -> int:
        passes = 0
        while not done.is_set():
            await dispatch.dispatch(hk.services.db, limit=5)
            passes += 1
            await asyncio.sleep(0)
        await dispatch.dispatch(hk.services.db)
        return passes

    _, passes = await asyncio.gather(create_orgs(), dispatch_meanwhile())
    assert passes > 1
    async with hk.services.db.read() as conn:
        since = (await conn.execute(sa.select(webhooks.c.since_seq))).scalar_one()
        statement = sa.select(audit_log.c.seq).where(
            audit_log.c.action == "org.created", audit_log.c.seq > since
        )
        created = set((await conn.execute(statement)).scalars())
    queued = [d.seq for d in await deliveries(hk)]
    assert len(created) == 48
    assert sorted(queued) == sorted(created)  # each once, none skipped


async def run_workers(
    db_url: str, until: Callable[[], Any], count: int = 2, **env: str
) -> list[tuple[bytes, bytes]]:
    """``count`` worker processes, until ``until()`` holds; each stopped by SIGTERM and exiting
    cleanly. Their (stdout, stderr after the start-up line)."""
    workers = [await start_worker(db_url, **env) for _ in range(count)]
    try:
        for worker in workers:
            # Started (its signal handlers set): a SIGTERM before would kill it outright.
            assert worker.stderr is not None
            line = b""
            while b"delivering webhooks" not in line:
                line = await asyncio.wait_for(worker.stderr.readline(), 30)
                assert line, "the worker exited before it started"
        await wait_for(until)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        outputs = [await asyncio.wait_for(w.communicate(), 30) for w in workers]
    assert [w.returncode for w in workers] == [0] * count, outputs
    return outputs


async def test_two_worker_processes_never_send_an_attempt_twice(
    hk: Harness, rx: Receiver, db_url: str
) -> None:
    created = await create_webhook(hk, rx.url + "/hook")
    for i in range(40):
        await hk.create_org(hk.root.org_id, f"Org {i}")

    async def all_delivered() -> bool:
        rows = await deliveries(hk)
        return len(rows) == 40 and all(d.status == "delivered" for d in rows)

    await run_workers(db_url, all_delivered, ORGPLANE_WEBHOOK_CONCURRENCY="4")
    received = rx.at("/hook")
    counts = Counter(r.headers["webhook-id"] for r in received)
    assert len(counts) == 40 and set(counts.values()) == {1}
    for r in received:
        r.verifies_with(created["secret"])
    assert {d.attempts for d in await deliveries(hk)} == {1}


async def test_two_workers_recording_failures_side_by_side_never_deadlock(
    hk: Harness, rx: Receiver, db_url: str
) -> None:
    """Four failing endpoints, their deliveries spread over two worker processes: each records
    batches of attempts that start the same webhooks' failing streaks (rows locked in key
    order). Every delivery is attempted and recorded once, and no transaction failed."""
    for i in range(4):
        rx.answers[f"/fail/{i}"] = (500, {})
        await create_webhook(hk, rx.url + f"/fail/{i}")
    for i in range(15):
        await hk.create_org(hk.root.org_id, f"Org {i}")

    async def all_recorded() -> bool:
        rows = await deliveries(hk)
        return len(rows) >= 4 * 15 and all(d.attempts == 1 and d.leased_until is None for d in rows)

    outputs = await run_workers(
        db_url,
        all_recorded,
        ORGPLANE_WEBHOOK_CONCURRENCY="8",
        ORGPLANE_WEBHOOK_RETRY_SCHEDULE="3600",
    )
    for _, err in outputs:
        assert b"deadlock" not in err and b"Traceback" not in err, err
    rows = await deliveries(hk)
    assert {(d.status, d.attempts) for d in rows} == {("pending", 1)}
    async with hk.services.db.read() as conn:
        attempts = (await conn.execute(sa.select(webhook_attempts))).all()
        hooks = (await conn.execute(sa.select(webhooks))).all()
    assert len(attempts) == len(rows) and {a.status_code for a in attempts} == {500}
    assert all(h.failing_since is not None and h.enabled for h in hooks)
    assert sum(len(rx.at(f"/fail/{i}")) for i in range(4)) == len(rows)


async def test_a_worker_killed_mid_delivery_loses_nothing(
    hk: Harness, rx: Receiver, db_url: str
) -> None:
    created = await create_webhook(hk, rx.url + "/slow")
    rx.delays["/slow"] = 3.0
    await hk.create_org(hk.root.org_id, "Child")
    worker = await start_worker(db_url, ORGPLANE_WEBHOOK_LEASE_SECONDS="1.5")

    async def received_once() -> bool:
        return len(rx.at("/slow")) == 1

    try:
        await wait_for(received_once, within=30)
    finally:
        worker.kill()  # SIGKILL: no chance to record anything
        await worker.wait()
    rx.delays.clear()
    (delivery,) = await deliveries(hk)
    assert delivery.status == "pending" and delivery.attempts == 1
    # Another worker claims it once the lease has run out, and delivers it.
    survivor = Worker(hk.services.db, hk.services.settings)

    async def delivered() -> bool:
        await survivor.run_once()
        (row,) = await deliveries(hk)
        return bool(row.status == "delivered")

    await wait_for(delivered, within=30)
    first, second = rx.at("/slow")
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    second.verifies_with(created["secret"])
    (row,) = await deliveries(hk)
    assert row.attempts == 2
    log = await hk.client.get(
        f"/orgs/{hk.root.org_id}/webhooks/{created['id']}/deliveries", headers=hk.auth()
    )
    assert [(a["attempt"], a["status_code"]) for a in log.json()["data"]] == [(2, 200)]
    async with hk.services.db.read() as conn:
        hook = (await conn.execute(sa.select(webhooks))).one()
    assert hook.enabled and hook.failing_since is None


async def test_serve_delivers_in_process_and_stops_with_a_delivery_in_flight(
    hk: Harness, rx: Receiver, db_url: str
) -> None:
    """`orgplane serve`'s own worker (the app's lifespan task) delivers an event made through
    its API; SIGTERM while a delivery is in flight lets it finish and be recorded, and the
    server exits cleanly."""
    created = await create_webhook(hk, rx.url + "/hook")
    server, base = await start_serve(
        db_url,
        ORGPLANE_WEBHOOK_ALLOWED_NETWORKS=LOCAL,
        ORGPLANE_WEBHOOK_POLL_SECONDS="0.05",
    )
    try:
        async with httpx.AsyncClient(base_url=base, headers=hk.auth()) as client:
            made = await client.post(f"/orgs/{hk.root.org_id}/children", json={"name": "First"})
            assert made.status_code == 201, made.text

            async def first_delivered() -> bool:
                rows = await deliveries(hk)
                return len(rows) == 1 and rows[0].status == "delivered"

            await wait_for(first_delivered, within=30)
            (received,) = rx.at("/hook")
            assert received.verifies_with(created["secret"])["data"]["org_id"] == made.json()["id"]
            # The next one is held by the receiver while the server is told to stop.
            rx.delays["/hook"] = 2.0
            second = await client.post(f"/orgs/{hk.root.org_id}/children", json={"name": "2nd"})
            assert second.status_code == 201, second.text

        async def in_flight() -> bool:
            return len(rx.at("/hook")) == 2

        await wait_for(in_flight, within=30)
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(server.communicate(), 60)
    assert server.returncode == 0, (out, err)
    assert b"Traceback" not in err, err
    rows = await deliveries(hk)
    assert [r.status for r in rows] == ["delivered", "delivered"]  # the second was recorded
    log = await hk.client.get(
        f"/orgs/{hk.root.org_id}/webhooks/{created['id']}/deliveries", headers=hk.auth()
    )
    assert [a["status_code"] for a in log.json()["data"]] == [200, 200]
    assert len(rx.at("/hook")) == 2  # and nothing was sent twice


async def test_a_tenant_without_live_webhooks_is_skipped_to_its_head(hk: Harness, rx: Any) -> None:
    """With every webhook of a tenant deleted, a pass moves the fan-out's position to the head
    without reading the entries in between; a webhook created afterwards still gets the next
    event, and only that one."""
    from orgplane.core.events import positions
    from orgplane.core.webhooks.service import CONSUMER

    first = await create_webhook(hk, rx.url)
    deleted = await hk.client.delete(
        f"/orgs/{hk.root.org_id}/webhooks/{first['id']}", headers=hk.auth()
    )
    assert deleted.status_code == 204, deleted.text
    for n in range(3):
        await hk.create_org(hk.root.org_id, f"Unwatched {n}")
    async with hk.services.db.read() as conn:
        (root_id,) = (await conn.execute(sa.select(audit_log.c.root_id).limit(1))).one()
        head = await positions.chain_head(conn, root_id)
    assert await dispatch.dispatch(hk.services.db) == 0  # no entry read
    async with hk.services.db.read() as conn:
        position = await positions.position(conn, CONSUMER, root_id)
    assert position == head
    assert await deliveries(hk) == []

    await create_webhook(hk, rx.url)
    await hk.create_org(hk.root.org_id, "Watched")
    assert await dispatch.dispatch(hk.services.db) > 0
    (queued,) = await deliveries(hk)
    async with hk.services.db.read() as conn:
        statement = sa.select(audit_log).where(audit_log.c.seq == queued.seq)
        entry = (await conn.execute(statement)).one()
    assert (entry.action, entry.after["name"]) == ("org.created", "Watched")


async def test_a_commit_in_the_process_wakes_its_worker_before_the_poll(
    hk: Harness, rx: Receiver
) -> None:
    """A worker polling once an hour still delivers an event committed by its own process
    (through the app in this process) at once: the commit wakes it. A transaction that appends
    no audit entry does not."""
    created = await create_webhook(hk, rx.url + "/hook")
    settings = hk.services.settings.model_copy(update={"webhook_poll_seconds": 3600.0})
    worker = Worker(hk.services.db, settings)
    woken: list[int] = []
    hk.services.db.events_committed.append(lambda: woken.append(1))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await hk.services.db.transaction(lambda tx: asyncio.sleep(0))
        assert woken == []  # nothing appended to the audit log: no wake-up
        made = await hk.create_org(hk.root.org_id, "Woken")
        assert woken  # the org and its audit entry committed

        async def delivered() -> bool:
            rows = await deliveries(hk)
            return len(rows) == 1 and rows[0].status == "delivered"

        await wait_for(delivered, within=30)  # far less than the hour of the poll
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
    (received,) = rx.at("/hook")
    assert received.verifies_with(created["secret"])["data"]["org_id"] == made["id"]
    assert worker._woken.set not in hk.services.db.events_committed
