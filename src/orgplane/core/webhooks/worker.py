"""The webhooks' worker loop: fan-out and delivery, in `orgplane serve` (one per process) or in
`orgplane worker` processes (any number on PostgreSQL: claims and positions are safe to share)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from orgplane.config import Settings
from orgplane.core.webhooks import delivery, dispatch, repository
from orgplane.core.webhooks.sender import Sender
from orgplane.db.engine import Database
from orgplane.models.base import utcnow

log = logging.getLogger("orgplane.webhooks")

# A pass woken by a commit starts at least this long after the previous pass started: under a
# stream of writes the worker passes at most 20 times a second, not once per commit.
WAKE_INTERVAL = 0.05


class Worker:
    """Dispatches new events and sends due deliveries, up to ``webhook_concurrency`` at once."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.policy = delivery.Policy.of(settings)
        self.sender = Sender.of(settings)
        self._in_flight: set[asyncio.Task[Any]] = set()
        # Set when this process commits an event: the loop passes at once instead of sleeping
        # out its poll (events committed by other processes wait for the poll).
        self._woken = asyncio.Event()

    async def run_once(self) -> int:
        """One pass: fan out what is new, then send what is due and wait for it. How much was
        done (entries read + deliveries sent): 0 when idle."""
        done = await dispatch.dispatch(self.db)
        done += await delivery.deliver_due(
            self.db, self.sender, self.policy, self.settings.webhook_concurrency
        )
        return done

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: fan out, claim as many due deliveries as there are free
        slots, send them in the background. When idle, sleep ``webhook_poll_seconds``, or
        until this process commits an event (``WAKE_INTERVAL`` at least after the last pass).
        In-flight deliveries finish before it returns."""
        poll = self.settings.webhook_poll_seconds
        stopped = asyncio.ensure_future(stop.wait())
        woken = asyncio.ensure_future(self._woken.wait())
        self.db.events_committed.append(self._woken.set)
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                # Cleared before the pass: an event committed during it sets it again.
                self._woken.clear()
                started = loop.time()
                busy = False
                try:
                    busy = await dispatch.dispatch(self.db) > 0
                    free = self.settings.webhook_concurrency - len(self._in_flight)
                    if free > 0:
                        busy = await self._start_due(free) or busy
                except Exception:
                    log.exception("webhook worker pass failed; will retry")
                if busy:
                    await asyncio.sleep(0)
                    continue
                if woken.done():
                    woken = asyncio.ensure_future(self._woken.wait())
                await asyncio.wait(
                    {stopped, woken, *self._in_flight},
                    timeout=poll,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if woken.done() and (pause := started + WAKE_INTERVAL - loop.time()) > 0:
                    await asyncio.wait({stopped}, timeout=pause)
        finally:
            self.db.events_committed.remove(self._woken.set)
            stopped.cancel()
            woken.cancel()
            if self._in_flight:
                await asyncio.wait(
                    self._in_flight, timeout=self.settings.webhook_timeout_seconds + 5
                )
            await self.sender.close()

    async def _start_due(self, free: int) -> bool:
        async with self.db.read() as conn:
            if not await repository.any_due(conn, utcnow()):
                return False
        claimed = await self.db.transaction(delivery.claim, free, self.policy.lease)
        for one in claimed:
            task = asyncio.create_task(self._deliver(one))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        return bool(claimed)

    async def _deliver(self, claimed: Any) -> Any:
        try:
            return await delivery.deliver_one(self.db, self.sender, self.policy, claimed)
        except Exception:
            log.exception("webhook delivery failed; its lease will run out and it is retried")
            return None

    async def close(self) -> None:
        await self.sender.close()


async def run_until_stopped(worker: Worker, stop: asyncio.Event) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await worker.run(stop)
