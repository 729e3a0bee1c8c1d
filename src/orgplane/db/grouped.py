"""Group commit: write transactions on one hot row, run together and committed once.

Sixty-four allocators on one parent all lock the parent's pool row and the tenant's audit chain
head, so they run one after the other whatever the pool size, and each holds the locks through
its commit's WAL flush (~2 ms on an ordinary disk; more while the disk is busy): a few hundred
transactions a second at most. Here the calls that wait for the same group at the same time
run in one transaction, each in a savepoint of its own, and share one commit: the locks are
taken once and flushed once for all of them.

For each caller it is as if its function ran alone in ``Database.transaction``: what it wrote
is committed if it returned, and rolled back (to its savepoint) if it raised, the error then
raised to that caller alone; its audit entries and after-commit callbacks go with it. A
deadlock or serialization failure, or anything that fails the shared transaction itself (its
commit included), sends the calls concerned back through ``Database.transaction`` one by one,
with its retries; so, as there, a function must do nothing outside the database that cannot be
repeated.

A group lives in one process: calls in other workers form groups of their own and meet these at
the database's locks, as plain transactions do.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

# The attribute ``grouped_by`` sets on a command: how to name its group from its arguments.
GROUP_ATTRIBUTE = "transaction_group"


def grouped_by(key: Callable[..., Hashable | None]) -> Callable[[F], F]:
    """Mark a command whose calls may share a transaction with the calls of the same group that
    wait at the same time: ``Database.transaction(command, *args, **kwargs)`` then runs it in
    its group, ``key(*args, **kwargs)`` (None: on its own). The command decides, so that every
    surface calling it gets the same behaviour."""

    def mark(fn: F) -> F:
        setattr(fn, GROUP_ATTRIBUTE, key)
        return fn

    return mark


def group_of(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
    """The group ``fn`` called with these arguments runs in, or None (``fn`` may be a
    ``functools.partial`` of a command: its arguments count)."""
    if isinstance(fn, functools.partial):
        kwargs = {**fn.keywords, **kwargs}
        fn = fn.func
    key = getattr(fn, GROUP_ATTRIBUTE, None)
    return None if key is None else key(*args, **kwargs)


class _Transaction(Protocol):
    """What a group needs of a write transaction (``db.engine.Tx``)."""

    pending_audit: list[dict[str, Any]]
    after_commit: list[Callable[[], None]]
    grouped: bool
    conn: Any

    @property
    def is_postgres(self) -> bool: ...

    async def run_script(self, sql: str) -> None: ...


class _Database(Protocol):
    """What a group needs of the database (``db.engine.Database``)."""

    async def _run_once(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T: ...

    async def transaction_alone(
        self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T: ...


# The most calls one transaction takes: bounds how long it holds its locks.
GROUP_MAX = 64


@dataclass
class _Call(Generic[T]):
    fn: Callable[..., Awaitable[T]]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: asyncio.Future[T]
    # Set in the shared transaction: ("ok", result), ("error", exc) or ("alone", None).
    outcome: tuple[str, Any] = field(default=("alone", None))


class TransactionGroups:
    def __init__(self, db: _Database, retryable: Callable[[Exception], bool]) -> None:
        self.db = db
        self.retryable = retryable
        self._queues: dict[Hashable, list[_Call[Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(
        self, key: Hashable, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T:
        """``fn(tx, *args, **kwargs)`` in a transaction shared with the calls of group ``key``
        waiting at the same time, and its result once that transaction committed."""
        call: _Call[T] = _Call(fn, args, kwargs, asyncio.get_running_loop().create_future())
        queue = self._queues.get(key)
        if queue is None:
            self._queues[key] = [call]
            # The group's calls run in a task of their own: a caller that goes away cancels its
            # wait, not the transaction the others share.
            task = asyncio.create_task(self._drain(key), name=f"orgplane-group-{key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            queue.append(call)
        return await call.future

    async def _drain(self, key: Hashable) -> None:
        """Run the group's waiting calls, up to GROUP_MAX a transaction, until none is left."""
        try:
            while queue := self._queues[key]:
                batch, self._queues[key] = queue[:GROUP_MAX], queue[GROUP_MAX:]
                await self._run_batch([c for c in batch if not c.future.done()])
        finally:
            # No await from the empty queue's check to here: a call that comes now starts a
            # new task. Calls left behind only if this task itself failed: none is left waiting.
            for call in self._queues.pop(key, []):
                if not call.future.done():
                    call.future.set_exception(RuntimeError("the transaction group stopped"))

    async def _run_batch(self, batch: list[_Call[Any]]) -> None:
        if len(batch) <= 1:
            # Alone, a call runs as ``Database.transaction`` runs it: no savepoint, and its
            # work free to assume the transaction is its own (an allocation then chains its
            # audit entry in place instead of at the commit: three round trips fewer).
            await asyncio.gather(*(self._run_alone(call) for call in batch))
            return
        try:
            await self.db._run_once(self._in_transaction, batch)
        except Exception:
            # Nothing of the transaction was committed: every call on its own.
            for call in batch:
                call.outcome = ("alone", None)
        alone = []
        for call in batch:
            kind, value = call.outcome
            if kind == "alone":
                alone.append(call)
            elif not call.future.done():
                if kind == "ok":
                    call.future.set_result(value)
                else:
                    call.future.set_exception(value)
        if alone:
            await asyncio.gather(*(self._run_alone(call) for call in alone))

    async def _in_transaction(self, tx: _Transaction, batch: list[_Call[Any]]) -> None:
        tx.grouped = True
        savepoint = _Savepoint(tx)
        for call in batch:
            audit_mark, callbacks_mark = len(tx.pending_audit), len(tx.after_commit)
            await savepoint.set()
            try:
                result = await call.fn(tx, *call.args, **call.kwargs)
            except Exception as exc:
                # Raises in turn if the connection itself is lost: the whole batch goes alone.
                await savepoint.roll_back()
                del tx.pending_audit[audit_mark:]
                del tx.after_commit[callbacks_mark:]
                call.outcome = ("alone", None) if self.retryable(exc) else ("error", exc)
            else:
                await savepoint.keep()
                call.outcome = ("ok", result)

    async def _run_alone(self, call: _Call[Any]) -> None:
        try:
            result = await self.db.transaction_alone(call.fn, *call.args, **call.kwargs)
        except Exception as exc:
            if not call.future.done():
                call.future.set_exception(exc)
        else:
            if not call.future.done():
                call.future.set_result(result)


