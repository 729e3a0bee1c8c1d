"""The webhooks' worker loop: fan-out and delivery, in `orgplane serve` (one per process) or in
`orgplane worker` processes (any number on PostgreSQL: claims and positions are safe to share)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from orgplane.config import Settings
from orgplane.core.webhooks import delivery, dispatch, repository
from orgplane.core.webhooks.delivery import Ready, Sent
from orgplane.core.webhooks.sender import Sender
from orgplane.db.engine import Database
from orgplane.models.base import utcnow

log = logging.getLogger("orgplane.webhooks")

# A pass woken by a commit starts at least this long after the previous pass started: under a
# stream of writes the worker passes at most 20 times a second, not once per commit.
WAKE_INTERVAL = 0.05
# How long a finished attempt waits for others to be recorded with it, at most.
LINGER = 0.02


class Recorder:
    """Records sent deliveries in batches (a group commit): the first attempt to finish waits
    ``linger`` seconds for others (less once ``batch`` are waiting), and what finishes while a
    transaction is written goes into the next. The requests are already answered; only the
    attempts' records wait."""

    def __init__(
        self, db: Database, policy: delivery.Policy, *, batch: int, linger: float = LINGER
    ) -> None:
        self.db = db
        self.policy = policy
        self.batch = batch
        self.linger = linger
        self._enough = asyncio.Event()
        self._waiting: list[tuple[Sent, asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def record(self, sent: Sent) -> None:
        """Returns once the attempt is recorded (or its transaction failed: logged, and the
        lease runs out, so the delivery is sent again)."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((sent, done))
        if len(self._waiting) >= self.batch:
            self._enough.set()
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        while self._waiting:
            if len(self._waiting) < self.batch:
                self._enough.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._enough.wait(), self.linger)
            batch, self._waiting = self._waiting, []
            try:
                await self.db.transaction(delivery.record, [sent for sent, _ in batch], self.policy)
            except Exception:
                log.exception(
                    "recording %d webhook attempts failed; their leases will run out and they "
                    "are sent again",
                    len(batch),
                )
            for _, done in batch:
                if not done.done():
                    done.set_result(None)


class Worker:
    """Dispatches new events and sends due deliveries, up to ``webhook_concurrency`` at once."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.policy = delivery.Policy.of(settings)
        self.sender = Sender.of(settings)
        self.recorder = Recorder(db, self.policy, batch=self._batch)
        self._in_flight: set[asyncio.Task[Any]] = set()
        # Deliveries claimed and not yet recorded; the loop claims more when a batch's worth of
        # slots is free.
        self._claimed = 0
        self._room = asyncio.Event()
        # Set when this process commits an event: the loop passes at once instead of sleeping
        # out its poll (events committed by other processes wait for the poll).
        self._woken = asyncio.Event()

    @property
    def _batch(self) -> int:
        """Claims and records come in batches of at least this many (a quarter of the slots),
        so that the next batch is claimed and read while three quarters are still on their
        way."""
        return max(1, self.settings.webhook_concurrency // 4)

    @property
    def _free(self) -> int:
        return self.settings.webhook_concurrency - self._claimed

    async def run_once(self) -> int:
        """One pass: fan out what is new, then send what is due and wait for it. How much was
        done (entries read + deliveries sent): 0 when idle."""
        done = await dispatch.dispatch(self.db)
        done += await delivery.deliver_due(
            self.db, self.sender, self.policy, self.settings.webhook_concurrency
        )
        return done

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: fan out, claim due deliveries for the free slots, send them in
        the background. When there is nothing to do (or no room for a batch), sleep
        ``webhook_poll_seconds``, until a batch's worth of slots is free, or until this process
        commits an event (``WAKE_INTERVAL`` at least after the last pass). In-flight deliveries
        finish before it returns."""
        poll = self.settings.webhook_poll_seconds
        stopped = asyncio.ensure_future(stop.wait())
        woken = asyncio.ensure_future(self._woken.wait())
        room = asyncio.ensure_future(self._room.wait())
        self.db.events_committed.append(self._woken.set)
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                # Cleared before the pass: an event committed during it sets it again.
                self._woken.clear()
                self._room.clear()
                started = loop.time()
                busy = False
                try:
                    busy = await dispatch.dispatch(self.db, drain=False) > 0
                    if self._free >= self._batch:
                        busy = await self._start_due(self._free) or busy
                except Exception:
                    log.exception("webhook worker pass failed; will retry")
                if busy:
                    await asyncio.sleep(0)
                    continue
                if woken.done():
                    woken = asyncio.ensure_future(self._woken.wait())
                if room.done():
                    room = asyncio.ensure_future(self._room.wait())
                await asyncio.wait(
                    {stopped, woken, room}, timeout=poll, return_when=asyncio.FIRST_COMPLETED
                )
                if woken.done() and (pause := started + WAKE_INTERVAL - loop.time()) > 0:
                    await asyncio.wait({stopped}, timeout=pause)
        finally:
            self.db.events_committed.remove(self._woken.set)
            for waiting in (stopped, woken, room):
                waiting.cancel()
            deadline = loop.time() + self.settings.webhook_timeout_seconds + 5
            while self._in_flight and (left := deadline - loop.time()) > 0:
                await asyncio.wait(set(self._in_flight), timeout=left)
            await self.sender.close()

    async def _start_due(self, free: int) -> bool:
        async with self.db.read() as conn:
            if not await repository.any_due(conn, utcnow()):
                return False
        claimed = await self.db.transaction(delivery.claim, free, self.policy.lease)
        if claimed:
            self._claimed += len(claimed)
            self._track(self._prepare(claimed))
        return bool(claimed)

    def _track(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _release(self, count: int) -> None:
        self._claimed -= count
        if self._free >= self._batch:
            self._room.set()

    async def _prepare(self, claimed: Sequence[Any]) -> None:
        try:
            ready = await delivery.prepare(self.db, self.policy, claimed)
        except Exception:
            log.exception("reading webhook deliveries failed; their leases will run out")
            self._release(len(claimed))
            return
        for one in ready:
            self._track(self._deliver(one))

    async def _deliver(self, ready: Ready | Sent) -> None:
        try:
            await self.recorder.record(await delivery.send(self.sender, ready))
        except Exception:
            log.exception("webhook delivery failed; its lease will run out and it is retried")
        finally:
            self._release(1)

    async def close(self) -> None:
        await self.sender.close()


async def run_until_stopped(worker: Worker, stop: asyncio.Event) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await worker.run(stop)