class _Savepoint:
    """A savepoint before each call, released when it returns, rolled back to when it raises.

    On PostgreSQL the statements go to the driver in the simple protocol, which takes several
    at once: releasing one call's savepoint and setting the next one's is one round trip, and a
    savepoint rolled back to is still there for the next call. Each call in a group waits for
    the ones before it, so every round trip saved here is saved for every call behind it.
    """

    NAME = "orgplane_call"

    def __init__(self, tx: _Transaction) -> None:
        self.tx = tx
        self._state = "none"  # none, set, kept (to release), rolled_back (still set)
        self._nested: Any = None

    async def set(self) -> None:
        if not self.tx.is_postgres:
            self._nested = await self.tx.conn.begin_nested()
        elif self._state == "none":
            await self.tx.run_script(f"SAVEPOINT {self.NAME}")
        elif self._state == "kept":
            await self.tx.run_script(f"RELEASE SAVEPOINT {self.NAME}; SAVEPOINT {self.NAME}")
        self._state = "set"

    async def keep(self) -> None:
        if self._nested is not None:
            await self._nested.commit()
        self._state = "kept"  # released with the next call's savepoint, or by the commit

    async def roll_back(self) -> None:
        if self._nested is not None:
            await self._nested.rollback()
        else:
            await self.tx.run_script(f"ROLLBACK TO SAVEPOINT {self.NAME}")
        self._state = "rolled_back"
